import { uncompressSync } from 'lz4-napi';
import { PAGE_KIND, PAGE_SIZE, type Message, type MessageType } from '@forecopy/protocol';
import { SessionProtocolError } from './errors.js';
import type { PageStore } from './image-store.js';
import { ZERO_PAGE } from './segment-store.js';

export type PageBatchMessage = Extract<Message, { type: MessageType.PageBatch }>;

/**
 * Writes a batch's pages into the image; returns how many pages the batch held. Where the store
 * takes a list of pages (`writePageList`: the image files, one writev a run), raw pages go from
 * the frame as they are and only lz4 pages are decompressed; else each run goes through `scratch`
 * (a whole number of pages). A page outside the layout is E_RANGE, a page that does not decode to
 * exactly one page is E_BAD_PAGE. `onPage` sees each page as it is written (incremental
 * verification hashes it there; a ZERO page is ZERO_PAGE itself).
 */
export function applyBatch(store: PageStore, m: PageBatchMessage, scratch: Buffer, onPage?: (index: number, page: Buffer) => void): number {
  const { ranges, kinds, lengths } = m.header;
  const payload = new PayloadReader(m.payload);
  const list: Buffer[] = [];
  let k = 0; // page position in the batch
  let li = 0; // position in lengths
  const nextPage = (): Buffer => {
    const kind = kinds[k++];
    if (kind === PAGE_KIND.ZERO) return ZERO_PAGE;
    const src = payload.next(lengths[li++]);
    if (kind === PAGE_KIND.RAW) return src;
    if (kind === PAGE_KIND.LZ4) return decompressPage(src);
    throw new SessionProtocolError('E_BAD_PAGE', `unknown page kind ${kind}`);
  };
  for (const [start, count] of ranges.entries()) {
    // A run of indices may cross from one segment into the next (segments lie end to end).
    for (let done = 0; done < count; ) {
      const p = start + done;
      const seg = store.segmentOf(p);
      if (!seg) throw new SessionProtocolError('E_RANGE', `page ${p} is outside the announced layout`);
      const n = Math.min(count - done, seg.indexBase + seg.pages - p, scratch.length / PAGE_SIZE);
      list.length = 0;
      for (let i = 0; i < n; i++) list.push(nextPage());
      if (store.writePageList) store.writePageList(p, list);
      else {
        for (let i = 0; i < n; i++) list[i].copy(scratch, i * PAGE_SIZE);
        store.writePages(p, n, scratch);
      }
      if (onPage) for (let i = 0; i < n; i++) onPage(p + i, list[i]);
      done += n;
    }
  }
  return k;
}

/**
 * A batch's payload, in the pieces the socket delivered, read front to back: bytes that lie in
 * one piece come as a view of it, bytes that span pieces as a copy of their own.
 */
class PayloadReader {
  private part = 0;
  /** Position in parts[part]. */
  private at = 0;

  constructor(private readonly parts: readonly Buffer[]) {}

  /** The next `len` bytes. */
  next(len: number): Buffer {
    const p = this.piece();
    if (this.at + len <= p.length) {
      this.at += len;
      return p.subarray(this.at - len, this.at);
    }
    const out = Buffer.allocUnsafe(len);
    for (let got = 0; got < len; ) {
      const q = this.piece();
      const n = Math.min(len - got, q.length - this.at);
      q.copy(out, got, this.at, this.at + n);
      this.at += n;
      got += n;
    }
    return out;
  }

  /** The piece the next byte is in. */
  private piece(): Buffer {
    while (this.part < this.parts.length && this.at === this.parts[this.part].length) {
      this.part++;
      this.at = 0;
    }
    if (this.part === this.parts.length) throw new SessionProtocolError('E_BAD_PAGE', 'the payload ends before its pages');
    return this.parts[this.part];
  }
}

/** One lz4 page: it must announce, and decompress to, exactly one page. */
function decompressPage(src: Buffer): Buffer {
  // lz4-napi blocks carry their decompressed size first (u32 LE): refuse anything but a
  // page before the decompressor allocates for it.
  if (src.length < 4 || src.readUInt32LE(0) !== PAGE_SIZE) {
    throw new SessionProtocolError('E_BAD_PAGE', 'an lz4 page does not announce a size of one page');
  }
  const out = uncompressSync(src);
  if (out.length !== PAGE_SIZE) throw new SessionProtocolError('E_BAD_PAGE', `an lz4 page decompressed to ${out.length} bytes`);
  return out;
}
