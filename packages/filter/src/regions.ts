import { popcount32, type PageBitmap } from './page-bitmap.js';

/** `--states`: the paper measures 64..1024 and finds 256 (4 MiB regions for 1 GiB) best. */
export const MIN_STATES = 64;
export const MAX_STATES = 1024;

/** Whether `n` is a number of states a model may have: a whole number from MIN_STATES to MAX_STATES. */
export function isStateCount(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_STATES && n <= MAX_STATES;
}

/**
 * The migrated page space cut into S equal regions (paper 3.1: "continuous linear regions of
 * equal length"; S = 256 gives the paper's 4 MiB regions for 1 GiB). Each region holds
 * `regionPages` = floor(totalPages / S) pages; the last region also takes the remainder.
 *
 * The map is fixed when the model is built. When the space grows during the migration (new
 * mappings), every page past `totalPages` belongs to the last region: a model cannot say anything
 * about memory it never saw, and folding the new pages into one region keeps every state and
 * LWWS of the model valid. When the space shrinks, the regions past its end are simply empty.
 */
export class RegionMap {
  readonly regionPages: number;

  constructor(
    readonly totalPages: number,
    readonly states: number,
  ) {
    if (!Number.isInteger(states) || states < 1) throw new RangeError(`states must be a whole number >= 1, got ${states}`);
    if (!Number.isInteger(totalPages) || totalPages < 0) throw new RangeError(`totalPages must be a whole number >= 0, got ${totalPages}`);
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

  /** Pages written per region (see regionHistogram). */
  histogram(sample: PageBitmap, out: Uint32Array = new Uint32Array(this.states)): Uint32Array {
    return regionHistogram(sample, this, out);
  }
}

/**
 * Pages written per region of `regions` in `sample`, counted a word at a time: the whole words
 * of a region are popcounted, only its first and last word are masked. 1 GiB (8,192 words) takes
 * one pass over the bitmap whatever S is.
 */
export function regionHistogram(sample: PageBitmap, regions: RegionMap, out: Uint32Array = new Uint32Array(regions.states)): Uint32Array {
  if (out.length !== regions.states)
    throw new RangeError(`histogram of ${regions.states} regions needs ${regions.states} slots, got ${out.length}`);
  out.fill(0);
  const w = sample.raw;
  for (let r = 0; r < regions.states; r++) {
    const [s, e] = regions.bounds(r, sample.size);
    if (s < e) out[r] = countBits(w, s, e);
  }
  return out;
}

/** Set bits of words `w` in [start, end). */
function countBits(w: Uint32Array, start: number, end: number): number {
  const k0 = start >>> 5;
  const k1 = (end - 1) >>> 5;
  const headMask = (0xffffffff << (start & 31)) >>> 0;
  const tailBits = end & 31;
  const tailMask = tailBits === 0 ? 0xffffffff : ((1 << tailBits) >>> 0) - 1;
  if (k0 === k1) return popcount32(w[k0] & headMask & tailMask);
  let c = popcount32(w[k0] & headMask) + popcount32(w[k1] & tailMask);
  for (let k = k0 + 1; k < k1; k++) c += popcount32(w[k]);
  return c;
}

/** A sample's memory-write state: its hottest region, and the other hot-spot regions. */
export interface WriteState {
  /** The hottest region (ties: the lowest region index). */
  state: number;
  /** Other hot-spot regions, hottest first (ties: lower index first), at most maxHot - 1 (no limit by default). */
  others: number[];
  /** Pages written in the hottest region. */
  count: number;
}

export interface HotRegionOptions {
  /** A region is a hot spot when it has at least this share of the hottest region's writes. */
  share: number;
  /** At most this many hot-spot regions per sample, the hottest included (default: no limit). */
  maxHot: number;
}

/**
 * The hot-spot rule. A region is hot when it has at least half the writes of the hottest region.
 * Why: a workload's hot spot that straddles a region boundary, or two working areas used
 * together, show up as regions of comparable counts, and half keeps both; background writes
 * (allocator metadata, stacks, a few pages here and there) sit far below half of a real hot
 * spot, so they stay out. The paper sets no limit on the number of hot spots of a sample, and
 * neither do we: a sweep over ten regions has ten hot spots. What the model keeps of them is
 * bounded by memory budgets instead (ModelBuilder, MarkovModel).
 */
export const HOT_SHARE = 0.5;

/**
 * The hottest region of a histogram (the state) and the other hot-spot regions, or null for a
 * sample with no writes (no state: nothing to learn from and nothing to forecast with).
 */
export function hotRegions(hist: ArrayLike<number>, opts: Partial<HotRegionOptions> = {}): WriteState | null {
  const share = opts.share ?? HOT_SHARE;
  const maxHot = opts.maxHot ?? Infinity;
  if (!(share > 0 && share <= 1)) throw new RangeError(`hot share must be in (0, 1], got ${share}`);
  if (!((Number.isInteger(maxHot) || maxHot === Infinity) && maxHot >= 1))
    throw new RangeError(`maxHot must be a whole number >= 1, got ${maxHot}`);
  let best = -1;
  let max = 0;
  for (let r = 0; r < hist.length; r++) {
    if (hist[r] > max) {
      max = hist[r];
      best = r;
    }
  }
  if (best < 0) return null;
  const bar = max * share;
  const others: Array<[number, number]> = [];
  for (let r = 0; r < hist.length; r++) if (r !== best && hist[r] >= bar) others.push([hist[r], r]);
  others.sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  return { state: best, others: (maxHot === Infinity ? others : others.slice(0, maxHot - 1)).map((x) => x[1]), count: max };
}

/** hotRegions with the default rule. */
export function writeState(hist: ArrayLike<number>): WriteState | null {
  return hotRegions(hist);
}
