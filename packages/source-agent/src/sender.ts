import { compress, compressSync } from 'lz4-napi';
import { PageBitmap } from '@forecopy/filter';
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
  /** Pages of pagesSent that an earlier round of the migration had sent too (written again since, or sent again). */
  pagesResent: number;
  pagesSkipped: number;
  /** Pages that could not be read (their mapping vanished); the caller treats them as dirty. */
  unreadable: number[];
  bytesOnWire: number;
  zeroPages: number;
  /** Pages sent lz4-compressed. */
  lz4Pages: number;
  /** Pages lz4 ran on (the work spent: the samples of batches left raw included). */
  pagesCompressed: number;
  /** Payload bytes lz4 saved: a page's size less its compressed size, over the pages sent lz4. */
  compressionSavedBytes: number;
  batches: number;
}

/** Compressed output must save at least 1/8 of a page to be worth the destination's decompress. */
const LZ4_WORTH = PAGE_SIZE - PAGE_SIZE / 8;
/** Pages of a batch compressed first, to estimate whether the rest is worth compressing. */
const LZ4_SAMPLE = 8;
/** A batch is compressed when its sample saved at least this share of the sampled bytes. */
const LZ4_MIN_SAVING = 1 / 20;

/**
 * Read buffers: one a batch from the read to the socket's write. Enough for the batches in the
 * socket's queue and one being read; a sender that runs out waits for the socket. 16 of them,
 * but no more than 16 MiB together: 16 batches of 256 pages, 4 of 1024.
 */
const READ_BUFFERS = 16;
const READ_POOL_BYTES = 16 << 20;
const MIN_READ_BUFFERS = 4;
const EMPTY = Buffer.alloc(0);

