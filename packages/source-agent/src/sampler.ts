import { PageBitmap } from '@forecopy/filter';
import { isMigratable, readMaps, type DirtyTracker } from '@forecopy/linux';
import type { PageSpace, Segment } from './page-space.js';
import type { PageTrace } from './debug-pages.js';

export interface Sample {
  /** Pages written in the sample's interval (new mappings count as fully written). */
  pages: PageBitmap;
  /** Milliseconds since the sampler started. */
  atMs: number;
  /** How long the scans of the interval took. */
  scanMs: number;
  /** Milliseconds covered by this sample (since the previous sample: one interval). */
  spanMs: number;
  /** True when the page space changed in the interval. */
  layoutChanged: boolean;
}

export type SampleListener = (s: Sample) => void;

/**
 * The dirty tracker's one owner. Every scan (every `intervalMs`, and on demand) re-reads the
 * process's mappings, brings the page space in line, collects the written pages from the
 * tracker (which re-protects them atomically) and turns them into a sample bitmap over the page
 * space. The scans feed the round's dirty set (`take`, `peek`).
 *
 * The listeners (the policy's model and fit test, a recorder, the dashboard) get whole samples
 * only: one per interval of the timer, holding everything written since the previous one. The
 * scans made on demand in between (`take` at the end of a round, `peek` before a batch) are
 * partial: their pages are kept and go out with the next whole sample, never on their own. So
 * the samples a policy sees are the samples its model was built from (the paper's states are
 * 50 ms samples), however often a migration scans. Without a timer (stopped, or never started)
 * a scan emits once an interval has passed since the last sample.
 */
export class Sampler {
  private timer: NodeJS.Timeout | null = null;
  private accumulated: PageBitmap;
  private listeners: SampleListener[] = [];
  private unregistrable: Segment[] = [];
  private readonly t0 = performance.now();
  private lastScanAt = 0;
  private nextDue = 0;
  private failed: Error | null = null;
  /** Writes since the last whole sample, and what the scans of its interval found. */
  private pending: PageBitmap;
  private pendingScanMs = 0;
  private pendingLayout = false;
  private lastEmitAt = 0;
  private waiters: Array<{ after: number; resolve: () => void }> = [];
  readonly scans = { count: 0, totalMs: 0, maxMs: 0 };
  /** FORECOPY_DEBUG_PAGES: which scan last reported each page. */
  trace: PageTrace | null = null;

  constructor(
    private readonly pid: number,
    private readonly tracker: DirtyTracker,
    private readonly space: PageSpace,
    readonly intervalMs: number,
  ) {
    this.accumulated = new PageBitmap(space.totalPages);
    this.pending = new PageBitmap(space.totalPages);
  }

  /** The error that stopped the periodic scans, if one did. */
  get error(): Error | null {
    return this.failed;
  }

  /** Milliseconds since the sampler was made. */
  now(): number {
    return performance.now() - this.t0;
  }

  onSample(fn: SampleListener): () => void {
    this.listeners.push(fn);
    return () => {
      this.listeners = this.listeners.filter((l) => l !== fn);
    };
  }

