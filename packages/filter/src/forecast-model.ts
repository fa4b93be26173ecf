import { PageBitmap, popcount32 } from './page-bitmap.js';

// The forecaster's model of when each page is written next: a renewal model. Every page keeps
// the sample it was last written in; every region of pages keeps a histogram of the gaps (in
// samples) between successive writes of its pages. A page of age a (samples since its last write)
// is written within the next h samples with probability
//
//   P(gap <= a + h | gap > a) = (S(a) - S(a + h)) / S(a),  S(x) = P(gap > x)
//
// read from its region's histogram. This is a Markov chain on each page's age (the age is the
// state; the histogram gives its transitions, "written" or "one sample older"), propagated over
// the horizon in closed form. It knows what the paper's chain and TPO's history know for the
// patterns they address: a page written every sample (TPO's hot page) has gaps of 1 and is
// forecast written again within any horizon; a hot spot that dwells and moves on along a cycle
// leaves short gaps (during a dwell) and the cycle's period (between visits), so a page that was
// visited a period ago is forecast due, one visited just now is not; a page that stopped being
// written grows older than any gap its region showed and is forecast at the hazard of the
// longest gaps seen (cold where every page that reached them was written then, or none was,
// which is where a region stopped being written). Writes that are
// uniformly random leave gaps with a constant hazard, so the age says nothing and the forecast
// is the same for every page: the cost model (forecast-policy.ts) then holds none of them.
//
// Granularity: the histograms are kept at several region sizes at once, and each sample scores
// them on a subsample of pages by how well each forecast that sample's writes before seeing it
// (Brier score, decayed); the best one is used. Forgetting: histogram weights grow by GROWTH per
// sample, so the last ~1/(GROWTH-1) samples dominate and a phase change is followed.

/** Gap buckets, lower bounds in samples; bucket b holds gaps in [BOUNDS[b], BOUNDS[b+1]). */
const BOUNDS = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192];
const NB = BOUNDS.length - 1;
/** Continuous edges: integer gap g stands for (g - 1, g]; bucket b covers (EDGE[b], EDGE[b+1]]. */
const EDGE = BOUNDS.map((x) => x - 1);
/** Ages at or over this are "long ago": no gap that long is recorded, the page counts as cold. */
export const MAX_AGE = EDGE[NB];
const BUCKET_OF = new Uint8Array(MAX_AGE + 1);
for (let b = 0, x = 0; x <= MAX_AGE; x++) {
  while (b < NB - 1 && x >= EDGE[b + 1]) b++;
  BUCKET_OF[x] = b;
}
/** Region sizes tried, as shifts (pages per region = 1 << shift). */
export const REGION_SHIFTS = [6, 9, 12] as const;
/**
 * The model keeps its per-page and per-region state in chunks of 1 << CHUNK_SHIFT pages (no
 * larger than the largest region), allocated when a page of the chunk is first written and
 * released when none of its pages is mapped any more (release): its memory follows the pages the
 * process has written and still maps, not the index space, which a process that maps and unmaps
 * as it runs grows without end.
 */
const CHUNK_SHIFT = 12;
const CHUNK = 1 << CHUNK_SHIFT;
const chunksOf = (pages: number) => Math.ceil(pages / CHUNK) + 1;
const GROWTH = 1.02;
const SCORE_DECAY = 0.98;
/** One page in this many (rotating offset), or fewer for a large space, is scored per sample... */
const SCORE_STRIDE = 61;
/** ... about this many pages per sample. */
const SCORE_PAGES = 512;
const STAMP_MOD = 65535;
/** Pages expectedWritten looks at (at most: all of a smaller process). */
const EXPECTED_PAGES = 4096;

/**
 * The gaps observe() met in one finest region during a sample, by bucket (slot NB: first writes,
 * censored), added to every level's histograms at once when it leaves the region: a writer at
 * random leaves many gaps in few buckets per region.
 */
class GapTally {
  readonly c = new Float64Array(NB + 1);
  readonly sum = new Float64Array(NB + 1);
  readonly sq = new Float64Array(NB + 1);
  /** Bit b: slot b holds gaps. */
  mask = 0;
  region = -1;
  /**
   * `count` pages written now (`stamp`) that were last written at `l`: their gap, or (l = 0, a
   * first write, once the model has watched a whole sample) a censored gap: at least as long as
   * the model has watched.
   */
  add(stamp: number, l: number, count: number, firstRun: boolean, own: Uint16Array): void {
    if (l !== 0) {
      let gap = stamp - l;
      if (gap <= 0) gap += STAMP_MOD;
      // In the process's own time (ForecastModel.ownGap): g stands for (g - 1, g], at least 1.
      if (gap <= MAX_AGE) gap = own[gap];
      // Gap g stands for (g - 1, g]: the bucket that interval lies in (BUCKET_OF[g] is the next
      // one up where g is an edge, and put a gap of 1 at 1, half of it past a horizon of 1).
      const b = BUCKET_OF[Math.min(gap - 1, MAX_AGE)];
      this.c[b] += count;
      this.sum[b] += count * gap;
      this.sq[b] += count * gap * gap;
      this.mask |= 1 << b;
    } else if (firstRun) {
      this.c[NB] += count;
      this.mask |= 1 << NB;
    }
  }
  get byteLength(): number {
    return this.c.byteLength * 3;
  }
}

