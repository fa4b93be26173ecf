import { ModelFormatError } from './errors.js';
import { PageBitmap } from './page-bitmap.js';
import { MAX_HOT, MAX_STATES, MIN_STATES, RegionMap, hotRegions, isStateCount, regionHistogram } from './regions.js';
import { crc32 } from './crc32.js';

// The paper's model (3.1-3.3): memory-write states (the hottest region of each sample), a sparse
// S x S matrix of transitions between consecutive states, and for each observed state the other
// hot-spot regions recorded with it and its local writable working set (LWWS): the pages of
// those regions written in at least `lwwsThreshold` of the state's samples.
//
// Memory, and why it is bounded: an LWWS only holds pages of the state's own region and of at
// most MAX_HOT - 1 recorded regions, and it is kept as one packed bitmap per region (a region of
// 1,024 pages is 128 bytes), not as a list of page numbers:
//
//   state s ─┬─ others:      [r2, r7]              regions hot with s, hottest first
//            └─ LWWS:        r5  ▕0110…0001▏       128 B per region at 4 MiB regions
//                            r7  ▕0000…1000▏
//
// So for 1 GiB at S = 256 the LWWS cost at most 256 x 8 x 128 B = 256 KiB whatever the workload
// (a page list could reach 8 MiB), the transitions at most S^2 entries, and the whole model stays
// within the paper's O(N + S^2) and its 2.79 MB. byteSize() reports the actual figure.

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

const MODEL_MAGIC = 0x4d4d4346; // 'FCMM' little-endian
/** Version 2: LWWS as per-region bitmaps, recorded hot regions, CRC-32 trailer. */
export const MODEL_FORMAT_VERSION = 2;

export interface ModelOptions {
  /** S: regions = states, MIN_STATES..MAX_STATES (default 256). */
  states: number;
  /** Share of a state's samples a page must be written in to join its LWWS, (0, 1]. */
  lwwsThreshold: number;
}

/** What the model keeps about one observed state. */
export interface StateProfile {
  /** Other hot-spot regions recorded with the state, hottest first (at most MAX_HOT - 1). */
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
      if (nOthers >= MAX_HOT || nRegions > MAX_HOT) throw new ModelFormatError(`state ${s} records more than ${MAX_HOT} hot regions`);
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
  /** Per tracked region (at most MAX_HOT, the state's own first), write counts of its pages. */
  pageCounts: Map<number, Uint16Array>;
}

/**
 * Builds a model from samples (paper 3.3, "Build the Markov model").
 *
 * For each sample: the state is the hottest region (a sample with no writes has no state and is
 * skipped: it neither counts as a visit nor breaks the chain, so A, idle, B counts A -> B); the
 * transition from the previous state is counted; and the writes of the sample are counted per
 * page, but only within the state's hot-spot regions.
 *
 * Working memory is bounded: per state, a Uint32 per region (how often it was hot with the
 * state: 1 KiB at S = 256) and Uint16 page counts for at most MAX_HOT regions. When an eighth
 * "other" region turns up, it replaces the tracked region hot least often, once it has been hot
 * more often than that one (space-saving); its pages are counted from then on. A region must be
 * hot in at least lwwsThreshold of a state's samples for any of its pages to qualify, and such a
 * region keeps its slot. Worst case for 1 GiB at S = 256: 256 x 8 x 2 KiB = 4 MiB of counts.
 */
export class ModelBuilder {
  readonly regions: RegionMap;
  readonly opts: ModelOptions;
  private readonly hist: Uint32Array;
  private readonly counts: Uint32Array;
  private readonly rows = new Map<number, Map<number, number>>();
  private readonly acc = new Map<number, StateAccumulator>();
  private prev: number | null = null;
  private empty = 0;

  constructor(totalPages: number, opts: Partial<ModelOptions> = {}) {
    this.opts = { states: opts.states ?? DEFAULT_STATES, lwwsThreshold: opts.lwwsThreshold ?? DEFAULT_LWWS_THRESHOLD };
    const { states, lwwsThreshold } = this.opts;
    if (!isStateCount(states)) {
      throw new RangeError(`states must be a whole number from ${MIN_STATES} to ${MAX_STATES}, got ${states}`);
    }
    if (!(lwwsThreshold > 0 && lwwsThreshold <= 1)) throw new RangeError(`lwwsThreshold must be in (0, 1], got ${lwwsThreshold}`);
    this.regions = new RegionMap(totalPages, states);
    this.hist = new Uint32Array(states);
    this.counts = new Uint32Array(states);
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
      let c = acc.pageCounts.get(r);
      if (!c) {
        if (acc.pageCounts.size >= MAX_HOT) {
          let victim = -1;
          for (const t of acc.pageCounts.keys()) if (t !== s && (victim < 0 || acc.hotWith[t] < acc.hotWith[victim])) victim = t;
          if (victim < 0 || acc.hotWith[victim] >= acc.hotWith[r]) continue;
          acc.pageCounts.delete(victim);
        }
        const [a, b] = this.regions.bounds(r);
        acc.pageCounts.set(r, (c = new Uint16Array(b - a)));
      }
      const [a, b] = this.regions.bounds(r, limit);
      if (a < b) countPages(sample.raw, a, b, c);
    }
    return s;
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
    const thr = this.opts.lwwsThreshold;
    const profiles = new Map<number, StateProfile>();
    for (const [s, acc] of this.acc) {
      // Page counts saturate at 65,535 (a state seen that often: 55 minutes of 50 ms samples).
      const need = Math.max(1, Math.min(0xffff, thr * this.counts[s]));
      const others = [...acc.pageCounts.keys()]
        .filter((r) => r !== s && acc.hotWith[r] >= need)
        .sort((x, y) => acc.hotWith[y] - acc.hotWith[x] || x - y)
        .slice(0, MAX_HOT - 1);
      const lwwsRegions: number[] = [];
      const lwwsBits: Uint32Array[] = [];
      for (const r of [s, ...others].sort((x, y) => x - y)) {
        const c = acc.pageCounts.get(r)!;
        const bits = new Uint32Array((c.length + 31) >>> 5);
        let any = false;
        for (let i = 0; i < c.length; i++) {
          if (c[i] >= need) {
            bits[i >>> 5] |= 1 << (i & 31);
            any = true;
          }
        }
        if (any) {
          lwwsRegions.push(r);
          lwwsBits.push(bits);
        }
      }
      profiles.set(s, { others, lwwsRegions, lwwsBits });
    }
    const rows = new Map<number, Map<number, number>>();
    for (const [a, row] of this.rows) rows.set(a, new Map(row));
    return new MarkovModel(this.regions, thr, this.counts.slice(), rows, profiles);
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
