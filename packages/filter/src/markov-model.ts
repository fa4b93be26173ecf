import { ModelFormatError } from './errors.js';
import { PageBitmap } from './page-bitmap.js';
import { MAX_STATES, MIN_STATES, RegionMap, hotRegions, isStateCount, regionHistogram } from './regions.js';
import { crc32 } from './crc32.js';

// The paper's model (3.1-3.3): memory-write states (the hottest region of each sample), a sparse
// S x S matrix of transitions between consecutive states, and for each observed state the other
// hot-spot regions recorded with it and its local writable working set (LWWS): the pages of
// those regions written in at least `lwwsThreshold` of the state's samples.
//
// Memory, and why it is bounded: an LWWS is kept as one packed bitmap per region (a region of
// 1,024 pages is 128 bytes), not as a list of page numbers:
//
//   state s ─┬─ others:      [r2, r7]              regions hot with s, hottest first
//            └─ LWWS:        r5  ▕0110…0001▏       128 B per region at 4 MiB regions
//                            r7  ▕0000…1000▏
//
// The paper sets no limit on the hot spots of a state, and neither does the model; what bounds
// its memory is a budget on the LWWS bitmaps of all states together, `lwwsBytesPerPage` bytes per
// page of the space (default 4: 1 MiB for 1 GiB, i.e. every page may be in the LWWS of 32
// states). A model over the budget keeps the (state, region) bitmaps whose region was hot in the
// largest share of the state's samples (a state's own region first) and reports how many it left
// out (`trimmedRegions`). With the transitions (at most S^2 entries) the whole model stays within
// the paper's O(N + S^2) and its 2.79 MB; byteSize() reports the actual figure.

/**
 * Default LWWS threshold: a page joins a state's LWWS when it is written in at least a quarter
 * of that state's samples. A state lasts several samples (a hot spot dwells), so a page with a
 * per-sample write chance of 1/4 is written during a stay of n samples with chance 1-(3/4)^n:
 * 94% for n = 10 (500 ms at 50 ms). Holding such a page back saves a resend almost surely; a
 * higher bar (1/2) missed most of a 4 MiB hot spot written at 20,000 pages/s in our traces
 * (BENCHMARKS.md, forecopy-sim --lwws-threshold sweep). Noise stays out: a page written at random
 * now and then is in far fewer than a quarter of one state's samples.
 */
export const DEFAULT_LWWS_THRESHOLD = 0.25;
export const DEFAULT_STATES = 256;

/** LWWS budget of a model, bytes per page of the space (1 MiB for 1 GiB). */
export const DEFAULT_LWWS_BYTES_PER_PAGE = 4;
/** The builder's page counters, bytes per page of the space (4 MiB for 1 GiB: 2 bytes a counter). */
export const DEFAULT_COUNT_BYTES_PER_PAGE = 16;

const MODEL_MAGIC = 0x4d4d4346; // 'FCMM' little-endian
/** Version 2: LWWS as per-region bitmaps, recorded hot regions, CRC-32 trailer. */
export const MODEL_FORMAT_VERSION = 2;

export interface ModelOptions {
  /** S: regions = states, MIN_STATES..MAX_STATES (default 256). */
  states: number;
  /** Share of a state's samples a page must be written in to join its LWWS, (0, 1]. */
  lwwsThreshold: number;
  /** Budget of the model's LWWS bitmaps, bytes per page of the space (default 4). */
  lwwsBytesPerPage: number;
  /** Budget of the builder's page counters, bytes per page of the space (default 16). */
  countBytesPerPage: number;
}

/** What the model keeps about one observed state. */
export interface StateProfile {
  /** Other hot-spot regions recorded with the state, hottest first. */
  others: number[];
  /** Regions holding LWWS pages, increasing. */
  lwwsRegions: number[];
  /** Per LWWS region, the packed bitmap of its pages (bit i = page regionStart + i). */
  lwwsBits: Uint32Array[];
}

export class MarkovModel {
  private readonly mostLikely: Int32Array;
  private readonly stateOrder: number[];
  private readonly rowTotals = new Map<number, { n: number; q: number }>();
  private backoffCache: { q0: number; unseenP: number } | null = null;
  private readonly momentCache: Float64Array;