/** The stamps of a chunk no page of which was written: none (read where a chunk is missing). */
const EMPTY_STAMPS = new Uint16Array(CHUNK);

/** A word of the page bitmaps with all 32 pages set (read from a Uint32Array). */
const FULL_WORD = 0xffffffff;

/** Whether the 32 pages from `base` (of a chunk's stamps) were last written in the same sample. */
function sameLast(last: Uint16Array, base: number): boolean {
  const l = last[base];
  if (last[base + 31] !== l) return false;
  for (let j = 1; j < 31; j++) if (last[base + j] !== l) return false;
  return true;
}

/** Age of a page last written at stamp `l`, in the process's own samples (`own`), as the age table indexes it: at most MAX_AGE. */
function ageOf(stamp: number, l: number, own: Uint16Array): number {
  if (l === 0) return MAX_AGE; // never written (not a page planning looks at): forecast cold
  let a = stamp - l;
  if (a < 0) a += STAMP_MOD;
  if (a > MAX_AGE) return MAX_AGE;
  return own[a];
}

/** Entries of the age table's cache by stamp (a page's last-write stamp, modulo this). */
const STAMP_SLOTS = 4096;

/**
 * Forecasts by age while planning, for one region and horizon at a time (pages of a region
 * written in the same sample share one). Ages past MAX_AGE share the last entry: their forecast
 * is the same (the survival is flat there).
 *
 * In front of it, the same forecasts by the pages' stamps (what the pass reads): a page's age is
 * a function of its stamp during a plan, and looking the stamp up saves working out the age
 * (a wrap, a clamp and the process's own time) for every page. A slot holds one stamp: its key is
 * the stamp and the low 15 bits of the generation, so a stamp that shares the slot, or a stale
 * entry, misses and falls back on the age table. A writer at random's last-round plan spent about
 * 1.45 ms in the pass with the age table alone and 1.2-1.25 ms with this in front (a table of
 * every stamp, with no key to compare, took 1.0 ms but adds 768 KB to the model's 3 MB budget).
 */
class AgeTable {
  readonly tag = new Int32Array(MAX_AGE + 1);
  readonly p = new Float64Array(MAX_AGE + 1);
  /** Per slot: (generation & 0x7fff) << 16 | stamp, -1 when empty. */
  readonly stampKey = new Int32Array(STAMP_SLOTS).fill(-1);
  readonly stampP = new Float64Array(STAMP_SLOTS);
  private gen = 0;
  /** A new region or horizon: what the table remembers is stale. */
  next(): number {
    if (++this.gen === 0x7fffffff) {
      this.tag.fill(0);
      this.gen = 1;
      this.stampKey.fill(-1);
    } else if ((this.gen & 0x7fff) === 0) this.stampKey.fill(-1); // the keys' generation wraps
    return this.gen;
  }
  get byteLength(): number {
    return this.tag.byteLength + this.p.byteLength + this.stampKey.byteLength + this.stampP.byteLength;
  }
}

/**
 * The gap histograms of one region size, by chunk (null: no gap recorded in it yet, or released).
 * In a chunk's arrays, region r's bucket b is at (r & (perChunk - 1)) * NB + b.
 */
class GapLevel {
  /** Per region and bucket: the weight of gaps that ended in the bucket. */
  readonly hist: Array<Float32Array | null> = [];
  /** Per region and bucket: censored gaps (a first write: the gap was at least this long). */
  readonly cens: Array<Float32Array | null> = [];
  /** Per region and bucket: the weighted sum of the gaps that ended in it (their mean places the bucket's mass). */
  readonly sum: Array<Float32Array | null> = [];
  /** ... and of their squares (their spread). */
  readonly sq: Array<Float32Array | null> = [];
  /** Regions in a chunk. */
  readonly perChunk: number;
  score = 0;
  constructor(
    readonly shift: number,
    totalPages: number,
  ) {
    this.perChunk = 1 << (CHUNK_SHIFT - shift);
    this.resize(totalPages);
  }

  resize(totalPages: number): void {
    const n = chunksOf(totalPages);
    for (const a of [this.hist, this.cens, this.sum, this.sq]) {
      while (a.length < n) a.push(null);
      a.length = n;
    }
  }

  /** Chunk c's arrays, allocated if they were not. */
  ensure(c: number): void {
    if (this.hist[c] !== null) return;
    const n = this.perChunk * NB;
    this.hist[c] = new Float32Array(n);
    this.cens[c] = new Float32Array(n);
    this.sum[c] = new Float32Array(n);
    this.sq[c] = new Float32Array(n);
  }

  release(c: number): void {
    this.hist[c] = this.cens[c] = this.sum[c] = this.sq[c] = null;
  }

  get byteLength(): number {
    let n = 4 * 8 * this.hist.length; // the directories
    for (const h of this.hist) if (h !== null) n += 4 * h.byteLength;
    return n;
  }
}

/**
 * Survival function of one region at `x`: sv[b] = S before bucket b's mass, sv[b + 1] after it;
 * the mass is spread evenly over mu[b] +- half[b] (the mean of the bucket's gaps, and a spread
 * with their variance), so a regular period is forecast sharply and irregular gaps are not.
 */
