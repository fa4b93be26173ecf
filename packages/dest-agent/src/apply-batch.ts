import { uncompressSync } from 'lz4-napi';
import { PAGE_KIND, PAGE_SIZE, type Message, type MessageType } from '@forecopy/protocol';
import { SessionProtocolError } from './errors.js';
import type { PageStore } from './image-store.js';

export type PageBatchMessage = Extract<Message, { type: MessageType.PageBatch }>;

/**
 * Writes a batch's pages into the image, through `scratch` (a whole number of pages); returns how
 * many pages the batch held. A page outside the layout is E_RANGE, a page that does not decode to
 * exactly one page is E_BAD_PAGE. `onPage` sees each page as it is written (incremental
 * verification hashes it there).
 */
export function applyBatch(store: PageStore, m: PageBatchMessage, scratch: Buffer, onPage?: (index: number, page: Buffer) => void): number {
  const { ranges, kinds, lengths } = m.header;
  const payload = m.payload ?? Buffer.alloc(0);
  let k = 0; // page position in the batch
  let li = 0; // position in lengths
  let off = 0; // position in payload
  for (const [start, count] of ranges.entries()) {
    // A run of indices may cross from one segment into the next (segments lie end to end).
    for (let done = 0; done < count; ) {
      const p = start + done;
      const seg = store.segmentOf(p);
      if (!seg) throw new SessionProtocolError('E_RANGE', `page ${p} is outside the announced layout`);
      const n = Math.min(count - done, seg.indexBase + seg.pages - p, scratch.length / PAGE_SIZE);
      for (let i = 0; i < n; i++, k++) {
        const dst = scratch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        const kind = kinds[k];
        if (kind === PAGE_KIND.ZERO) {
          dst.fill(0);
          continue;
        }
        const len = lengths[li++];
        const src = payload.subarray(off, off + len);
        off += len;
        if (kind === PAGE_KIND.RAW) src.copy(dst);
        else if (kind === PAGE_KIND.LZ4) {
          // lz4-napi blocks carry their decompressed size first (u32 LE): refuse anything but a
          // page before the decompressor allocates for it.
          if (src.length < 4 || src.readUInt32LE(0) !== PAGE_SIZE) {
            throw new SessionProtocolError('E_BAD_PAGE', 'an lz4 page does not announce a size of one page');
          }
          const out = uncompressSync(src);
          if (out.length !== PAGE_SIZE) throw new SessionProtocolError('E_BAD_PAGE', `an lz4 page decompressed to ${out.length} bytes`);
          out.copy(dst);
        } else throw new SessionProtocolError('E_BAD_PAGE', `unknown page kind ${kind}`);
      }
      store.writePages(p, n, scratch);
      if (onPage) for (let i = 0; i < n; i++) onPage(p + i, scratch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      done += n;
    }
  }
  return k;
}
