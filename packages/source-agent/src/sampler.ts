import { PageBitmap } from '@forecopy/filter';
import { isMigratable, readMaps, type DirtyTracker } from '@forecopy/linux';
import type { PageSpace, Segment } from './page-space.js';
import type { PageTrace } from './debug-pages.js';

export interface Sample {
  /** Pages written since the previous scan (new mappings count as fully written). */
  pages: PageBitmap;
  /** Milliseconds since the sampler started. */
  atMs: number;
  /** How long the scan took. */
  scanMs: number;
  /** Milliseconds covered by this sample (since the previous scan). */
  spanMs: number;
  /** True when the page space changed in this scan. */
  layoutChanged: boolean;
}

export type SampleListener = (s: Sample) => void;

/**
 * The dirty tracker's one owner. Every scan (every `intervalMs`, and on demand) re-reads the
 * process's mappings, brings the page space in line, collects the written pages from the
 * tracker (which re-protects them atomically) and turns them into a sample bitmap over the page
 * space. The same samples feed the round's dirty set, the Markov model and any recorder.
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
    const tick = () => {
      try {
        this.scan();
      } catch (e) {
        this.failed = e as Error;
        this.timer = null;
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
  }

  /** Scans now. Returns the sample (also given to listeners and added to the accumulated set). */
  scan(): Sample {
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
    for (const l of this.listeners) l(sample);
    return sample;
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