function survival(sv: Float64Array, mu: Float64Array, half: Float64Array, x: number): number {
  if (x <= 0) return sv[0];
  if (x >= MAX_AGE) return sv[NB];
  const b = BUCKET_OF[Math.floor(x)];
  const m = mu[b];
  const d = half[b];
  if (x <= m - d) return sv[b];
  if (x >= m + d) return sv[b + 1];
  return sv[b + 1] + (sv[b] - sv[b + 1]) * ((m + d - x) / (2 * d));
}

/**
 * The ages one pass of addLikely met in each region (each region's distinct ages once), for later
 * passes over a subset of its pages at other horizons or thresholds: a region none of whose ages
 * is forecast over the threshold holds no page of their hold, and is not read. Valid for the
 * sample and the granularity it was taken at (the model does not change while a round is
 * planned). Fixed size: a census too large for skimming to pay (see addLikely: more ages than an
 * eighth of the pages) is dropped.
 */
class AgeCensus {
  regions: Int32Array;
  /** Region i's ages are ages[starts[i]], ..., ages[starts[i + 1] - 1]. */
  starts: Int32Array;
  ages: Uint16Array;
  regionCount = 0;
  ageCount = 0;
  /** The model's sample count and granularity when it was taken; -1: none (or dropped). */
  samples = -1;
  level = -1;

  constructor(totalPages: number) {
    // Room for every region of the finest size (64 pages): the region list never runs out.
    this.regions = new Int32Array((totalPages >>> 6) + 2);
    this.starts = new Int32Array((totalPages >>> 6) + 3);
    this.ages = new Uint16Array((totalPages >>> 3) + 1);
  }

  start(samples: number, level: number): void {
    this.samples = samples;
    this.level = level;
    this.regionCount = 0;
    this.ageCount = 0;
    this.starts[0] = 0;
  }

  /** The pass enters region r (regions come in increasing order). */
  region(r: number): void {
    if (this.samples < 0) return;
    this.regions[this.regionCount++] = r;
    this.starts[this.regionCount] = this.ageCount;
  }

  /** The pass met age a in the region it is in (once per region: the age table remembers it). */
  age(a: number): void {
    if (this.samples < 0) return;
    if (this.ageCount >= this.ages.length) {
      this.samples = -1;
      return;
    }
    this.ages[this.ageCount++] = a;
    this.starts[this.regionCount] = this.ageCount;
  }

  get byteLength(): number {
    return this.regions.byteLength + this.starts.byteLength + this.ages.byteLength;
  }
}

export class ForecastModel {
  private total: number;
  /**
   * Per page, by chunk: the sample it was last written in (1..65535, cycling), 0 = not in the
   * last MAX_AGE samples; a null chunk: none of its pages written (or released).
   */
  private last: Array<Uint16Array | null> = [];
  /** The pages with a last write (last != 0), so that planning skips the others word by word. */
  private seen: PageBitmap;
  /** Per word of 32 pages: 1 when all its pages were last written in the same sample (written whole). */
  private whole: Uint8Array;
  private levels: GapLevel[];
  private weight = 1;
  private n = 0;
  private stamp = 0;
  private chosen = 0;
  /**
   * The process's own time: by sample (n mod MAX_AGE + 1), the share of it the process ran
   * (observe's `share`; 1 when nothing slows it).
   */
  private readonly shares = new Float64Array(MAX_AGE + 1);
  /**
   * An age of d samples taken is ownAge[d] samples of the process's own time (rounded down), a
   * gap of d ownGap[d] (rounded up, at least 1: g stands for (g - 1, g]): ages and gaps are
   * learned and forecast in the time the process ran, the time its writes follow, so that a
   * throttle that slows it stretches neither. Both are d while it ran all along.
   */
  private readonly ownAge = Uint16Array.from({ length: MAX_AGE + 1 }, (_, d) => d);
  private readonly ownGap = Uint16Array.from({ length: MAX_AGE + 1 }, (_, d) => d);
  /** own differs from d for some d until this many samples are seen. */
  private slowedUntil = 0;
  private readonly tail = new Float64Array(NB + 1);
  private readonly mu = new Float64Array(NB);
  private readonly half = new Float64Array(NB);
  private tailRegion = -1;
  private tailLevel: GapLevel | null = null;
  /** Planning's forecasts by age (scratch, 96 KB). */
  private readonly ages = new AgeTable();
  /** Learning's gaps of one region (scratch). */
  private readonly tally = new GapTally();
  /** The ages of the last pass that recorded them (addLikely 'record'). */
  private census: AgeCensus;
  /** addLikely is recording them. */
  private recording = false;
  /** Regions the last addLikely that skimmed did not read. */
  skippedRegions = 0;
  /** addLikely's sums (scratch). */
  private readonly sums = { expected: 0, everyPage: 0 };

  constructor(totalPages: number) {
    this.total = totalPages;
    this.last.length = chunksOf(totalPages);
    this.last.fill(null);
    this.seen = new PageBitmap(totalPages);
    this.whole = new Uint8Array((totalPages + 31) >>> 5);
    this.levels = REGION_SHIFTS.map((s) => new GapLevel(s, totalPages));
    this.census = new AgeCensus(totalPages);
  }

