import { compress } from 'lz4-napi';
import type { PageBitmap } from '@forecopy/filter';
import {
  MessageType,
  PAGE_KIND,
  PAGE_SIZE,
  RangeTable,
  pageBatch,
  ChannelTimeoutError,
  type MessageChannel,
} from '@forecopy/protocol';
import type { PageReader } from '@forecopy/linux';
import type { PageSpace } from './page-space.js';
import type { PageTrace } from './debug-pages.js';

/**
 * Streams pages to the destination in PageBatch frames: gathers each batch with one
 * process_vm_readv, marks zero pages, compresses with lz4 where it pays, paces to `--bandwidth`
 * and never has more than the destination's credit of batches unacknowledged.
 */
export interface SenderOptions {
  /** Pages per batch (at most the protocol's MAX_PAGES_PER_BATCH). */
  batchPages: number;
  /** Bits per second on the wire; 0 = unpaced. */
  bandwidthBps: number;
  compress: boolean;
  /** Give up when the destination grants no credit for this long (0 = wait forever). */
  creditTimeoutMs?: number;
}

export interface SendResult {
  pagesSent: number;
  pagesSkipped: number;
  /** Pages that could not be read (their mapping vanished); the caller treats them as dirty. */
  unreadable: number[];
  bytesOnWire: number;
  zeroPages: number;
  lz4Pages: number;
  batches: number;
}

const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);
/** Compressed output must save at least 1/8 of a page to be worth the destination's decompress. */
const LZ4_WORTH = PAGE_SIZE - PAGE_SIZE / 8;

export class PageSender {
  private seq = 0;
  private credit = 0;
  private creditWaiters: Array<() => void> = [];
  private nextSendAt = 0; // performance.now() ms when the pacer allows the next frame
  private readonly readBuf: Buffer;
  /** Adaptive lz4: after a run of batches where compression saved < 5 %, try only every 8th batch. */
  private lz4Misses = 0;
  private batchCount = 0;
  /** FORECOPY_DEBUG_PAGES: what was sent, page by page. */
  trace: PageTrace | null = null;

  constructor(
    private readonly channel: MessageChannel,
    private readonly reader: PageReader,
    private readonly space: PageSpace,
    private readonly opts: SenderOptions,
  ) {
    this.readBuf = Buffer.allocUnsafe(opts.batchPages * PAGE_SIZE);
    channel.onMessage(MessageType.BatchAck, (m) => {
      if (m.type !== MessageType.BatchAck) return;
      this.credit += m.header.credit;
      for (const w of this.creditWaiters.splice(0)) w();
    });
  }

  /** Credit granted by the destination in HelloAck. */
  grant(credit: number): void {
    this.credit += credit;
  }

  /**
   * Sends `pages` (page indices) for `round`. `skip`, when given, is consulted before each batch:
   * pages it holds are not sent (Xen's to_skip; they were written again during this round).
   */
  async sendPages(round: number, pages: PageBitmap, skip?: () => PageBitmap): Promise<SendResult> {
    const res: SendResult = { pagesSent: 0, pagesSkipped: 0, unreadable: [], bytesOnWire: 0, zeroPages: 0, lz4Pages: 0, batches: 0 };
    const batch: number[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      let list = batch;
      if (skip) {
        const s = skip();
        list = batch.filter((p) => !s.has(p));
        res.pagesSkipped += batch.length - list.length;
      }
      if (list.length > 0) await this.sendBatch(round, list, res);
      batch.length = 0;
    };
    for (const p of pages) {
      // The sampler may retire segments between batches (the process unmapped them): their
      // pages are dead, and whatever is still mapped there was re-added as a new segment.
      if (!this.space.live.has(p)) continue;
      batch.push(p);
      if (batch.length >= this.opts.batchPages) await flush();
    }
    await flush();
    return res;
  }