  /** Starts periodic scans. A scan error stops the timer and is thrown by the next `scan()`/`take()`. */
  start(): void {
    if (this.timer) return;
    this.nextDue = this.now() + this.intervalMs;
    // The first sample covers the first interval, not what on-demand scans found before.
    this.pending = new PageBitmap(this.space.totalPages);
    this.pendingScanMs = 0;
    this.pendingLayout = false;
    this.lastEmitAt = this.now();
    const tick = () => {
      try {
        this.scanAndEmit(true);
      } catch (e) {
        this.failed = e as Error;
        this.timer = null;
        this.wake(true);
        return;
      }
      // Drift-corrected: the next scan is due one interval after the previous due time.
      this.nextDue += this.intervalMs;
      const now = this.now();
      if (this.nextDue < now) this.nextDue = now + this.intervalMs;
      this.timer = setTimeout(tick, this.nextDue - now);
    };
    this.timer = setTimeout(tick, this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.wake(true);
  }

  /**
   * Resolves once a whole sample stamped at or after `perfMs` (a performance.now() time) has gone
   * to the listeners, or at once when none will come (the sampler is stopped or failed). A round
   * of a policy that watches the samples lasts at least this long: it plans the next round from
   * a fresh sample.
   */
  wholeSampleSince(perfMs: number): Promise<void> {
    const after = perfMs - this.t0;
    if (this.lastEmitAt >= after || !this.timer) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ after, resolve }));
  }

  private wake(all: boolean): void {
    const due = all ? this.waiters : this.waiters.filter((w) => this.lastEmitAt >= w.after);
    if (due.length === 0) return;
    this.waiters = all ? [] : this.waiters.filter((w) => this.lastEmitAt < w.after);
    for (const w of due) w.resolve();
  }

  /**
   * Scans now; returns what this scan found (added to the accumulated set). It goes to the
   * listeners only as part of a whole sample (see the class comment).
   */
  scan(): Sample {
    return this.scanAndEmit(false);
  }

  private scanAndEmit(tick: boolean): Sample {
    if (this.failed) throw this.failed;
    const t = performance.now();
    const mappings = readMaps(this.pid).filter(isMigratable);
    const { added, retired } = this.space.reconcile(mappings);
    const result = this.tracker.collect(mappings);
    const size = this.space.totalPages;
    const pages = new PageBitmap(size);
    this.space.markRanges(result.written, pages);
    this.space.markSegments(added, pages);
    // What the tracker registered afresh may hold writes it never saw: all of it is dirty.
    this.space.markRanges(result.added, pages);
    if (result.unregistrable.length > 0 || retired.length > 0 || added.length > 0) {
      this.unregistrable = this.segmentsOf(result.unregistrable);
    }
    // Mappings that refused registration cannot be tracked: they are always dirty.
    this.space.markSegments(this.unregistrable, pages);
    if (this.accumulated.size !== size) this.accumulated = this.accumulated.resized(size);
    this.accumulated.or(pages);
    if (this.trace) for (const p of pages) this.trace.dirty(p, this.scans.count + 1);
    const scanMs = performance.now() - t;
    this.scans.count++;
    this.scans.totalMs += scanMs;
    this.scans.maxMs = Math.max(this.scans.maxMs, scanMs);
    const at = this.now();
    const sample: Sample = {
      pages,
      atMs: at,
      scanMs,
      spanMs: at - this.lastScanAt,
      layoutChanged: added.length > 0 || retired.length > 0,
    };
    this.lastScanAt = at;
    this.addPending(sample);
    if (tick || (!this.timer && at - this.lastEmitAt >= this.intervalMs)) this.emit(at);
    return sample;
  }

  private addPending(s: Sample): void {
    if (this.pending.size !== s.pages.size) this.pending = this.pending.resized(s.pages.size);
    this.pending.or(s.pages);
    this.pendingScanMs += s.scanMs;
    this.pendingLayout ||= s.layoutChanged;
  }

  /** The whole sample of the interval ending now, to the listeners. */
  private emit(at: number): void {
    const sample: Sample = {
      pages: this.pending,
      atMs: at,
      scanMs: this.pendingScanMs,
      spanMs: at - this.lastEmitAt,
      layoutChanged: this.pendingLayout,
    };
    this.pending = new PageBitmap(this.space.totalPages);
    this.pendingScanMs = 0;
    this.pendingLayout = false;
    this.lastEmitAt = at;
    for (const l of this.listeners) l(sample);
    this.wake(false);
  }

  /** Pages written since the previous `take()` (a scan is made first), and resets the set. */
  take(): PageBitmap {
    this.scan();
    const out = this.accumulated;
    this.accumulated = new PageBitmap(this.space.totalPages);
    return out;
  }

  /** Pages written so far since the previous `take()`, scanning first if the last scan is older than `maxAgeMs`. */
  peek(maxAgeMs: number): PageBitmap {
    if (this.now() - this.lastScanAt > maxAgeMs) this.scan();
    return this.accumulated;
  }

  private segmentsOf(maps: readonly { start: number; end: number }[]): Segment[] {
    if (maps.length === 0) return [];
    return this.space.list().filter((s) => maps.some((m) => s.start < m.end && s.start + s.pages * this.space.pageSize > m.start));
  }
}
