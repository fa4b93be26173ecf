import { PageBitmap } from './page-bitmap.js';
import { RegionMap, writeState } from './regions.js';

/**
 * The paper's model (3.1-3.3): memory-write states (the hottest region of each sample), a sparse
 * S x S matrix of transitions between consecutive states, and for each state its local writable
 * working set (LWWS): the pages written in at least `lwwsThreshold` of that state's samples,
 * among the pages of the hot-spot regions recorded with it.
 *
 * Memory: the LWWS are sorted Uint32Array page lists and the transitions a sparse row map, so
 * the model costs O(N + S^2) at worst and, for 1 GiB at S = 256, far less than the paper's
 * 2.79 MB in practice (byteSize() reports it).
 */

/**
 * Default LWWS threshold: a page joins a state's LWWS when it is written in at least a quarter
 * of that state's samples. A state lasts several samples (a hot spot dwells), so a page with a
 * per-sample write chance of 1/4 is written during a stay of n samples with chance 1-(3/4)^n:
 * 94% for n = 10 (500 ms at 50 ms). Holding such a page back saves a resend almost surely; a
 * higher bar (1/2) missed most of a 4 MiB hot spot written at 20,000 pages/s in our traces.
 */
export const DEFAULT_LWWS_THRESHOLD = 0.25;
export const DEFAULT_STATES = 256;
const MODEL_MAGIC = 0x4d4d4346; // 'FCMM' little-endian
const MODEL_VERSION = 1;

export interface ModelOptions {
  states: number;
  lwwsThreshold: number;
}

export class MarkovModel {
  private mostLikely: Int32Array;
  private stateOrder: number[];

  constructor(
    readonly regions: RegionMap,
    readonly lwwsThreshold: number,
    /** Samples seen in each state. */
    readonly stateCounts: Uint32Array,
    /** transitions.get(a).get(b) = times state b followed state a. */
    readonly transitions: Map<number, Map<number, number>>,
    /** LWWS per state (sorted page indices); absent for states never seen. */
    readonly lwwsSets: Map<number, Uint32Array>,
    /** Training transitions' log-likelihoods: mean and standard deviation (for the fit test). */
    readonly trainingLogLik: { mean: number; std: number; n: number },
  ) {
    const s = regions.states;
    this.mostLikely = new Int32Array(s).fill(-1);
    for (const [a, row] of transitions) {
      let best = -1;
      let bestC = 0;
      for (const [b, c] of row) if (c > bestC || (c === bestC && b < best)) (best = b), (bestC = c);
      this.mostLikely[a] = best;
    }
    this.stateOrder = [...Array(s).keys()].filter((x) => stateCounts[x] > 0).sort((a, b) => stateCounts[b] - stateCounts[a] || a - b);
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

  get transitionCount(): number {
    let n = 0;
    for (const row of this.transitions.values()) n += row.size;
    return n;
  }

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
   * state with no observed successor stays where it is.
   */
  mostLikelyNext(s: number): number {
    const n = this.mostLikely[s];
    return n >= 0 ? n : s;
  }

  /** The forecast chain of `steps` states after `curr`. */
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
    const active = new Set<number>([curr]);
    for (let k = 0; k < steps; k++) {
      q.fill(0);
      const next = new Set<number>();
      for (const a of active) {
        const mass = p[a];
        if (mass < 1e-9) continue;
        const row = rows[a];
        if (!row) {
          q[a] += mass;
          next.add(a);
          continue;
        }
        for (let i = 0; i < row.length; i += 2) {
          q[row[i]] += mass * row[i + 1];
          next.add(row[i]);
        }
      }
      for (const b of next) occ[b] += q[b];
      [p, q] = [q, p];
      active.clear();
      for (const b of next) active.add(b);
    }
    return occ;
  }

