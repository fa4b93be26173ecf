import { compress } from 'lz4-napi';
import type { PageBitmap } from '@forecopy/filter';
import {
  MessageType,
  PAGE_KIND,
  PAGE_SIZE,
  RangeTable,
  pageBatch,
  ChannelTimeoutError,
  type Message,
  type MessageChannel,
  type PageHashes,
} from '@forecopy/protocol';
import type { PageReader } from '@forecopy/linux';
import type { PageSpace } from './page-space.js';
import type { PageTrace } from './debug-pages.js';

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

/** A batch as it goes on the wire: its pages, the kind of each (raw, zero, lz4) and the payload parts. */
interface EncodedBatch {
  indices: number[];
  kinds: number[];
  parts: Buffer[];
}

/**
 * Streams pages to the destination in PageBatch frames: gathers each batch with one
 * process_vm_readv, marks zero pages, compresses with lz4 where it pays, paces to `--bandwidth`
 * and never has more than the destination's credit of batches unacknowledged.
 */
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
  /**
   * Incremental verification: the hash of each page as sent (from the buffer that goes on the
   * wire), and the hash function; null with full verification.
   */
  sentHashes: { hashes: PageHashes; h64: (page: Uint8Array) => bigint } | null = null;

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
    const ranges = this.addressRuns(indices);
    // readable[k] = pages of range k that could be read (a vanished mapping reads short).
    const readable = this.reader.readRanges(ranges, this.readBuf);
    const batch = await this.encode(round, indices, ranges, readable, res);
    this.batchCount++;
    if (batch.indices.length === 0) return;
    for (const kd of batch.kinds) if (kd === PAGE_KIND.LZ4) res.lz4Pages++;
    // Always a copy (Buffer.concat copies even a single part): raw parts are views of readBuf,
    // which the next batch overwrites, while the socket may still hold this frame in its queue.
    const payload = Buffer.concat(batch.parts);
    const msg = pageBatch(
      {
        round,
        seq: this.seq++,
        ranges: RangeTable.fromSortedPages(batch.indices),
        kinds: Buffer.from(batch.kinds),
        lengths: batch.parts.map((p) => p.length),
      },
      payload,
    );
    await this.waitForCredit(msg);
    await this.pace(payload.length);
    this.credit--;
    const before = this.channel.bytesOut;
    await this.channel.send(msg);
    res.bytesOnWire += this.channel.bytesOut - before;
    res.pagesSent += batch.indices.length;
    res.batches++;
  }

  /** Address runs of live page indices: consecutive indices of one segment are consecutive addresses. */
  private addressRuns(indices: number[]): Array<{ addr: number; pages: number }> {
    const ranges: Array<{ addr: number; pages: number }> = [];
    for (let i = 0; i < indices.length; ) {
      const seg = this.space.segmentOfIndex(indices[i])!;
      let j = i + 1;
      const segEnd = seg.indexBase + seg.pages;
      while (j < indices.length && indices[j] === indices[j - 1] + 1 && indices[j] < segEnd) j++;
      ranges.push({ addr: this.space.addressOf(indices[i]), pages: j - i });
      i = j;
    }
    return ranges;
  }

  /**
   * The pages read into readBuf as a batch: unreadable pages go to `res.unreadable`, zero pages
   * are sent as a kind alone, the others raw or, where it saves 1/8, lz4 (tried on every batch
   * while it pays, then on every 8th).
   */
  private async encode(
    round: number,
    indices: number[],
    ranges: Array<{ pages: number }>,
    readable: number[],
    res: SendResult,
  ): Promise<EncodedBatch> {
    const out: EncodedBatch = { indices: [], kinds: [], parts: [] };
    const tryLz4 = this.opts.compress && (this.lz4Misses < 4 || this.batchCount % 8 === 0);
    let rawBytes = 0;
    let lz4Bytes = 0;
    const lz4Jobs: Array<Promise<void>> = [];
    let pos = 0;
    for (let k = 0; k < ranges.length; k++) {
      for (let q = 0; q < ranges[k].pages; q++, pos++) {
        const index = indices[pos];
        if (q >= readable[k]) {
          res.unreadable.push(index);
          continue;
        }
        const page = this.readBuf.subarray(pos * PAGE_SIZE, (pos + 1) * PAGE_SIZE);
        out.indices.push(index);
        this.trace?.sent(index, round, page);
        this.sentHashes?.hashes.set(index, this.sentHashes.h64(page));
        if (page.equals(ZERO_PAGE)) {
          out.kinds.push(PAGE_KIND.ZERO);
          res.zeroPages++;
          continue;
        }
        const slot = out.parts.length;
        const kindAt = out.kinds.length;
        out.kinds.push(PAGE_KIND.RAW);
        out.parts.push(page);
        rawBytes += PAGE_SIZE;
        if (!tryLz4) continue;
        lz4Jobs.push(
          compress(page).then((c) => {
            if (c.length > LZ4_WORTH) return;
            out.parts[slot] = c;
            out.kinds[kindAt] = PAGE_KIND.LZ4;
            lz4Bytes += PAGE_SIZE - c.length;
          }),
        );
      }
    }
    if (lz4Jobs.length > 0) {
      await Promise.all(lz4Jobs);
      if (lz4Bytes < rawBytes / 20) this.lz4Misses++;
      else this.lz4Misses = 0;
    }
    return out;
  }

  /** Waits for the destination's credit for one more batch; gives up after `creditTimeoutMs`. */
  private async waitForCredit(msg: Message): Promise<void> {
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
  }

  /**
   * How long the next batch must wait for the pacer, ms: a round that ends as its last batch
   * leaves the socket has not yet paid that batch's time at --bandwidth; the next round does.
   */
  pacingDebtMs(): number {
    return this.opts.bandwidthBps > 0 ? Math.max(0, this.nextSendAt - performance.now()) : 0;
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