/** Buffers of one size, lent and given back; `take` waits while all are lent. */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private readonly waiting: Array<(b: Buffer) => void> = [];
  private made = 0;

  constructor(
    private readonly max: number,
    private readonly size: number,
  ) {}

  async take(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return b;
    if (this.made < this.max) {
      this.made++;
      return Buffer.allocUnsafeSlow(this.size);
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  give(b: Buffer): void {
    const w = this.waiting.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}

/** A batch as it goes on the wire: its pages, the kind of each (raw, zero, lz4) and the payload parts. */
interface EncodedBatch {
  indices: number[];
  kinds: number[];
  parts: Buffer[];
  /** The raw pages: their position in `parts` and in `kinds`, pairwise. */
  raw: number[];
}

/**
 * Whether a page is all zero bytes, reading it once and no other buffer: its first 8 bytes are
 * zero and it equals itself shifted by 8 bytes (one memcmp, which stops at the first difference).
 */
export function isZeroPage(page: Buffer): boolean {
  return page.readBigUInt64LE(0) === 0n && page.compare(page, 0, page.length - 8, 8) === 0;
}

/** `k` positions among `n`, one drawn at random from each of k equal strata (all of them when n <= k). */
function sampleOf(n: number, k: number): number[] {
  if (n <= k) return Array.from({ length: n }, (_, i) => i);
  return Array.from({ length: k }, (_, i) => Math.floor(((i + Math.random()) * n) / k));
}

/**
 * A connection batches go out on (`--streams`: the session's own is lane 0), the batches the
 * destination lets it have unacknowledged, and the write it is busy with: a lane whose socket
 * holds more than its buffer takes no batch until the socket took it.
 */
interface Lane {
  channel: MessageChannel;
  credit: number;
  busy: Promise<void> | null;
  error: Error | null;
}

/**
 * Streams pages to the destination in PageBatch frames: gathers each batch with one
 * process_vm_readv, marks zero pages, compresses with lz4 where it pays (a batch whose sample of
 * LZ4_SAMPLE pages does not compress is sent raw), paces to `--bandwidth` and never has more than
 * the destination's credit of batches unacknowledged on a connection. With several connections
 * (`--streams`) each batch goes to the next one free, in turn; the batch seq rises over all.
 */
export class PageSender {
  private seq = 0;
  private readonly lanes: Lane[] = [];
  /** The lane tried first for the next batch (round robin). */
  private nextLane = 0;
  private creditWaiters: Array<() => void> = [];
  private nextSendAt = 0; // performance.now() ms when the pacer allows the next frame
  /** The buffers pages are read into and sent from, each back once the socket has written it. */
  private readonly buffers: BufferPool;
  /** Over the whole migration: pages lz4 ran on, and the payload bytes it saved (for the report). */
  readonly compression = { pagesCompressed: 0, compressionSavedBytes: 0 };
  /** Every page sent so far, by index (a mapping made later has indices of its own): SendResult.pagesResent. */
  private everSent = new PageBitmap(0);
  /** FORECOPY_DEBUG_PAGES: what was sent, page by page. */
  trace: PageTrace | null = null;
  /**
   * Incremental verification: the hash of each page as sent (from the buffer that goes on the
   * wire), and the hash function; null with full verification.
   */
  sentHashes: { hashes: PageHashes; h64: (page: Uint8Array) => bigint } | null = null;

  constructor(
    channel: MessageChannel,
    private readonly reader: PageReader,
    private readonly space: PageSpace,
    private readonly opts: SenderOptions,
  ) {
    const bytes = opts.batchPages * PAGE_SIZE;
    this.buffers = new BufferPool(Math.min(READ_BUFFERS, Math.max(MIN_READ_BUFFERS, Math.floor(READ_POOL_BYTES / bytes))), bytes);
    this.addStream(channel, 0);
  }

  /** Credit granted by the destination in HelloAck. */
  grant(credit: number): void {
    this.lanes[0].credit += credit;
  }

  /** Another connection to send batches on, with the credit its HelloAck granted. */
  addStream(channel: MessageChannel, credit: number): void {
    const lane: Lane = { channel, credit, busy: null, error: null };
    this.lanes.push(lane);
    channel.onMessage(MessageType.BatchAck, (m) => {
      if (m.type !== MessageType.BatchAck) return;
      lane.credit += m.header.credit;
      this.wake();
    });
  }

  /** Connections batches go out on, the session's own included. */
  get streams(): number {
    return this.lanes.length;
  }

  /** Ends the extra connections (after the handover; the session's own is the caller's). */
  closeStreams(): void {
    for (const l of this.lanes.slice(1)) l.channel.close();
  }

  private wake(): void {
    for (const w of this.creditWaiters.splice(0)) w();
  }

  /**
   * Sends `pages` (page indices) for `round`. `skip`, when given, is consulted before each batch:
   * pages it holds are not sent (Xen's to_skip; they were written again during this round).
   */
  async sendPages(round: number, pages: PageBitmap, skip?: () => PageBitmap): Promise<SendResult> {
    const res: SendResult = {
      pagesSent: 0,
      pagesResent: 0,
      pagesSkipped: 0,
      unreadable: [],
      bytesOnWire: 0,
      zeroPages: 0,
      lz4Pages: 0,
      pagesCompressed: 0,
      compressionSavedBytes: 0,
      batches: 0,
    };
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
    // Every batch of the round handed to a socket, or the first failure.
    await Promise.all(this.lanes.map((l) => l.busy));
    this.throwLaneError();
    return res;
  }

  private throwLaneError(): void {
    for (const l of this.lanes) if (l.error) throw l.error;
  }

  private async sendBatch(round: number, all: number[], res: SendResult): Promise<void> {
    const indices = all.filter((p) => this.space.live.has(p)); // see sendPages
    const ranges = this.addressRuns(indices);
    // Zero copy: the pages are read into a buffer of the pool and its raw pages go to the socket
    // as views of it; the buffer goes back to the pool only once the socket has written the frame
    // (it may hold it in its queue: a buffer reused before then would send the next batch's pages).
    const buf = await this.buffers.take();
    let lent = false;
    try {
      // readable[k] = pages of range k that could be read (a vanished mapping reads short).
      const readable = this.reader.readRanges(ranges, buf);
      const batch = this.encode(round, indices, ranges, readable, res, buf);
      if (batch.indices.length === 0) return;
      if (this.opts.compress && batch.raw.length > 0) await this.compressBatch(batch, res);
      lent = true;
      await this.sendEncoded(round, batch, res, () => this.buffers.give(buf));
    } finally {
      if (!lent) this.buffers.give(buf);
    }
  }

  /**
   * Sends an encoded batch as a PageBatch on the next free connection, its parts gathered;
   * `flushed` once the socket wrote them. Returns once the socket took the frame, or, when its
   * buffer is over full, at once: the lane stays busy until the socket has taken it.
   */
  private async sendEncoded(round: number, batch: EncodedBatch, res: SendResult, flushed: () => void): Promise<void> {
    let pending = true;
    const once = () => {
      if (pending) flushed();
      pending = false;
    };
    const payloadBytes = batch.parts.reduce((n, p) => n + p.length, 0);
    const msg = pageBatch(
      {
        round,
        seq: this.seq++,
        ranges: RangeTable.fromSortedPages(batch.indices),
        kinds: Buffer.from(batch.kinds),
        lengths: batch.parts.map((p) => p.length),
      },
      EMPTY,
    );
    let lane: Lane;
    try {
      lane = await this.laneFor(msg);
      await this.pace(payloadBytes);
    } catch (e) {
      once(); // never handed to a socket
      throw e;
    }
    lane.credit--;
    const { channel } = lane;
    const before = channel.bytesOut;
    const sending = channel.send(msg, { parts: batch.parts, flushed: once });
    // The frame is in the socket's hands (bytesOut counted it) unless the channel had failed.
    const handed = channel.bytesOut - before;
    if (handed === 0) once();
    lane.busy = sending.then(
      () => {
        lane.busy = null;
        this.wake();
      },
      (e: Error) => {
        lane.error ??= e;
        lane.busy = null;
        this.wake();
      },
    );
    res.bytesOnWire += handed;
    res.pagesSent += batch.indices.length;
    res.pagesResent += this.noteSent(batch.indices);
    res.batches++;
  }

  /** Records the pages of a batch (ascending indices) as sent; returns how many had been sent before. */
  private noteSent(indices: number[]): number {
    const top = indices[indices.length - 1];
    if (top >= this.everSent.size) this.everSent = this.everSent.resized(Math.max(top + 1, this.space.totalPages));
    return this.everSent.setEach(indices);
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
   * are sent as a kind alone (each page is looked at once, by isZeroPage), the others raw, for
   * now: `compressBatch` may make them lz4.
   */
  private encode(
    round: number,
    indices: number[],
    ranges: Array<{ pages: number }>,
    readable: number[],
    res: SendResult,
    buf: Buffer,
  ): EncodedBatch {
    const out: EncodedBatch = { indices: [], kinds: [], parts: [], raw: [] };
    let pos = 0;
    for (let k = 0; k < ranges.length; k++) {
      for (let q = 0; q < ranges[k].pages; q++, pos++) {
        const index = indices[pos];
        if (q >= readable[k]) {
          res.unreadable.push(index);
          continue;
        }
        const page = buf.subarray(pos * PAGE_SIZE, (pos + 1) * PAGE_SIZE);
        out.indices.push(index);
        this.trace?.sent(index, round, page);
        this.sentHashes?.hashes.set(index, this.sentHashes.h64(page));
        if (isZeroPage(page)) {
          out.kinds.push(PAGE_KIND.ZERO);
          res.zeroPages++;
          continue;
        }
        out.raw.push(out.parts.length, out.kinds.length);
        out.kinds.push(PAGE_KIND.RAW);
        out.parts.push(page);
      }
    }
    return out;
  }

  /**
   * lz4 where it pays, decided per batch: a sample of its raw pages is compressed first (at once,
   * on this thread); when the sample saved less than LZ4_MIN_SAVING of its bytes, the batch goes
   * raw and no more work is spent on it. Otherwise the other pages are compressed too (on libuv's
   * threads), the sample's output reused, and a page goes lz4 where that saves 1/8 of it.
   */
  private async compressBatch(batch: EncodedBatch, res: SendResult): Promise<void> {
    const rawCount = batch.raw.length / 2;
    const sample = sampleOf(rawCount, LZ4_SAMPLE);
    const done = new Map<number, Buffer>();
    let saved = 0;
    for (const r of sample) {
      const c = compressSync(batch.parts[batch.raw[2 * r]]);
      done.set(r, c);
      if (c.length <= LZ4_WORTH) saved += PAGE_SIZE - c.length;
    }
    let tried = sample.length;
    if (saved >= sample.length * PAGE_SIZE * LZ4_MIN_SAVING) {
      const jobs: Array<Promise<void>> = [];
      for (let r = 0; r < rawCount; r++) {
        const [slot, kindAt] = [batch.raw[2 * r], batch.raw[2 * r + 1]];
        const take = (c: Buffer) => {
          if (c.length > LZ4_WORTH) return;
          batch.parts[slot] = c;
          batch.kinds[kindAt] = PAGE_KIND.LZ4;
          res.lz4Pages++;
          res.compressionSavedBytes += PAGE_SIZE - c.length;
          this.compression.compressionSavedBytes += PAGE_SIZE - c.length;
        };
        const c = done.get(r);
        if (c) take(c);
        else {
          tried++;
          jobs.push(compress(batch.parts[slot]).then(take));
        }
      }
      await Promise.all(jobs);
    }
    res.pagesCompressed += tried;
    this.compression.pagesCompressed += tried;
  }

  /**
   * The next connection free for a batch: not busy writing, and with the destination's credit;
   * in turn from the one after the last used. Throws a connection's failure; gives up after
   * `creditTimeoutMs` without one.
   */
  private async laneFor(msg: Message): Promise<Lane> {
    const deadline = performance.now() + (this.opts.creditTimeoutMs || Infinity);
    for (;;) {
      this.throwLaneError();
      const n = this.lanes.length;
      for (let k = 0; k < n; k++) {
        const i = (this.nextLane + k) % n;
        const l = this.lanes[i];
        if (l.credit > 0 && !l.busy) {
          this.nextLane = (i + 1) % n;
          return l;
        }
      }
      for (const l of this.lanes) if (l.channel.closed) await l.channel.send(msg); // throws the channel's error
      const left = deadline - performance.now();
      if (left <= 0) {
        for (const l of this.lanes) l.channel.destroy();
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

  /** Wakes waiters so they observe a closed channel, and drops the extra connections. */
  abort(): void {
    for (const l of this.lanes.slice(1)) l.channel.destroy();
    this.wake();
  }
}