  get totalPages(): number {
    return this.total;
  }

  /** Samples seen. */
  get samples(): number {
    return this.n;
  }

  /** Pages per region of the granularity in use. */
  get regionPages(): number {
    return 1 << this.levels[this.chosen].shift;
  }

  /** Decayed Brier scores per region size (lower is better). */
  get scores(): Record<number, number> {
    return Object.fromEntries(this.levels.map((l) => [1 << l.shift, l.score]));
  }

  byteSize(): number {
    let last = 8 * this.last.length;
    for (const c of this.last) if (c !== null) last += c.byteLength;
    return (
      last +
      this.seen.byteLength +
      this.whole.byteLength +
      this.ages.byteLength +
      this.tally.byteLength +
      this.census.byteLength +
      this.shares.byteLength +
      this.ownAge.byteLength +
      this.ownGap.byteLength +
      this.levels.reduce((a, l) => a + l.byteLength, 0)
    );
  }

  resize(totalPages: number): void {
    if (totalPages === this.total) return;
    const n = chunksOf(totalPages);
    while (this.last.length < n) this.last.push(null);
    this.last.length = n;
    // Past the new end of a shrunk space: forgotten.
    const tail = this.last[totalPages >>> CHUNK_SHIFT];
    if (tail && totalPages < this.total) tail.fill(0, totalPages & (CHUNK - 1));
    this.seen = this.seen.resized(totalPages);
    this.whole = new Uint8Array((totalPages + 31) >>> 5);
    this.census = new AgeCensus(totalPages);
    for (const l of this.levels) l.resize(totalPages);
    this.total = totalPages;
    this.tailRegion = -1;
  }

  /**
   * Releases what the model keeps for each chunk of pages none of which is in `live` (their
   * mappings are gone: they are never planned again, nor counted in a score or an estimate).
   * `live` is the page space's live indices, as large as the space.
   */
  release(live: PageBitmap): void {
    let any = false;
    for (let c = 0; c < this.last.length; c++) {
      if (this.last[c] === null && this.levels.every((l) => l.hist[c] === null)) continue;
      const from = c << CHUNK_SHIFT;
      if (from >= this.total) continue;
      const to = Math.min(this.total, from + CHUNK);
      // A chunk past the end of `live` is not known to be gone: kept.
      if (to > live.size || live.countRange(from, to) > 0) continue;
      this.last[c] = null;
      this.seen.clearRange(from, to);
      this.whole.fill(0, from >>> 5, (to + 31) >>> 5);
      for (const l of this.levels) l.release(c);
      any = true;
    }
    if (any) this.tailRegion = -1;
  }

  /** Age of page `p` in the process's own samples (0 = written in the latest sample), or -1 when cold/never. */
  age(p: number): number {
    const a = this.samplesSince(p);
    return a < 0 || a > MAX_AGE ? a : this.ownAge[a];
  }

  /** Samples taken since page `p` was last written (0 = in the latest), or -1 when cold/never. */
  samplesSince(p: number): number {
    const c = this.last[p >>> CHUNK_SHIFT];
    const l = c ? c[p & (CHUNK - 1)] : 0;
    if (l === 0) return -1;
    return (this.stamp - l + STAMP_MOD) % STAMP_MOD;
  }

  /**
   * One whole sample: scores the granularities on it, then learns from it. `share`: the share of
   * the sample's time the process ran (under a throttle that slows it, less than 1).
   */
  observe(sample: PageBitmap, share = 1): void {
    if (!(share > 0 && share <= 1)) throw new RangeError(`a sample's share of running time must be in (0, 1], got ${share}`);
    if (this.n > 0) this.score(sample, share);
    this.n++;
    this.stamp = (this.stamp % STAMP_MOD) + 1;
    this.advanceClock(share);
    this.weight *= GROWTH;
    if (this.weight > 1e20) this.renormalize();
    const stamp = this.stamp;
    const lim = Math.min(sample.size, this.total);
    const tally = this.tally;
    const firstBucket = BUCKET_OF[Math.min(Math.max(this.n - 1, 0), MAX_AGE)];
    const fine = this.levels[0].shift;
    const words = sample.raw;
    const whole = this.whole;
    const firstRun = this.n > 1;
    const own = this.ownGap;
    let chunk = -1;
    let last: Uint16Array = EMPTY_STAMPS; // the chunk's stamps
    for (let k = 0; k < words.length && k << 5 < lim; k++) {
      let x = words[k];
      if (x === 0) continue;
      const base = k << 5;
      if (base >>> fine !== tally.region) {
        this.addTally(firstBucket);
        tally.region = base >>> fine;
      }
      if (base >>> CHUNK_SHIFT !== chunk) {
        chunk = base >>> CHUNK_SHIFT;
        last = this.last[chunk] ?? (this.last[chunk] = new Uint16Array(CHUNK));
      }
      const b = base & (CHUNK - 1);
      const full = x === FULL_WORD && base + 32 <= lim;
      if (full && (whole[k] === 1 || sameLast(last, b))) {
        // A whole word written, its 32 pages last written in the same sample (a region written
        // at once): its gaps are one gap 32 times.
        tally.add(stamp, last[b], 32, firstRun, own);
        last.fill(stamp, b, b + 32);
        whole[k] = 1;
        continue;
      }
      whole[k] = full ? 1 : 0; // written whole now, or not whole any more
      while (x !== 0) {
        const t = x & -x;
        x ^= t;
        const j = 31 - Math.clz32(t);
        if (base + j >= lim) break;
        tally.add(stamp, last[b + j], 1, firstRun, own);
        last[b + j] = stamp;
      }
    }
    this.addTally(firstBucket);
    const sw = this.seen.raw;
    for (let k = 0; k < Math.min(words.length, sw.length); k++) sw[k] |= words[k];
    if (sample.size > this.total && this.total & 31 && this.total >>> 5 < sw.length) sw[this.total >>> 5] &= (1 << (this.total & 31)) - 1;
    if (this.n % 1024 === 0) this.forgetOld();
    this.tailRegion = -1;
  }