  constructor(
    readonly regions: RegionMap,
    readonly lwwsThreshold: number,
    /** Samples seen in each state. */
    readonly stateCounts: Uint32Array,
    /** transitions.get(a).get(b) = times state b followed state a. */
    readonly transitions: Map<number, Map<number, number>>,
    /** One profile per observed state. */
    readonly profiles: Map<number, StateProfile>,
    /** (state, region) LWWS bitmaps the build left out to stay within its budget. */
    readonly trimmedRegions = 0,
  ) {
    const s = regions.states;
    if (stateCounts.length !== s) throw new RangeError(`stateCounts has ${stateCounts.length} entries for ${s} states`);
    this.mostLikely = new Int32Array(s).fill(-1);
    for (const [a, row] of transitions) {
      let best = -1;
      let bestC = 0;
      let n = 0;
      let singles = 0;
      for (const [b, c] of row) {
        if (c > bestC || (c === bestC && b < best)) {
          best = b;
          bestC = c;
        }
        n += c;
        if (c === 1) singles++;
      }
      this.mostLikely[a] = best;
      // Good-Turing: the share of a row's future transitions that go somewhere never seen from
      // it is about (successors seen once) / n; +1 so that a row without singletons still allows
      // some (the model saw a finite sample).
      this.rowTotals.set(a, { n, q: n ? Math.min(1, (singles + 1) / (n + 1)) : 1 });
    }
    this.stateOrder = [...Array(s).keys()].filter((x) => stateCounts[x] > 0).sort((a, b) => stateCounts[b] - stateCounts[a] || a - b);
    this.momentCache = new Float64Array(2 * s).fill(NaN);
  }

  get states(): number {
    return this.regions.states;
  }

  get totalPages(): number {
    return this.regions.totalPages;
  }

  /** States seen at least once. */
  get observedStates(): number {
    return this.stateOrder.length;
  }

  /** Distinct transitions (non-zero entries of the matrix). */
  get transitionCount(): number {
    let n = 0;
    for (const row of this.transitions.values()) n += row.size;
    return n;
  }

  /** Samples (with writes) the model was built from. */
  get samples(): number {
    let n = 0;
    for (const c of this.stateCounts) n += c;
    return n;
  }

  /** The most frequent state (where a forecast starts when nothing was observed yet). */
  mostFrequentState(): number {
    return this.stateOrder[0] ?? 0;
  }

  /**
   * The most probable successor of `s` (paper Fig. 3 line 19). Ties go to the lower state. A
   * state with no observed successor (never seen, or only seen last) stays where it is: the best
   * guess the model has is that the write pattern continues.
   */
  mostLikelyNext(s: number): number {
    const n = this.mostLikely[s];
    return n >= 0 ? n : s;
  }

  /** The forecast chain: `steps` states after `curr`, each the most probable next of the one before. */
  forecast(curr: number, steps: number): number[] {
    const out: number[] = [];
    for (let i = 0; i < steps; i++) out.push((curr = this.mostLikelyNext(curr)));
    return out;
  }

  /**
   * Expected number of samples spent in each state over the next `steps` samples, starting in
   * `curr` (the distribution propagated through the transition matrix; a state with no observed
   * successor keeps its mass). Used by the `visits` forecast.
   */
  expectedOccupancy(curr: number, steps: number): Float64Array {
    const S = this.states;
    const rows = this.normalizedRows();
    let p = new Float64Array(S);
    let q = new Float64Array(S);
    const occ = new Float64Array(S);
    p[curr] = 1;
    let active = [curr];
    const inNext = new Uint8Array(S);
    for (let k = 0; k < steps; k++) {
      q.fill(0);
      const next: number[] = [];
      const add = (b: number, m: number) => {
        q[b] += m;
        if (!inNext[b]) {
          inNext[b] = 1;
          next.push(b);
        }
      };
      for (const a of active) {
        const mass = p[a];
        if (mass < 1e-9) continue;
        const row = rows[a];
        if (!row) add(a, mass);
        else for (let i = 0; i < row.length; i += 2) add(row[i], mass * row[i + 1]);
      }
      for (const b of next) {
        occ[b] += q[b];
        inNext[b] = 0;
      }
      [p, q] = [q, p];
      active = next;
    }
    return occ;
  }

