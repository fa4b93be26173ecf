import { PageBitmap } from '@forecopy/filter';
import { PAGE_SIZE, findByIndex, type Mapping } from '@forecopy/protocol';
import type { DirtyRange, ProcMapping } from '@forecopy/linux';

export interface Segment {
  id: number;
  start: number;
  pages: number;
  indexBase: number;
  prot: string;
  offset: number;
  name: string;
}

export interface ReconcileResult {
  /** Segments created by this reconcile (their pages must be sent). */
  added: Segment[];
  /** Segments retired by this reconcile. */
  retired: Segment[];
}

/**
 * The session's linear page space: every migrated address range laid end to end, so that page
 * sets are bitmaps over one index space.
 *
 *   segment 0 (heap)        segment 1 (anon 64 MiB)          segment 2 (heap growth)
 *   index 0 .. 32           index 33 .. 16416                 index 16417 .. 16480
 *   0x5555..000             0x7f12..000                       0x5555..21000
 *
 * A segment is an immutable [start, start + pages) address range with a fixed `indexBase`. When
 * the process's mappings change between scans:
 * - an address range not covered by any segment becomes a new segment at the end of the space
 *   (all its pages dirty);
 * - a segment that is no longer wholly mapped is retired (its indices stay dead for the rest of
 *   the session), and whatever part of it is still mapped is covered by new segments, so those
 *   pages are sent again. That costs a resend when a mapping shrinks, and keeps every segment a
 *   simple range on both sides.
 * Indices are never reused, so a page index means one address for the whole session.
 */
export class PageSpace {
  private segments: Segment[] = []; // live, sorted by start
  private byIndex: Segment[] = []; // live, sorted by indexBase
  private nextId = 1;
  private nextIndex = 0;
  private _live: PageBitmap = new PageBitmap(0);
  private version = 0;

  constructor(readonly pageSize = PAGE_SIZE) {}

  /** Size of the index space (live and dead indices). */
  get totalPages(): number {
    return this.nextIndex;
  }

  /** Live pages (pages of live segments). */
  get livePages(): number {
    let n = 0;
    for (const s of this.segments) n += s.pages;
    return n;
  }

  /** Bitmap of live indices, sized to `totalPages`. */
  get live(): PageBitmap {
    return this._live;
  }

  /** Increases whenever the set of segments changes. */
  get layoutVersion(): number {
    return this.version;
  }

  list(): readonly Segment[] {
    return this.segments;
  }

  /**
   * Brings the segments in line with the current migratable mappings. Returns what changed; the
   * caller marks `added` pages dirty (they are in `dirtyForAdded`).
   */
  reconcile(mappings: readonly ProcMapping[]): ReconcileResult {
    const ps = this.pageSize;
    const sorted = [...mappings].sort((a, b) => a.start - b.start);
    const retired: Segment[] = [];
    const keep: Segment[] = [];
    // A segment survives only if one mapping covers it wholly (mappings never overlap).
    let mi = 0;
    for (const seg of this.segments) {
      const segEnd = seg.start + seg.pages * ps;
      while (mi < sorted.length && sorted[mi].end <= seg.start) mi++;
      const m = sorted[mi];
      if (m && m.start <= seg.start && m.end >= segEnd) keep.push(seg);
      else retired.push(seg);
    }
    // Cover what the kept segments do not.
    const added: Segment[] = [];
    let ki = 0;
    for (const m of sorted) {
      let cursor = m.start;
      while (ki < keep.length && keep[ki].start + keep[ki].pages * ps <= m.start) ki++;
      let kj = ki;
      while (cursor < m.end) {
        const k = keep[kj];
        const kStart = k && k.start < m.end ? k.start : m.end;
        if (cursor < kStart) {
          added.push(this.newSegment(cursor, kStart, m));
          cursor = kStart;
        }
        if (k && k.start < m.end) {
          cursor = k.start + k.pages * ps;
          kj++;
        }
      }
    }
    if (added.length === 0 && retired.length === 0) return { added, retired };
    this.segments = [...keep, ...added].sort((a, b) => a.start - b.start);
    this.byIndex = [...this.segments].sort((a, b) => a.indexBase - b.indexBase);
    const live = new PageBitmap(this.nextIndex);
    for (const s of this.segments) live.setRange(s.indexBase, s.indexBase + s.pages);
    this._live = live;
    this.version++;
    return { added, retired };
  }

  /** Sets, in `into`, the page index of every live page in the address ranges. */
  markRanges(ranges: readonly DirtyRange[], into: PageBitmap): void {
    const ps = this.pageSize;
    const segs = this.segments;
    for (const r of ranges) {
      let i = this.segmentAtOrAfter(r.start);
      for (; i < segs.length; i++) {
        const s = segs[i];
        if (s.start >= r.end) break;
        const segEnd = s.start + s.pages * ps;
        const a = Math.max(r.start, s.start);
        const b = Math.min(r.end, segEnd);
        if (a < b) into.setRange(s.indexBase + (a - s.start) / ps, s.indexBase + Math.ceil((b - s.start) / ps));
      }
    }
  }

  /** Marks every page of the segments. */
  markSegments(segs: readonly Segment[], into: PageBitmap): void {
    for (const s of segs) into.setRange(s.indexBase, s.indexBase + s.pages);
  }

  /** The live segment holding page index `index`, or undefined for a dead index. */
  segmentOfIndex(index: number): Segment | undefined {
    return findByIndex(this.byIndex, index);
  }

  /** Address of a live page index. */
  addressOf(index: number): number {
    const s = this.segmentOfIndex(index);
    if (!s) throw new RangeError(`page index ${index} is not live`);
    return s.start + (index - s.indexBase) * this.pageSize;
  }

  /** The layout as the protocol announces it. */
  layout(): Mapping[] {
    return this.segments.map((s) => ({
      id: s.id,
      start: s.start,
      pages: s.pages,
      prot: s.prot,
      offset: s.offset,
      name: s.name,
      migrated: true,
      indexBase: s.indexBase,
    }));
  }

  private segmentAtOrAfter(addr: number): number {
    const a = this.segments;
    const ps = this.pageSize;
    let lo = 0;
    let hi = a.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (a[mid].start + a[mid].pages * ps <= addr) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private newSegment(start: number, end: number, m: ProcMapping): Segment {
    const pages = (end - start) / this.pageSize;
    const seg: Segment = {
      id: this.nextId++,
      start,
      pages,
      indexBase: this.nextIndex,
      prot: m.perms,
      offset: m.offset + (start - m.start),
      name: m.path,
    };
    this.nextIndex += pages;
    return seg;
  }
}