  /** The share of the latest sample the process ran, and ages and gaps in its time (ownAge, ownGap). */
  private advanceClock(share: number): void {
    const R = MAX_AGE + 1;
    this.shares[this.n % R] = share;
    if (share < 1) this.slowedUntil = this.n + MAX_AGE + 1;
    else if (this.n > this.slowedUntil) return; // every age in the window is one of the clock's
    const { ownAge, ownGap, shares } = this;
    const known = Math.min(this.n, MAX_AGE);
    // x: the process's time in the last d samples (those after the one d samples back).
    for (let d = 0, x = 0; d <= known; x += shares[(this.n - d) % R], d++) {
      ownAge[d] = Math.floor(x + 1e-9);
      ownGap[d] = Math.max(1, Math.ceil(x - 1e-9));
    }
    for (let d = known + 1; d <= MAX_AGE; d++) ownAge[d] = ownGap[d] = d;
  }

  /**
   * The share of its time the process ran in the sample `a` samples before the latest (0: the
   * latest), as observe was told; undefined before the first or past the last MAX_AGE.
   */
  shareAgo(a: number): number | undefined {
    return a >= 0 && a < Math.min(this.n, MAX_AGE) ? this.shares[(this.n - a) % (MAX_AGE + 1)] : undefined;
  }

  /**
   * Adds the gaps tallied in one finest region to every level's histograms (first writes as
   * censored gaps in `firstBucket`: at least as long as the model has watched), and empties the tally.
   */
  private addTally(firstBucket: number): void {
    const t = this.tally;
    let m = t.mask;
    if (m === 0) return;
    const w = this.weight;
    const fine = this.levels[0].shift;
    for (const lv of this.levels) {
      const reg = t.region >>> (lv.shift - fine);
      const c = reg >>> (CHUNK_SHIFT - lv.shift);
      lv.ensure(c);
      const r = (reg & (lv.perChunk - 1)) * NB;
      const hist = lv.hist[c] as Float32Array;
      const sum = lv.sum[c] as Float32Array;
      const sq = lv.sq[c] as Float32Array;
      for (let x = m; x !== 0; ) {
        const bit = x & -x;
        x ^= bit;
        const slot = 31 - Math.clz32(bit);
        if (slot === NB) (lv.cens[c] as Float32Array)[r + firstBucket] += w * t.c[slot];
        else {
          hist[r + slot] += w * t.c[slot];
          sum[r + slot] += w * t.sum[slot];
          sq[r + slot] += w * t.sq[slot];
        }
      }
    }
    while (m !== 0) {
      const bit = m & -m;
      m ^= bit;
      const slot = 31 - Math.clz32(bit);
      t.c[slot] = 0;
      t.sum[slot] = 0;
      t.sq[slot] = 0;
    }
    t.mask = 0;
  }

  /**
   * Adds to `out` the pages of `pages` written within the next h samples with probability over
   * `threshold`. One pass; pages of a region with the same age share one forecast. Returns the
   * expected number of the added pages that are written within h samples. With `all`, also adds
   * to all.expected that number over every page of `pages` (added or not): the same pass serves
   * two questions at one horizon.
   *
   * `census`: 'record' keeps the ages the pass meets in each region; 'skim', over a subset of the
   * pages of the pass that last recorded them (at this sample), reads only the regions where one
   * of those ages is forecast over the threshold at h, if that is cheaper than reading every page
   * (a region's survival costs about as much as forecasting 32 pages, an age as 8), and no `all`
   * is asked: a narrower hold over a wide one skips, region by region, what cannot be in it.
   */
  addLikely(
    pages: PageBitmap,
    h: number,
    threshold: number,
    out: PageBitmap,
    all?: { expected: number },
    census?: 'record' | 'skim',
  ): number {
    const words = Math.min(pages.raw.length, out.raw.length, this.total >>> 5);
    const sums = this.sums;
    sums.expected = 0;
    sums.everyPage = 0;
    const c = this.census;
    if (
      census === 'skim' &&
      all === undefined &&
      c.samples === this.n &&
      c.level === this.chosen &&
      32 * c.regionCount + 8 * c.ageCount < pages.count()
    ) {
      const lv = this.levels[this.chosen];
      const shift = lv.shift;
      this.skippedRegions = 0;
      for (let i = 0; i < c.regionCount; i++) {
        if (!this.likelyIn(lv, i, h, threshold)) {
          this.skippedRegions++;
          continue;
        }
        const r = c.regions[i];
        this.pass(pages, h, threshold, out, sums, (r << shift) >>> 5, Math.min(words, ((r + 1) << shift) >>> 5));
      }
    } else if (census === 'record') {
      c.start(this.n, this.chosen);
      this.recording = true;
      this.pass(pages, h, threshold, out, sums, 0, words);
      this.recording = false;
    } else this.pass(pages, h, threshold, out, sums, 0, words);
    let expected = sums.expected;
    let everyPage = sums.everyPage;
    // The pages past the last whole word, one by one.
    for (let p = words << 5; p < Math.min(pages.size, this.total); p++) {
      const q = pages.has(p) ? this.probWithin(p, h) : 0;
      if (q > 0) everyPage += q;
      if (q > threshold) {
        out.set(p);
        expected += q;
      }
    }
    if (all !== undefined) all.expected += everyPage;
    return expected;
  }