  private rowsCache: Array<Float64Array | undefined> | null = null;
  private normalizedRows(): Array<Float64Array | undefined> {
    if (this.rowsCache) return this.rowsCache;
    const rows: Array<Float64Array | undefined> = new Array(this.states);
    for (const [a, row] of this.transitions) {
      const total = this.rowTotals.get(a)!.n;
      const arr = new Float64Array(row.size * 2);
      let i = 0;
      for (const [b, c] of row) {
        arr[i++] = b;
        arr[i++] = c / total;
      }
      rows[a] = arr;
    }
    return (this.rowsCache = rows);
  }

  /** The other hot-spot regions recorded with state `s` (empty for a state never seen). */
  hotRegionsOf(s: number): number[] {
    return this.profiles.get(s)?.others ?? [];
  }

  /** LWWS of state `s` as sorted page indices (empty for a state never seen). */
  lwws(s: number): Uint32Array {
    const p = this.profiles.get(s);
    if (!p) return EMPTY;
    const out: number[] = [];
    p.lwwsRegions.forEach((r, i) => {
      const base = this.regions.bounds(r)[0];
      const w = p.lwwsBits[i];
      for (let k = 0; k < w.length; k++) {
        let x = w[k];
        while (x !== 0) {
          const t = x & -x;
          out.push(base + (k << 5) + (31 - Math.clz32(t)));
          x ^= t;
        }
      }
    });
    return Uint32Array.from(out);
  }

  /** |LWWS(s)|. */
  lwwsSize(s: number): number {
    const p = this.profiles.get(s);
    let n = 0;
    if (p) for (const w of p.lwwsBits) for (let k = 0; k < w.length; k++) n += popcount(w[k]);
    return n;
  }

  /** target := target ∪ LWWS(s), a word at a time; pages past target.size are dropped. */
  addLwwsTo(s: number, target: PageBitmap): PageBitmap {
    const p = this.profiles.get(s);
    if (!p) return target;
    p.lwwsRegions.forEach((r, i) => {
      const [a, b] = this.regions.bounds(r);
      target.orBitsAt(p.lwwsBits[i], a, b - a);
    });
    return target;
  }

  /** LWWS(s) as a bitmap of `size` pages (default: the model's size). */
  lwwsBitmap(s: number, size = this.totalPages): PageBitmap {
    return this.addLwwsTo(s, new PageBitmap(size));
  }

  /** The observed (maximum-likelihood) probability that b follows a; 0 for a row never seen. */
  transitionProbability(a: number, b: number): number {
    const t = this.rowTotals.get(a);
    return t?.n ? (this.transitions.get(a)!.get(b) ?? 0) / t.n : 0;
  }

  /** Share of samples in each state. */
  stateDistribution(): Float64Array {
    const d = new Float64Array(this.states);
    const n = this.samples;
    if (n) for (let s = 0; s < this.states; s++) d[s] = this.stateCounts[s] / n;
    return d;
  }

  /**
   * The smoothed model the fit test scores against (see goodness-of-fit.ts):
   *
   *   P(b | a) = (1 - q_a) c_ab / n_a  +  q_a pi(b)
   *
   * q_a is the Good-Turing share of unseen transitions of row a (1 for a state with no observed
   * successor), and pi the state distribution with its own Good-Turing share q0 spread evenly
   * over the states never seen. So a transition never seen costs much but not infinitely, and
   * more from a well-observed row than from a rarely-seen one; a state never seen costs more.
   */
  logProb(a: number, b: number): number {
    const { n, q } = this.rowTotals.get(a) ?? { n: 0, q: 1 };
    const c = n ? (this.transitions.get(a)!.get(b) ?? 0) : 0;
    return Math.log((n ? ((1 - q) * c) / n : 0) + q * this.pi(b));
  }

  /**
   * Mean and variance of logProb(a, X) when X follows the smoothed row a: what one transition
   * out of `a` scores on average if the model is right, and how much that varies.
   */
  transitionMoments(a: number): { mean: number; variance: number } {
    const m = this.momentCache;
    if (Number.isNaN(m[2 * a])) {
      const { n, q } = this.rowTotals.get(a) ?? { n: 0, q: 1 };
      const row = this.transitions.get(a);
      let e = 0;
      let e2 = 0;
      for (const b of this.stateOrder) {
        const c = n ? (row!.get(b) ?? 0) : 0;
        const p = (n ? ((1 - q) * c) / n : 0) + q * this.pi(b);
        if (p > 0) {
          const l = Math.log(p);
          e += p * l;
          e2 += p * l * l;
        }
      }
      const unseen = this.states - this.stateOrder.length;
      const pu = q * this.backoff().unseenP;
      if (unseen > 0 && pu > 0) {
        const l = Math.log(pu);
        e += unseen * pu * l;
        e2 += unseen * pu * l * l;
      }
      m[2 * a] = e;
      m[2 * a + 1] = Math.max(0, e2 - e * e);
    }
    return { mean: m[2 * a], variance: m[2 * a + 1] };
  }