  private async sendBatch(round: number, all: number[], res: SendResult): Promise<void> {
    const indices = all.filter((p) => this.space.live.has(p)); // see sendPages
    // Address runs: consecutive indices of one segment are consecutive addresses.
    const ranges: Array<{ addr: number; pages: number }> = [];
    for (let i = 0; i < indices.length; ) {
      const seg = this.space.segmentOfIndex(indices[i])!;
      let j = i + 1;
      const segEnd = seg.indexBase + seg.pages;
      while (j < indices.length && indices[j] === indices[j - 1] + 1 && indices[j] < segEnd) j++;
      ranges.push({ addr: seg.start + (indices[i] - seg.indexBase) * PAGE_SIZE, pages: j - i });
      i = j;
    }
    const readable = this.reader.readRanges(ranges, this.readBuf);
    // readable[k] = pages of range k that could be read (a vanished mapping reads short).
    const sendIdx: number[] = [];
    const kinds: number[] = [];
    const parts: Buffer[] = [];
    let off = 0;
    let pos = 0;
    const tryLz4 = this.lz4Misses < 4 || this.batchCount % 8 === 0;
    let rawBytes = 0;
    let lz4Bytes = 0;
    const lz4Jobs: Array<Promise<void>> = [];
    for (let k = 0; k < ranges.length; k++) {
      for (let q = 0; q < ranges[k].pages; q++) {
        const index = indices[pos++];
        if (q >= readable[k]) {
          res.unreadable.push(index);
          off += PAGE_SIZE;
          continue;
        }
        const page = this.readBuf.subarray(off, off + PAGE_SIZE);
        off += PAGE_SIZE;
        sendIdx.push(index);
        this.trace?.sent(index, round, page);
        if (page.equals(ZERO_PAGE)) {
          kinds.push(PAGE_KIND.ZERO);
          res.zeroPages++;
          continue;
        }
        const slot = parts.length;
        kinds.push(PAGE_KIND.RAW);
        parts.push(page);
        rawBytes += PAGE_SIZE;
        if (this.opts.compress && tryLz4) {
          const kindAt = kinds.length - 1;
          lz4Jobs.push(
            compress(page).then((c) => {
              if (c.length <= LZ4_WORTH) {
                parts[slot] = c;
                kinds[kindAt] = PAGE_KIND.LZ4;
                lz4Bytes += PAGE_SIZE - c.length;
              }
            }),
          );
        }
      }
    }
    if (lz4Jobs.length > 0) {
      await Promise.all(lz4Jobs);
      if (lz4Bytes < rawBytes / 20) this.lz4Misses++;
      else this.lz4Misses = 0;
    }
    this.batchCount++;
    if (sendIdx.length === 0) return;
    for (const kd of kinds) if (kd === PAGE_KIND.LZ4) res.lz4Pages++;
    // Always a copy (Buffer.concat copies even a single part): raw parts are views of readBuf,
    // which the next batch overwrites, while the socket may still hold this frame in its queue.
    const payload = Buffer.concat(parts);
    const msg = pageBatch(
      {
        round,
        seq: this.seq++,
        ranges: RangeTable.fromSortedPages(sendIdx),
        kinds: Buffer.from(kinds),
        lengths: parts.map((p) => p.length),
      },
      payload,
    );
    const deadline = performance.now() + (this.opts.creditTimeoutMs || Infinity);
    while (this.credit <= 0) {
      if (this.channel.closed) await this.channel.send(msg); // throws the channel's error
      const left = deadline - performance.now();
      if (left <= 0) {
        this.channel.destroy();
        throw new ChannelTimeoutError(`the destination acknowledged no page batch for ${this.opts.creditTimeoutMs} ms`);
      }
      await new Promise<void>((r) => {
        const t = Number.isFinite(left) ? setTimeout(r, left) : null;
        this.creditWaiters.push(() => {
          if (t) clearTimeout(t);
          r();
        });
      });
    }
    await this.pace(payload.length);
    this.credit--;
    const before = this.channel.bytesOut;
    await this.channel.send(msg);
    res.bytesOnWire += this.channel.bytesOut - before;
    res.pagesSent += sendIdx.length;
    res.batches++;
  }

  /** Token-bucket pacing of the wire bytes to `bandwidthBps`. */
  private async pace(bytes: number): Promise<void> {
    if (this.opts.bandwidthBps <= 0) return;
    const now = performance.now();
    if (this.nextSendAt < now - 50) this.nextSendAt = now - 50; // at most a 50 ms burst of saved credit
    const wait = this.nextSendAt - now;
    this.nextSendAt += ((bytes + 64) * 8 * 1000) / this.opts.bandwidthBps;
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  }

  /** Wakes waiters so they observe a closed channel. */
  abort(): void {
    for (const w of this.creditWaiters.splice(0)) w();
  }
}