  /** addLikely's pass over the words [from, to); adds to `sums` over the pages added and over every page. */
  private pass(
    pages: PageBitmap,
    h: number,
    threshold: number,
    out: PageBitmap,
    sums: { expected: number; everyPage: number },
    from: number,
    to: number,
  ): void {
    const lv = this.levels[this.chosen];
    const shift = lv.shift; // >= 5: a word of 32 pages lies in one region
    const { stampKey, stampP } = this.ages;
    let expected = 0;
    let everyPage = 0;
    const src = pages.raw;
    const dst = out.raw;
    const seen = this.seen.raw;
    const whole = this.whole;
    let region = -1;
    let live = false;
    let gen = 0;
    let keyGen = 0; // the generation's part of a stamp's key
    let last: Uint16Array = EMPTY_STAMPS; // the stamps of the chunk of the region (a region lies in one chunk)
    for (let k = from; k < to; k++) {
      let x = src[k] & seen[k];
      if (x === 0) continue;
      const base = k << 5;
      const r = base >>> shift;
      if (r !== region) {
        live = this.loadTail(lv, r);
        region = r;
        gen = this.ages.next();
        keyGen = (gen & 0x7fff) << 16;
        if (live && this.recording) this.census.region(r);
        last = this.last[base >>> CHUNK_SHIFT] ?? EMPTY_STAMPS; // a page seen was written: its chunk is there
      }
      if (!live) continue;
      const b = base & (CHUNK - 1);
      // A word written whole (its pages last written in the same sample) has one forecast: its
      // lowest page's, counted for every page of it. One loop for both, with one call site for a
      // forecast not yet made: with two, V8 inlined it into the one or the other depending on
      // which it had seen more of when it compiled the pass, and a writer at random's plan took
      // about 1.5 ms in some runs of bench/filter-costs.mjs and 1.9-3.3 ms in others.
      const whole1 = whole[k] === 1;
      const n = whole1 ? popcount32(x) : 1;
      if (whole1) x &= -x;
      // Page by page, without a branch on the forecast (pages of different ages come in no
      // order a branch predictor can learn: a random writer's plan took twice as long). A page
      // not added adds 0 to the sum, which leaves it the same to the bit.
      let acc = 0;
      while (x !== 0) {
        const t = x & -x;
        x ^= t;
        const l = last[b + 31 - Math.clz32(t)];
        const key = keyGen | l;
        const slot = l & (STAMP_SLOTS - 1);
        const q = stampKey[slot] === key ? stampP[slot] : this.forecastStamp(l, key, h, gen);
        const over = +(q > threshold);
        acc |= t & -over;
        expected += n * q * over;
        everyPage += n * q * +(q > 0);
      }
      dst[k] |= whole1 && acc !== 0 ? src[k] & seen[k] : acc;
    }
    sums.expected += expected;
    sums.everyPage += everyPage;
  }

  /** Whether one of the ages the census met in its i-th region is forecast over the threshold at h. */
  private likelyIn(lv: GapLevel, i: number, h: number, threshold: number): boolean {
    const c = this.census;
    this.loadTail(lv, c.regions[i]);
    for (let j = c.starts[i]; j < c.starts[i + 1]; j++) if (this.within(c.ages[j], h) > threshold) return true;
    return false;
  }

  /** The expected number of the pages of `pages` written within the next h samples (addLikely's sum over all of them). */
  expectedAmong(pages: PageBitmap, h: number): number {
    const all = { expected: 0 };
    this.addLikely(pages, h, Number.POSITIVE_INFINITY, pages, all); // over no threshold: adds nothing
    return all.expected;
  }

  /**
   * P(written within h samples) at age `a` of the region whose tail is loaded; remembered in the
   * age table under `gen` (and, the first time the region meets it, in the census being recorded).
   */
  private forecastAt(a: number, h: number, gen: number): number {
    const q = this.within(a, h);
    this.ages.tag[a] = gen;
    this.ages.p[a] = q;
    if (this.recording) this.census.age(a);
    return q;
  }