  private pi(b: number): number {
    const { q0, unseenP } = this.backoff();
    const c = this.stateCounts[b];
    return c ? ((1 - q0) * c) / this.samples : unseenP;
  }

  private backoff(): { q0: number; unseenP: number } {
    if (!this.backoffCache) {
      const n = this.samples;
      const k = this.stateOrder.length;
      let singles = 0;
      for (const s of this.stateOrder) if (this.stateCounts[s] === 1) singles++;
      const q0 = n === 0 ? 1 : k === this.states ? 0 : Math.min(1, (singles + 1) / (n + 1));
      this.backoffCache = { q0, unseenP: k === this.states ? 0 : q0 / (this.states - k) };
    }
    return this.backoffCache;
  }

  /** The state of a sample under this model, or null when it has no writes. */
  stateOf(sample: PageBitmap): number | null {
    return hotRegions(regionHistogram(sample, this.regions))?.state ?? null;
  }

  /**
   * Memory the model holds, in bytes: typed arrays at their size, each Map entry of the
   * transition rows at a generous 32 bytes, 64 bytes of overhead per object.
   */
  byteSize(): number {
    let b = this.stateCounts.byteLength + this.mostLikely.byteLength + this.momentCache.byteLength + this.stateOrder.length * 8;
    for (const row of this.transitions.values()) b += 64 + row.size * 32 + 48;
    for (const p of this.profiles.values()) {
      b += 64 + (p.others.length + p.lwwsRegions.length) * 8;
      for (const w of p.lwwsBits) b += 64 + w.byteLength;
    }
    return b;
  }

  /**
   * Versioned binary form (`forecopy-source model --out`, `migrate --model`), little-endian u32
   * words:
   *
   *   magic 'FCMM' | version | S | totalPages | lwwsThreshold (f64) | T | P
   *   stateCounts[S]
   *   T x (a, b, count)                                 transitions
   *   P x (s, nOthers, nRegions, others..., nRegions x (region, bitmap words...))
   *   CRC-32 of everything before it
   */
  toBytes(): Uint8Array {
    const words: number[] = [
      MODEL_MAGIC,
      MODEL_FORMAT_VERSION,
      this.states,
      this.totalPages,
      0,
      0,
      this.transitionCount,
      this.profiles.size,
    ];
    for (let s = 0; s < this.states; s++) words.push(this.stateCounts[s]);
    for (const a of [...this.transitions.keys()].sort((x, y) => x - y)) {
      const row = this.transitions.get(a)!;
      for (const b of [...row.keys()].sort((x, y) => x - y)) words.push(a, b, row.get(b)!);
    }
    for (const s of [...this.profiles.keys()].sort((x, y) => x - y)) {
      const p = this.profiles.get(s)!;
      words.push(s, p.others.length, p.lwwsRegions.length, ...p.others);
      p.lwwsRegions.forEach((r, i) => {
        words.push(r);
        for (const w of p.lwwsBits[i]) words.push(w);
      });
    }
    const bytes = new Uint8Array(words.length * 4 + 4);
    const v = new DataView(bytes.buffer);
    words.forEach((w, i) => {
      v.setUint32(i * 4, w >>> 0, true);
    });
    v.setFloat64(16, this.lwwsThreshold, true);
    v.setUint32(words.length * 4, crc32(bytes.subarray(0, words.length * 4)), true);
    return bytes;
  }

