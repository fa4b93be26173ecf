import type { PageBitmap } from './page-bitmap.js';

/**
 * The migrated page space cut into S equal regions (paper 3.1: "continuous linear regions of
 * equal length"; S = 256 gives the paper's 4 MiB regions for 1 GiB). Each region holds
 * `regionPages` pages; the last region also takes the remainder, and any page past the size the
 * model was built for (the space grew during the migration) belongs to the last region too.
 */
export class RegionMap {
  readonly regionPages: number;

  constructor(
    readonly totalPages: number,
    readonly states: number,
  ) {
    if (!Number.isInteger(states) || states < 1) throw new RangeError(`states must be a whole number >= 1, got ${states}`);
    this.regionPages = Math.max(1, Math.floor(totalPages / states));
  }

  regionOf(page: number): number {
    return Math.min(this.states - 1, Math.floor(page / this.regionPages));
  }

  /** [start, end) pages of region r within a space of `size` pages. */
  bounds(r: number, size = this.totalPages): [number, number] {
    const start = r * this.regionPages;
    const end = r === this.states - 1 ? Math.max(size, start) : Math.min(size, start + this.regionPages);
    return [Math.min(start, size), end];
  }

  /** Pages written per region, counted a word at a time. */
  histogram(sample: PageBitmap, out: Uint32Array = new Uint32Array(this.states)): Uint32Array {
    out.fill(0);
    for (let r = 0; r < this.states; r++) {
      const [s, e] = this.bounds(r, sample.size);
      if (s < e) out[r] = sample.countRange(s, e);
    }
    return out;
  }
}

/** A sample's memory-write state: its hottest region, and the other hot-spot regions. */
export interface WriteState {
  state: number;
  /** Other regions with at least HOT_SHARE of the hottest's writes, hottest first (at most MAX_HOT - 1). */
  others: number[];
  /** Pages written in the hottest region. */
  count: number;
}

/**
 * A region is a hot spot when it has at least half the writes of the hottest region. Half keeps
 * the regions a workload really works in (a hot spot spread over two regions yields both) and
 * drops background noise, which on the workloads we measured sits well below a tenth of the peak.
 */
export const HOT_SHARE = 0.5;
export const MAX_HOT = 8;

/** The state of a sample, or null for a sample with no writes (no state: nothing to learn). */
export function writeState(hist: ArrayLike<number>): WriteState | null {
  let best = -1;
  let max = 0;
  for (let r = 0; r < hist.length; r++) {
    if (hist[r] > max) {
      max = hist[r];
      best = r;
    }
  }
  if (best < 0) return null;
  const others: Array<[number, number]> = [];
  const bar = max * HOT_SHARE;
  for (let r = 0; r < hist.length; r++) if (r !== best && hist[r] >= bar) others.push([hist[r], r]);
  others.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return { state: best, others: others.slice(0, MAX_HOT - 1).map((x) => x[1]), count: max };
}