  /** forecastAt for the pages last written at stamp `l` (the pass's miss), remembered under `key` in the stamp's slot. */
  private forecastStamp(l: number, key: number, h: number, gen: number): number {
    const a = ageOf(this.stamp, l, this.ownAge);
    const q = this.ages.tag[a] === gen ? this.ages.p[a] : this.forecastAt(a, h, gen);
    const slot = l & (STAMP_SLOTS - 1);
    this.ages.stampKey[slot] = key;
    this.ages.stampP[slot] = q;
    return q;
  }

  /** P(page p is written within the next h samples), at the granularity in use. */
  probWithin(p: number, h: number): number {
    const a = this.age(p);
    if (a < 0) return 0;
    return this.prob(this.levels[this.chosen], p, a, h);
  }

  private prob(lv: GapLevel, p: number, a: number, h: number): number {
    const r = p >>> lv.shift;
    if (r !== this.tailRegion || lv !== this.tailLevel) this.loadTail(lv, r);
    return this.within(a, h);
  }

  /** P(written within h samples | age a) for the region whose tail is loaded. */
  private within(a: number, h: number): number {
    const s0 = survival(this.tail, this.mu, this.half, a);
    if (!(s0 > 0)) return 0;
    return (s0 - survival(this.tail, this.mu, this.half, a + h)) / s0;
  }

  /**
   * The region's survival at the bucket edges, Kaplan-Meier: the hazard of bucket b is the gaps
   * ending in it over the gaps (ended or censored) that reached it. Past the last bucket with
   * any gap S goes on falling at that bucket's hazard (flat where it had only censored ones).
   */
  private loadTail(lv: GapLevel, r: number): boolean {
    const t = this.tail;
    const c = r >>> (CHUNK_SHIFT - lv.shift);
    const hist = lv.hist[c];
    this.tailRegion = r;
    this.tailLevel = lv;
    if (!hist) {
      t.fill(1);
      return false; // no gap recorded in its chunk: S stays 1, nothing is forecast
    }
    const cens = lv.cens[c] as Float32Array;
    const sum = lv.sum[c] as Float32Array;
    const sq = lv.sq[c] as Float32Array;
    const base = (r & (lv.perChunk - 1)) * NB;
    let atRisk = 0;
    let events = 0;
    let end = 0; // past the last bucket with any gap in it
    for (let b = 0; b < NB; b++) {
      const w = hist[base + b] + cens[base + b];
      if (w !== 0) end = b + 1;
      atRisk += w;
      events += hist[base + b];
    }
    if (!(events > 0)) {
      t.fill(1);
      return false; // no gap seen: S stays 1, nothing is forecast
    }
    t[0] = 1;
    let lastHazard = 0; // of the last bucket with any gap (over its width)
    for (let b = 0; b < end; b++) {
      const ev = hist[base + b];
      t[b + 1] = atRisk > 0 ? t[b] * (1 - ev / atRisk) : t[b];
      lastHazard = atRisk > 0 ? ev / atRisk : 1;
      atRisk -= ev + cens[base + b];
      if (atRisk < 1e-12 * (ev + 1)) atRisk = 0;
      if (!(ev > 0)) continue; // no mass here: where it would lie does not matter
      // Gap g stands for (g - 1, g]: mean - 1/2, spread sqrt(3 var + 1/4) (a uniform's half-width).
      const lo = EDGE[b];
      const hi = EDGE[b + 1];
      const mean = sum[base + b] / ev;
      const variance = Math.max(0, sq[base + b] / ev - mean * mean);
      const m = Math.min(hi, Math.max(lo, mean - 0.5));
      this.mu[b] = m;
      this.half[b] = Math.max(1e-6, Math.min(Math.sqrt(3 * variance + 0.25), m - lo, hi - m));
    }
    // Past the last bucket with any gap nothing was seen (the model watched no longer, or the
    // pages were not written again): S goes on falling at that bucket's hazard, flat (no write
    // ever again) where it had no gap, only censored ones. Flat where it had gaps too, a sweep's
    // pages were forecast partly never written again within any horizon (mw-512: 16,384 pages
    // under 0.99 within 172 samples). A page older than that bucket is forecast at that hazard
    // too, not cold: cold there cost pages and downtime on the traces (BENCHMARKS.md, session 12).
    if (end === NB) return true;
    if (!(lastHazard > 0) || !(t[end] > 0)) {
      t.fill(t[end], end + 1);
      return true;
    }
    const perSample = lastHazard >= 1 ? 0 : (1 - lastHazard) ** (1 / (EDGE[end] - EDGE[end - 1]));
    let width = 0;
    let factor = 1;
    for (let b = end; b < NB; b++) {
      const wb = EDGE[b + 1] - EDGE[b];
      // Bucket widths repeat or double (one power, then a square each time they double).
      if (wb === 2 * width) factor *= factor;
      else if (wb !== width) factor = perSample ** wb;
      width = wb;
      t[b + 1] = t[b] * factor;
      this.mu[b] = (EDGE[b] + EDGE[b + 1]) / 2;
      this.half[b] = wb / 2;
    }
    return true;
  }