  /** Reads toBytes()'s form; throws an Error saying what is wrong with anything else. */
  static fromBytes(bytes: Uint8Array): MarkovModel {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (bytes.byteLength < 8) throw new ModelFormatError('the model file is truncated');
    if (v.getUint32(0, true) !== MODEL_MAGIC) throw new ModelFormatError('not a forecopy model (bad magic)');
    const version = v.getUint32(4, true);
    if (version !== MODEL_FORMAT_VERSION) {
      throw new ModelFormatError(
        `model format version ${version} is not supported (this build reads ${MODEL_FORMAT_VERSION}); build the model again`,
      );
    }
    if (bytes.byteLength < 36 + 4 || bytes.byteLength % 4 !== 0) throw new ModelFormatError('the model file is truncated');
    const end = bytes.byteLength - 4;
    if (crc32(bytes.subarray(0, end)) !== v.getUint32(end, true))
      throw new ModelFormatError('the model file is corrupt (checksum mismatch)');
    let o = 8;
    const u32 = () => {
      if (o + 4 > end) throw new ModelFormatError('the model file is truncated');
      const x = v.getUint32(o, true);
      o += 4;
      return x;
    };
    const states = u32();
    const totalPages = u32();
    if (states < MIN_STATES || states > MAX_STATES)
      throw new ModelFormatError(`the model has ${states} states (${MIN_STATES}..${MAX_STATES} allowed)`);
    const threshold = v.getFloat64(o, true);
    o += 8;
    if (!(threshold > 0 && threshold <= 1)) throw new ModelFormatError(`the model's LWWS threshold ${threshold} is not in (0, 1]`);
    const nTransitions = u32();
    const nProfiles = u32();
    if (nTransitions > states * states || nProfiles > states)
      throw new ModelFormatError('the model has more transitions or states than S allows');
    const regions = new RegionMap(totalPages, states);
    const counts = new Uint32Array(states);
    for (let s = 0; s < states; s++) counts[s] = u32();
    const rows = new Map<number, Map<number, number>>();
    for (let i = 0; i < nTransitions; i++) {
      const a = u32();
      const b = u32();
      const c = u32();
      if (a >= states || b >= states || !counts[a] || !counts[b])
        throw new ModelFormatError(`the transition ${a} -> ${b} names a state outside the model`);
      if (c === 0) throw new ModelFormatError(`the transition ${a} -> ${b} has a zero count`);
      let row = rows.get(a);
      if (!row) rows.set(a, (row = new Map()));
      if (row.has(b)) throw new ModelFormatError(`the transition ${a} -> ${b} appears twice`);
      row.set(b, c);
    }
    const profiles = new Map<number, StateProfile>();
    for (let i = 0; i < nProfiles; i++) {
      const s = u32();
      if (s >= states || !counts[s] || profiles.has(s)) throw new ModelFormatError(`the profile of state ${s} is out of place`);
      const nOthers = u32();
      const nRegions = u32();
      if (nOthers >= states || nRegions > states) throw new ModelFormatError(`state ${s} records more hot regions than there are`);
      const others: number[] = [];
      for (let k = 0; k < nOthers; k++) {
        const r = u32();
        if (r >= states) throw new ModelFormatError(`state ${s} records region ${r} outside the model`);
        others.push(r);
      }
      const lwwsRegions: number[] = [];
      const lwwsBits: Uint32Array[] = [];
      for (let k = 0; k < nRegions; k++) {
        const r = u32();
        if (r >= states || (k > 0 && r <= lwwsRegions[k - 1]))
          throw new ModelFormatError(`state ${s} has an LWWS region ${r} out of order or range`);
        const [a, b] = regions.bounds(r);
        const bits = new Uint32Array((b - a + 31) >>> 5);
        for (let w = 0; w < bits.length; w++) bits[w] = u32();
        lwwsRegions.push(r);
        lwwsBits.push(bits);
      }
      profiles.set(s, { others, lwwsRegions, lwwsBits });
    }
    if (o !== end) throw new ModelFormatError('the model file has trailing bytes');
    return new MarkovModel(regions, threshold, counts, rows, profiles);
  }
}

const EMPTY = new Uint32Array(0);