  private rowsCache: Array<Float64Array | undefined> | null = null;
  private normalizedRows(): Array<Float64Array | undefined> {
    if (this.rowsCache) return this.rowsCache;
    const rows: Array<Float64Array | undefined> = new Array(this.states);
    for (const [a, row] of this.transitions) {
      let total = 0;
      for (const c of row.values()) total += c;
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

  lwws(s: number): Uint32Array {
    return this.lwwsSets.get(s) ?? EMPTY;
  }

  transitionProbability(a: number, b: number): number {
    const row = this.transitions.get(a);
    if (!row) return 0;
    let total = 0;
    for (const c of row.values()) total += c;
    return total ? (row.get(b) ?? 0) / total : 0;
  }

  /**
   * Smoothed log-probability of the transition a -> b (add-alpha over all S successors), so that
   * an unseen transition costs a lot but not infinity.
   */
  logProb(a: number, b: number): number {
    const row = this.transitions.get(a);
    let total = 0;
    if (row) for (const c of row.values()) total += c;
    const c = row?.get(b) ?? 0;
    return Math.log((c + SMOOTHING) / (total + SMOOTHING * this.states));
  }

  stateDistribution(): Float64Array {
    const d = new Float64Array(this.states);
    const n = this.samples;
    if (n) for (let s = 0; s < this.states; s++) d[s] = this.stateCounts[s] / n;
    return d;
  }

  /** The state of a sample under this model, or null when it has no writes. */
  stateOf(sample: PageBitmap): number | null {
    return writeState(this.regions.histogram(sample))?.state ?? null;
  }

  /** Memory the model holds, in bytes. */
  byteSize(): number {
    let b = this.stateCounts.byteLength + this.mostLikely.byteLength + this.stateOrder.length * 8;
    for (const row of this.transitions.values()) b += 64 + row.size * 32; // Map entry overhead, generous
    for (const l of this.lwwsSets.values()) b += 64 + l.byteLength;
    return b;
  }

  /** Versioned binary form, for `forecopy-source model --out` and `migrate --model`. */
  toBytes(): Uint8Array {
    let transitions = 0;
    for (const row of this.transitions.values()) transitions += row.size;
    let lwwsWords = 0;
    for (const l of this.lwwsSets.values()) lwwsWords += 2 + l.length;
    const words = 8 + this.states + 3 * transitions + lwwsWords;
    const buf = new ArrayBuffer(words * 4 + 24);
    const v = new DataView(buf);
    let o = 0;
    const u32 = (x: number) => {
      v.setUint32(o, x >>> 0, true);
      o += 4;
    };
    u32(MODEL_MAGIC);
    u32(MODEL_VERSION);
    u32(this.states);
    u32(this.totalPages);
    v.setFloat64(o, this.lwwsThreshold, true);
    o += 8;
    v.setFloat64(o, this.trainingLogLik.mean, true);
    o += 8;
    v.setFloat64(o, this.trainingLogLik.std, true);
    o += 8;
    u32(this.trainingLogLik.n);
    u32(transitions);
    u32(this.lwwsSets.size);
    for (let s = 0; s < this.states; s++) u32(this.stateCounts[s]);
    for (const [a, row] of this.transitions) for (const [b, c] of row) (u32(a), u32(b), u32(c));
    for (const [s, l] of this.lwwsSets) {
      u32(s);
      u32(l.length);
      for (const p of l) u32(p);
    }
    return new Uint8Array(buf, 0, o);
  }

  static fromBytes(bytes: Uint8Array): MarkovModel {
    const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let o = 0;
    const need = (n: number) => {
      if (o + n > bytes.byteLength) throw new Error('the model file is truncated');
    };
    const u32 = () => {
      need(4);
      const x = v.getUint32(o, true);
      o += 4;
      return x;
    };
    const f64 = () => {
      need(8);
      const x = v.getFloat64(o, true);
      o += 8;
      return x;
    };
    if (u32() !== MODEL_MAGIC) throw new Error('not a forecopy model (bad magic)');
    const version = u32();
    if (version !== MODEL_VERSION) throw new Error(`model format version ${version} is not supported (this build reads ${MODEL_VERSION})`);
    const states = u32();
    const totalPages = u32();
    if (states < 1 || states > 65536) throw new Error(`the model has ${states} states`);
    const threshold = f64();
    const mean = f64();
    const std = f64();
    const n = u32();
    const transitions = u32();
    const lwwsCount = u32();
    if (lwwsCount > states) throw new Error('the model has more LWWS than states');
    const regions = new RegionMap(totalPages, states);
    const counts = new Uint32Array(states);
    for (let s = 0; s < states; s++) counts[s] = u32();
    const rows = new Map<number, Map<number, number>>();
    for (let i = 0; i < transitions; i++) {
      const a = u32();
      const b = u32();
      const c = u32();
      if (a >= states || b >= states) throw new Error('a transition names a state outside the model');
      let row = rows.get(a);
      if (!row) rows.set(a, (row = new Map()));
      row.set(b, c);
    }
    const lwws = new Map<number, Uint32Array>();
    for (let i = 0; i < lwwsCount; i++) {
      const s = u32();
      const len = u32();
      if (s >= states || len > totalPages) throw new Error('an LWWS is out of range');
      need(len * 4);
      const l = new Uint32Array(len);
      for (let k = 0; k < len; k++) {
        l[k] = u32();
        if (l[k] >= totalPages) throw new Error('an LWWS page is outside the model');
      }
      lwws.set(s, l);
    }
    if (o !== bytes.byteLength) throw new Error('the model file has trailing bytes');
    return new MarkovModel(regions, threshold, counts, rows, lwws, { mean, std, n });
  }
}

const EMPTY = new Uint32Array(0);
/** Add-alpha smoothing of transition probabilities. */
const SMOOTHING = 0.01;

/**
 * Builds a model from samples (paper 3.3, "Build the Markov model"). Working memory: per state,
 * a Uint16 write count for each page of the regions recorded hot with it.
 */
export class ModelBuilder {
  readonly regions: RegionMap;
  private readonly hist: Uint32Array<ArrayBufferLike>;
  private readonly counts: Uint32Array;
  private readonly rows = new Map<number, Map<number, number>>();
  /** state -> region -> per-page write counts over that state's samples */
  private readonly pageCounts = new Map<number, Map<number, Uint16Array>>();
  private prev: number | null = null;
  private readonly sequence: number[] = [];
  readonly opts: ModelOptions;

  constructor(totalPages: number, opts: Partial<ModelOptions> = {}) {
    this.opts = { states: opts.states ?? DEFAULT_STATES, lwwsThreshold: opts.lwwsThreshold ?? DEFAULT_LWWS_THRESHOLD };
    if (!(this.opts.lwwsThreshold > 0 && this.opts.lwwsThreshold <= 1)) throw new RangeError('lwwsThreshold must be in (0, 1]');
    this.regions = new RegionMap(totalPages, this.opts.states);
    this.hist = new Uint32Array(this.opts.states);
    this.counts = new Uint32Array(this.opts.states);
  }

  /** Feeds one sample (pages written in one interval). Returns its state, or null if it had no writes. */
  observe(sample: PageBitmap): number | null {
    const ws = writeState(this.regions.histogram(sample, this.hist));
    if (!ws) return null;
    const s = ws.state;
    this.counts[s]++;
    this.sequence.push(s);
    if (this.prev !== null) {
      let row = this.rows.get(this.prev);
      if (!row) this.rows.set(this.prev, (row = new Map()));
      row.set(s, (row.get(s) ?? 0) + 1);
    }
    this.prev = s;
    let perRegion = this.pageCounts.get(s);
    if (!perRegion) this.pageCounts.set(s, (perRegion = new Map()));
    const limit = this.regions.totalPages;
    for (const r of [s, ...ws.others]) {
      const [a, b] = this.regions.bounds(r, Math.min(sample.size, limit));
      if (a >= b) continue;
      let c = perRegion.get(r);
      if (!c) perRegion.set(r, (c = new Uint16Array(this.regions.bounds(r)[1] - this.regions.bounds(r)[0])));
      const base = a;
      const arr = c;
      forEachSetIn(sample, a, b, (p) => {
        if (arr[p - base] < 0xffff) arr[p - base]++;
      });
    }
    return s;
  }

  /** Working memory of the builder, in bytes. */
  byteSize(): number {
    let b = this.counts.byteLength + this.hist.byteLength + this.sequence.length * 8;
    for (const m of this.pageCounts.values()) for (const c of m.values()) b += c.byteLength + 64;
    for (const row of this.rows.values()) b += 64 + row.size * 32;
    return b;
  }

  build(): MarkovModel {
    const lwws = new Map<number, Uint32Array>();
    for (const [s, perRegion] of this.pageCounts) {
      const need = this.opts.lwwsThreshold * this.counts[s];
      const pages: number[] = [];
      for (const [r, c] of [...perRegion].sort((x, y) => x[0] - y[0])) {
        const base = this.regions.bounds(r)[0];
        for (let i = 0; i < c.length; i++) if (c[i] > 0 && c[i] >= need) pages.push(base + i);
      }
      if (pages.length) lwws.set(s, Uint32Array.from(pages));
    }
    const rows = new Map<number, Map<number, number>>();
    for (const [a, row] of this.rows) rows.set(a, new Map(row));
    const model = new MarkovModel(this.regions, this.opts.lwwsThreshold, this.counts.slice(), rows, lwws, { mean: 0, std: 0, n: 0 });
    // The model's own transitions scored by the model: the yardstick of the fit test.
    const lls: number[] = [];
    for (let i = 1; i < this.sequence.length; i++) lls.push(model.logProb(this.sequence[i - 1], this.sequence[i]));
    const mean = lls.length ? lls.reduce((a, b) => a + b, 0) / lls.length : 0;
    const std = lls.length > 1 ? Math.sqrt(lls.reduce((a, b) => a + (b - mean) ** 2, 0) / (lls.length - 1)) : 0;
    return new MarkovModel(this.regions, this.opts.lwwsThreshold, this.counts.slice(), rows, lwws, { mean, std, n: lls.length });
  }
}

/** Calls fn for each set page in [a, b) of a bitmap. */
function forEachSetIn(b: PageBitmap, start: number, end: number, fn: (p: number) => void): void {
  const w = b.raw;
  for (let k = start >>> 5; k <= (end - 1) >>> 5 && k < w.length; k++) {
    let x = w[k];
    while (x !== 0) {
      const t = x & -x;
      const p = (k << 5) + (31 - Math.clz32(t));
      x ^= t;
      if (p >= start && p < end) fn(p);
    }
  }
}