  /** Brier score of each level's forecast of the sample (a `share` of a sample of the process's time), on a rotating subsample, before learning. */
  private score(sample: PageBitmap, share: number): void {
    const stride = Math.max(SCORE_STRIDE, 2 * Math.floor(this.total / (2 * SCORE_PAGES)) + 1);
    const off = this.n % stride;
    for (const lv of this.levels) {
      let s = 0;
      for (let p = off; p < this.total; p += stride) {
        const a = this.age(p);
        if (a < 0) continue;
        const q = this.prob(lv, p, a, share) || 0;
        const y = p < sample.size && sample.has(p) ? 1 : 0;
        s += (q - y) * (q - y);
      }
      lv.score = lv.score * SCORE_DECAY + s;
    }
    // The forecast made at the previous sample for this one. The best level wins; ties keep the finer.
    let best = 0;
    for (let i = 1; i < this.levels.length; i++) if (this.levels[i].score < this.levels[best].score) best = i;
    this.chosen = best;
    this.tailRegion = -1;
  }

  private renormalize(): void {
    const k = 1 / this.weight;
    for (const lv of this.levels)
      for (const arrays of [lv.hist, lv.cens, lv.sum, lv.sq])
        for (const a of arrays) {
          if (a === null) continue;
          for (let i = 0; i < a.length; i++) a[i] *= k;
        }
    this.weight = 1;
  }

  /** Pages not written for MAX_AGE samples or more become cold (so the cycling stamp cannot alias). */
  private forgetOld(): void {
    for (let c = 0; c < this.last.length; c++) {
      const last = this.last[c];
      if (last === null) continue;
      for (let j = 0; j < CHUNK; j++) {
        const p = (c << CHUNK_SHIFT) + j;
        if (last[j] !== 0 && this.samplesSince(p) >= MAX_AGE) {
          last[j] = 0;
          this.seen.clear(p);
        }
      }
    }
  }

  /** The pages written at least once so far (a copy: what the forecast has a history of). */
  history(): PageBitmap {
    return this.seen.clone();
  }

  /**
   * recentlyWritten over the pages of `among` only (each page outside it counts as not written),
   * and `hits`, how many of the pages it looks at were written: the estimate's grain.
   */
  recentlyWrittenAmong(h: number, among: PageBitmap): { pages: number; hits: number } {
    const { sum, looked } = this.countRecent(h, undefined, among);
    return { pages: looked > 0 ? (sum / looked) * this.total : 0, hits: sum };
  }

  /**
   * How many pages (of all) were written within the last `h` samples taken (the clock's, not the
   * process's own time: samplesSince, on about
   * 4,096 pages spread over the space): what the process did, not a forecast. Pages written for
   * the first time count here; the forecast cannot see them coming. `weight(age)`, if given,
   * counts a page last written `age` samples ago as that much of one.
   */
  recentlyWritten(h: number, weight?: (age: number) => number): number {
    const { sum, looked } = this.countRecent(h, weight);
    return looked > 0 ? (sum / looked) * this.total : 0;
  }

  /** recentlyWritten's count over the pages it looks at (`looked` of them), only those of `among` if given. */
  private countRecent(h: number, weight?: (age: number) => number, among?: PageBitmap): { sum: number; looked: number } {
    const step = Math.max(1, Math.floor(this.total / EXPECTED_PAGES));
    let sum = 0;
    let looked = 0;
    for (let p = 0; p < this.total; p += step) {
      looked++;
      if (among && (p >= among.size || !among.has(p))) continue;
      const a = this.samplesSince(p);
      if (a >= 0 && a < h) sum += weight ? weight(a) : 1;
    }
    return { sum, looked };
  }

  /**
   * Expected number of pages (of all, not only unsynchronized) written within h samples,
   * estimated on every `stride`-th page.
   */
  expectedWritten(h: number): number {
    // About 4,096 pages (or all), spread over up to 512 regions (one tail load per region): 8 in
    // each of 512, 64 in each of 64. Not 8 a region whatever their number: with few regions (a
    // small process, or the largest region size) that was a few dozen pages, and the estimate of
    // a sequential writer's writes was off by as much as the writer writes in a sample.
    const lv = this.levels[this.chosen];
    const rp = 1 << lv.shift;
    const regions = Math.ceil(this.total / rp);
    const regionStep = Math.max(1, Math.floor(regions / 512));
    const inStep = Math.max(1, Math.floor((rp * Math.ceil(regions / regionStep)) / EXPECTED_PAGES));
    const { tag, p: byAge } = this.ages;
    let s = 0;
    let n = 0;
    for (let r = 0; r < regions; r += regionStep) {
      const live = this.loadTail(lv, r);
      // Pages of one age in a region share one forecast (a writer at random leaves a few dozen ages in each).
      const gen = this.ages.next();
      for (let p = r * rp; p < Math.min(this.total, (r + 1) * rp); p += inStep) {
        n++;
        const a = this.age(p);
        if (a < 0 || !live) continue;
        if (a > MAX_AGE) s += this.within(a, h);
        else if (tag[a] === gen) s += byAge[a];
        else {
          const q = this.within(a, h);
          tag[a] = gen;
          byAge[a] = q;
          s += q;
        }
      }
    }
    return n > 0 ? (s / n) * this.total : 0;
  }
}