function popcount(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

/** What the builder accumulates for one state. */
interface StateAccumulator {
  /** hotWith[r]: samples of this state in which region r was hot (r = the state: all of them). */
  hotWith: Uint32Array;
  /** Per tracked region (the state's own first), write counts of its pages. */
  pageCounts: Map<number, Uint16Array>;
}

/**
 * Builds a model from samples (paper 3.3, "Build the Markov model").
 *
 * For each sample: the state is the hottest region (a sample with no writes has no state and is
 * skipped: it neither counts as a visit nor breaks the chain, so A, idle, B counts A -> B); the
 * transition from the previous state is counted; and the writes of the sample are counted per
 * page, within every hot-spot region of the sample (no limit on how many: the paper sets none).
 *
 * Working memory is bounded by a budget, not by a number of regions per state: per state a Uint32
 * per region (how often it was hot with the state: 1 KiB at S = 256), and Uint16 page counts for
 * the (state, region) pairs tracked, at most `countBytesPerPage` bytes per page of the space
 * together (default 16: 4 MiB for 1 GiB, room for every state to track 8 whole regions on
 * average, or some states many more). A state's own region is always tracked. Once the budget is
 * spent, a region newly hot with a state replaces the region that state tracks and that was hot
 * with it least often, once it has been hot more often than that one (space-saving); its pages
 * are counted from then on. Worst case: the budget plus the states' own regions (2 bytes a page).
 */
export class ModelBuilder {
  readonly regions: RegionMap;
  readonly opts: ModelOptions;
  private readonly hist: Uint32Array;
  private readonly counts: Uint32Array;
  private readonly rows = new Map<number, Map<number, number>>();
  private readonly acc = new Map<number, StateAccumulator>();
  private readonly countBudget: number;
  private countBytes = 0;
  private prev: number | null = null;
  private empty = 0;

  constructor(totalPages: number, opts: Partial<ModelOptions> = {}) {
    this.opts = {
      states: opts.states ?? DEFAULT_STATES,
      lwwsThreshold: opts.lwwsThreshold ?? DEFAULT_LWWS_THRESHOLD,
      lwwsBytesPerPage: opts.lwwsBytesPerPage ?? DEFAULT_LWWS_BYTES_PER_PAGE,
      countBytesPerPage: opts.countBytesPerPage ?? DEFAULT_COUNT_BYTES_PER_PAGE,
    };
    const { states, lwwsThreshold, lwwsBytesPerPage, countBytesPerPage } = this.opts;
    if (!isStateCount(states)) {
      throw new RangeError(`states must be a whole number from ${MIN_STATES} to ${MAX_STATES}, got ${states}`);
    }
    if (!(lwwsThreshold > 0 && lwwsThreshold <= 1)) throw new RangeError(`lwwsThreshold must be in (0, 1], got ${lwwsThreshold}`);
    if (!(lwwsBytesPerPage > 0) || !(countBytesPerPage > 0)) throw new RangeError('memory budgets must be > 0 bytes per page');
    this.regions = new RegionMap(totalPages, states);
    this.hist = new Uint32Array(states);
    this.counts = new Uint32Array(states);
    this.countBudget = countBytesPerPage * totalPages;
  }

  /** Samples with writes seen so far. */
  get samples(): number {
    let n = 0;
    for (const c of this.counts) n += c;
    return n;
  }

  /** Samples without writes seen so far (skipped). */
  get emptySamples(): number {
    return this.empty;
  }

  /** The state of the last sample with writes (null before the first). */
  get lastState(): number | null {
    return this.prev;
  }

  /**
   * Continues the chain of `before` (a builder of the samples just before this one's): the first
   * sample here counts as a transition from its last state. For a sliding window of builders.
   */
  continueFrom(before: ModelBuilder): this {
    if (this.prev === null && this.samples === 0) this.prev = before.prev;
    return this;
  }

  /** Feeds one sample (pages written in one interval). Returns its state, or null if it had no writes. */
  observe(sample: PageBitmap): number | null {
    const ws = hotRegions(regionHistogram(sample, this.regions, this.hist));
    if (!ws) {
      this.empty++;
      return null;
    }
    const s = ws.state;
    this.counts[s]++;
    if (this.prev !== null) {
      let row = this.rows.get(this.prev);
      if (!row) this.rows.set(this.prev, (row = new Map()));
      row.set(s, (row.get(s) ?? 0) + 1);
    }
    this.prev = s;
    let acc = this.acc.get(s);
    if (!acc) this.acc.set(s, (acc = { hotWith: new Uint32Array(this.regions.states), pageCounts: new Map() }));
    // Pages past the modelled size (the space grew) are not counted: the model has no room for them.
    const limit = Math.min(sample.size, this.regions.totalPages);
    for (const r of [s, ...ws.others]) {
      acc.hotWith[r]++;
      const c = acc.pageCounts.get(r) ?? this.track(acc, s, r);
      if (!c) continue;
      const [a, b] = this.regions.bounds(r, limit);
      if (a < b) countPages(sample.raw, a, b, c);
    }
    return s;
  }

  /** Starts counting the pages of region r for state s, within the budget; null when r does not get a slot. */
  private track(acc: StateAccumulator, s: number, r: number): Uint16Array | null {
    const [a, b] = this.regions.bounds(r);
    if (r !== s && this.countBytes + (b - a) * 2 > this.countBudget) {
      let victim = -1;
      for (const t of acc.pageCounts.keys()) if (t !== s && (victim < 0 || acc.hotWith[t] < acc.hotWith[victim])) victim = t;
      if (victim < 0 || acc.hotWith[victim] >= acc.hotWith[r]) return null;
      this.countBytes -= acc.pageCounts.get(victim)!.byteLength;
      acc.pageCounts.delete(victim);
    }
    const c = new Uint16Array(b - a);
    this.countBytes += c.byteLength;
    acc.pageCounts.set(r, c);
    return c;
  }

  /** Working memory of the builder, in bytes (same conventions as MarkovModel.byteSize). */
  byteSize(): number {
    let b = this.counts.byteLength + this.hist.byteLength;
    for (const a of this.acc.values()) {
      b += 64 + a.hotWith.byteLength;
      for (const c of a.pageCounts.values()) b += 64 + c.byteLength;
    }
    for (const row of this.rows.values()) b += 64 + row.size * 32;
    return b;
  }

  build(): MarkovModel {
    return ModelBuilder.buildAll([this]);
  }

  /**
   * The model of the samples of several builders together (same space size, S and options): the
   * sum of their counts. A sliding window keeps a builder per stretch of time and builds from the
   * recent ones (SlidingModelBuilder).
   */
  static buildAll(builders: readonly ModelBuilder[]): MarkovModel {
    const first = builders[0];
    if (!first) throw new RangeError('buildAll needs at least one builder');
    for (const b of builders) {
      if (b.regions.totalPages !== first.regions.totalPages || b.regions.states !== first.regions.states)
        throw new RangeError('buildAll: the builders model different spaces');
    }
    const counts = first.counts.slice();
    const rows = new Map<number, Map<number, number>>();
    const accs = new Map<number, StateAccumulator>();
    for (const b of builders) {
      if (b !== first) for (let s = 0; s < counts.length; s++) counts[s] += b.counts[s];
      for (const [a, row] of b.rows) {
        let out = rows.get(a);
        if (!out) rows.set(a, (out = new Map()));
        for (const [t, c] of row) out.set(t, (out.get(t) ?? 0) + c);
      }
      for (const [s, acc] of b.acc) mergeAcc(accs, s, acc, builders.length === 1);
    }
    // A builder that continued the chain of one no longer here starts with a transition from a
    // state of that one: it is not part of the window.
    for (const a of rows.keys()) if (!counts[a]) rows.delete(a);
    const { profiles, trimmed } = buildProfiles(first.regions, first.opts, counts, accs);
    return new MarkovModel(first.regions, first.opts.lwwsThreshold, counts, rows, profiles, trimmed);
  }
}

/** Adds `acc` into `into` (by reference when it is the only one). */
function mergeAcc(into: Map<number, StateAccumulator>, s: number, acc: StateAccumulator, only: boolean): void {
  const out = into.get(s);
  if (!out) {
    into.set(s, only ? acc : { hotWith: acc.hotWith.slice(), pageCounts: new Map([...acc.pageCounts].map(([r, c]) => [r, c.slice()])) });
    return;
  }
  for (let r = 0; r < acc.hotWith.length; r++) out.hotWith[r] += acc.hotWith[r];
  for (const [r, c] of acc.pageCounts) {
    const o = out.pageCounts.get(r);
    if (!o) out.pageCounts.set(r, c.slice());
    else for (let i = 0; i < c.length; i++) o[i] = Math.min(0xffff, o[i] + c[i]);
  }
}

/** One candidate LWWS bitmap: state s, region r, hot in `share` of the state's samples. */
interface LwwsCandidate {
  s: number;
  r: number;
  share: number;
  bits: Uint32Array;
}

/** The states' profiles from their accumulated counts, the LWWS bitmaps within the model's budget. */
function buildProfiles(
  regions: RegionMap,
  opts: ModelOptions,
  counts: Uint32Array,
  accs: Map<number, StateAccumulator>,
): { profiles: Map<number, StateProfile>; trimmed: number } {
  const thr = opts.lwwsThreshold;
  const profiles = new Map<number, StateProfile>();
  const candidates: LwwsCandidate[] = [];
  for (const [s, acc] of accs) {
    // Page counts saturate at 65,535 (a state seen that often: 55 minutes of 50 ms samples).
    const need = Math.max(1, Math.min(0xffff, thr * counts[s]));
    const others: number[] = [];
    for (let r = 0; r < acc.hotWith.length; r++) if (r !== s && acc.hotWith[r] >= need) others.push(r);
    others.sort((x, y) => acc.hotWith[y] - acc.hotWith[x] || x - y);
    profiles.set(s, { others, lwwsRegions: [], lwwsBits: [] });
    for (const r of [s, ...others]) {
      const c = acc.pageCounts.get(r);
      if (!c) continue; // hot with s, but its pages were not counted (the builder's budget)
      const bits = new Uint32Array((c.length + 31) >>> 5);
      let any = false;
      for (let i = 0; i < c.length; i++) {
        if (c[i] >= need) {
          bits[i >>> 5] |= 1 << (i & 31);
          any = true;
        }
      }
      if (any) candidates.push({ s, r, share: r === s ? 2 : acc.hotWith[r] / counts[s], bits });
    }
  }
  // Within the budget: the bitmaps of the regions hot with their state most often (own regions first).
  candidates.sort((x, y) => y.share - x.share || x.s - y.s || x.r - y.r);
  const budget = opts.lwwsBytesPerPage * regions.totalPages;
  let used = 0;
  let trimmed = 0;
  const kept: LwwsCandidate[] = [];
  for (const c of candidates) {
    if (used + c.bits.byteLength > budget && c.r !== c.s) trimmed++;
    else {
      used += c.bits.byteLength;
      kept.push(c);
    }
  }
  kept.sort((x, y) => x.s - y.s || x.r - y.r);
  for (const c of kept) {
    const p = profiles.get(c.s)!;
    p.lwwsRegions.push(c.r);
    p.lwwsBits.push(c.bits);
  }
  return { profiles, trimmed };
}

/**
 * A model over a sliding window of samples (`forecopy-source model --watch`): two builders of
 * `epochSamples` samples each (samples without writes count: the window is a span of time). When
 * the current one is full, the older is dropped and a new one starts, continuing the chain; the
 * model is built from both, so it always covers the last `epochSamples` to 2 x `epochSamples`
 * samples. Memory: two builders.
 */
export class SlidingModelBuilder {
  private older: ModelBuilder | null = null;
  private current: ModelBuilder;

  constructor(
    readonly totalPages: number,
    readonly opts: Partial<ModelOptions>,
    readonly epochSamples: number,
  ) {
    if (!(Number.isInteger(epochSamples) && epochSamples >= 1))
      throw new RangeError(`epochSamples must be a whole number >= 1, got ${epochSamples}`);
    this.current = new ModelBuilder(totalPages, opts);
  }

  /** Samples (with and without writes) the model built now covers. */
  get windowSamples(): number {
    const n = (b: ModelBuilder | null) => (b ? b.samples + b.emptySamples : 0);
    return n(this.older) + n(this.current);
  }

  /** Samples with writes in the window. */
  get samples(): number {
    return (this.older?.samples ?? 0) + this.current.samples;
  }

  observe(sample: PageBitmap): number | null {
    if (this.current.samples + this.current.emptySamples >= this.epochSamples) {
      this.older = this.current;
      this.current = new ModelBuilder(this.totalPages, this.opts).continueFrom(this.older);
    }
    return this.current.observe(sample);
  }

  build(): MarkovModel {
    return ModelBuilder.buildAll(this.older ? [this.older, this.current] : [this.current]);
  }

  byteSize(): number {
    return (this.older?.byteSize() ?? 0) + this.current.byteSize();
  }
}

/** counts[p - start]++ (saturating) for each set page p in [start, end) of the words `w`. */
function countPages(w: Uint32Array, start: number, end: number, counts: Uint16Array): void {
  const k1 = (end - 1) >>> 5;
  for (let k = start >>> 5; k <= k1; k++) {
    let x = w[k];
    while (x !== 0) {
      const t = x & -x;
      x ^= t;
      const p = (k << 5) + (31 - Math.clz32(t)) - start;
      if (p >= 0 && p < end - start && counts[p] < 0xffff) counts[p]++;
    }
  }
}
