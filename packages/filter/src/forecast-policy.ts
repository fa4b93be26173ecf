import { PageBitmap } from './page-bitmap.js';
import { XEN_DEFAULT_STOP_RULES, type Policy, type RoundContext, type RoundRecord, type StopRules } from './policy.js';
import { ForecastModel } from './forecast-model.js';

// `--policy forecast`: an online data filter that needs no offline model and no choice of S.
//
// It learns from every whole sample it is shown, before the migration (the modelling window) and
// during it (ForecastModel: per page the last write, per region the gaps between writes, at the
// region size that forecasts best). When a round is planned it forecasts, for each
// unsynchronized page, the probability p that it is written again before the round's end (the
// round lasts |send list| / link rate), and decides by cost rather than by a fixed threshold:
//
// - sending a page that is written again wastes one page of link (expected cost p);
// - holding a page back costs nothing now; the page is sent in a later round, where it is one
//   page more to send, and if it is still held when the migration stops it adds to downtime
//   (expected cost 1 - p while the stop is far). Hold when p > 1 - p, i.e. p > 1/2.
// - Near the stop holding costs downtime, so the filter stops holding (`converging`) once the
//   rounds it has left are about the rounds a pre-copy tail needs to converge from here, once the
//   rest is within twice the downtime limit (when there is one), once
//   the send list would be the held pages alone (holding longer saves nothing more), or before
//   the data limit (maxFactor). It does this only if sending the held pages converges: if the
//   process would write as many pages during that round as it sends, the held pages are part of
//   any final round and holding them to the end costs no extra downtime.
// - A round shorter than one sample is not filtered: the forecast cannot see into it, and a
//   round that holds pages waits for the next sample.
// - Pages written again during the round are skipped batch by batch (Xen's to_skip): they are
//   unsynchronized again already, whatever the forecast said.

export interface ForecastPolicyOptions {
  /** The sampling interval, ms (one step of the forecast). */
  intervalMs: number;
  /** Pages per second to assume while the link is unmeasured; 0 = unknown (nothing is held). */
  initialPageRate: number;
  /** The driver's stop rules: the filter stops holding back before they fire. */
  stopRules: StopRules;
}

/** A pre-copy tail needs at least this many rounds; the filter stops holding this many (or more) before the last. */
const MIN_TAIL_ROUNDS = 2;
/** A steady state: the rest is at least this share of what it was STEADY_ROUNDS rounds before. */
const STEADY_SHRINK = 0.7;
const STEADY_ROUNDS = 3;
/** The rest of the migration is estimated as at most 1 / (1 - this) rounds' worth. */
const HORIZON_RHO_CAP = 0.9;
/** Near the end, sending the rest wins if it leaves a final round this much smaller than holding. */
const END_CHOICE = 0.9;
/** Pre-copy settles (a steady state) if a few rounds from a flush leave more than this share of the rest. */
const SETTLES = 0.5;
const SETTLE_ROUNDS = 4;
/** A flush converges when the pages written during it are at most this share of what it sends. */
const CONVERGES = 0.9;

export interface ForecastPolicyStatus extends Record<string, unknown> {
  regionPages: number;
  modelBytes: number;
  samples: number;
  converging: boolean;
  convergingFromRound: number | null;
  perRoundHeldPages: number[];
  perRoundForecastMs: number[];
  perSampleMs: number;
}

export class ForecastPolicy implements Policy {
  readonly name = 'forecast';
  readonly skipRedirtied = true;
  readonly model: ForecastModel;
  private readonly opts: ForecastPolicyOptions;
  private converging = false;
  private lastRate = 0;
  /** The unsynchronized pages of each round planned since converging began. */
  private readonly tailPages: number[] = [];
  private convergingFrom: number | null = null;
  private sent = 0;
  readonly heldPages: number[] = [];
  readonly forecastMs: number[] = [];
  private sampleMs = 0;

  constructor(totalPages: number, opts: Partial<ForecastPolicyOptions> = {}) {
    this.opts = {
      intervalMs: opts.intervalMs ?? 50,
      initialPageRate: opts.initialPageRate ?? 0,
      stopRules: opts.stopRules ?? XEN_DEFAULT_STOP_RULES,
    };
    if (!(this.opts.intervalMs > 0)) throw new RangeError(`intervalMs must be > 0, got ${this.opts.intervalMs}`);
    if (!(this.opts.initialPageRate >= 0)) throw new RangeError(`initialPageRate must be >= 0, got ${this.opts.initialPageRate}`);
    this.model = new ForecastModel(totalPages);
  }

  /** Pages the last plan held back (0 before any). */
  get heldLastPlan(): number {
    return this.heldPages.at(-1) ?? 0;
  }

  get isConverging(): boolean {
    return this.converging;
  }

  observeSample(sample: PageBitmap): void {
    const t = performance.now();
    if (sample.size !== this.model.totalPages) this.model.resize(sample.size);
    this.model.observe(sample);
    this.sampleMs += performance.now() - t;
  }

  observeRound(r: RoundRecord): void {
    this.sent += r.pagesSent;
  }

  resize(totalPages: number): void {
    this.model.resize(totalPages);
  }

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const t = performance.now();
    const held = this.plan(unsynced, ctx);
    this.forecastMs.push(performance.now() - t);
    this.heldPages.push(held.count());
    return held;
  }

  private plan(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const held = new PageBitmap(unsynced.size);
    const rate = ctx.pageRate > 0 ? ctx.pageRate : this.opts.initialPageRate;
    this.lastRate = rate;
    if (rate <= 0 || this.model.samples === 0) return held;
    if (unsynced.size !== this.model.totalPages) this.model.resize(unsynced.size);
    const perSample = (rate * this.opts.intervalMs) / 1000;
    const u = unsynced.count();
    const h = u / perSample; // the round's length in samples if everything were sent
    if (this.converging) return this.steadyHold(unsynced, u, perSample, held, ctx.round >= this.opts.stopRules.maxRounds);
    if (h < 1) return held;
    const m = this.model;
    // A page sent now is wasted if written again before the migration ends: after this round come
    // the rounds that send what it dirties, each about rho times shorter (rho: pages written per
    // page sent), so the rest of the migration lasts about h / (1 - rho).
    const written = m.expectedWritten(h);
    const rho = Math.min(HORIZON_RHO_CAP, written / u);
    // Would sending everything now let pre-copy converge? If not, the held pages are in any
    // final round, and holding them costs no downtime.
    // (A rest that settles under two samples' worth still ends: sooner or later a round that short
    // catches no sample of writes.)
    const settled = this.settlesAt(written);
    const convergent = written / u <= CONVERGES && (settled <= SETTLES * u || settled < 2 * perSample);
    const end = this.endNear(ctx, u, written, convergent);
    if (end === 'limit' || (end && convergent)) return this.startConverging(ctx.round, held);
    if (end) return this.endHold(unsynced, u, perSample, held);
    // The pages due before the migration ends; if holding them all is not worth it, the pages due
    // before this round ends; if not those either, none.
    for (const horizon of [h / (1 - rho), h]) {
      held.clearAll();
      const saving = m.addLikely(unsynced, horizon, 0.5, held);
      const kept = held.count();
      if (kept === 0) return held;
      if (!convergent || !this.notWorthIt(u, kept, saving, perSample)) return held;
    }
    return this.startConverging(ctx.round, held);
  }

  private startConverging(round: number, held: PageBitmap): PageBitmap {
    this.converging = true;
    this.convergingFrom = round;
    held.clearAll();
    return held;
  }

  /**
   * Holding is not worth it when the round would only wait (the send list without the held pages
   * is under one sample), or when the pages it saves are fewer than the process writes in the
   * round (at least one sample long) that holding adds.
   */
  private notWorthIt(u: number, kept: number, saving: number, perSample: number): boolean {
    return u - kept < perSample || saving <= this.model.expectedWritten(1);
  }

  /**
   * Whether the stop is near: the rest is within twice the downtime limit (the driver stops as
   * soon as it fits it: a page held then is a page of downtime); the rounds left are what a
   * pre-copy tail needs to converge from here (a couple when it will not converge); or the data
   * cap is two rounds away.
   */
  private endNear(ctx: RoundContext, u: number, written: number, convergent: boolean): 'limit' | 'rounds' | 'data' | null {
    const rules = this.opts.stopRules;
    if (rules.downtimeLimitMs !== undefined && (u / this.lastRate) * 1000 <= 2 * rules.downtimeLimitMs) return 'limit';
    const ratio = written / u;
    const floor = Math.max(1, rules.minRemainingPages);
    const converge = convergent && ratio > 0 ? Math.min(20, Math.ceil(Math.log(u / floor) / Math.log(1 / Math.max(ratio, 1e-3)))) : 0;
    if (ctx.round + MIN_TAIL_ROUNDS + converge >= rules.maxRounds) return 'rounds';
    if (this.sent + u * 2 >= rules.maxFactor * this.model.totalPages) return 'data';
    return null;
  }

  /**
   * After the held pages were sent: while the rest shrinks, pre-copy is converging and nothing is
   * held (a round that holds waits for a sample, which would slow it down). When it stops
   * shrinking (a steady state: the process writes as much per round as the round sends, and only
   * the round cap will end the migration), pages forecast to be written again within the round
   * itself are held: they would be unsynchronized at its end anyway, so holding them costs no
   * downtime and saves sending them every round (what TPO and the paper's filter do for a hot set).
   */
  private steadyHold(unsynced: PageBitmap, u: number, perSample: number, held: PageBitmap, last: boolean): PageBitmap {
    const tail = this.tailPages;
    tail.push(u);
    // The last round: what it holds goes into the final one, with what is written while it waits.
    if (last) return held;
    const k = tail.length;
    const floor = 4 * Math.max(1, this.opts.stopRules.minRemainingPages);
    const steady = k > STEADY_ROUNDS && u >= STEADY_SHRINK * tail[k - 1 - STEADY_ROUNDS] && u > floor;
    // Only rounds a sample long anyway: a shorter one may catch no write at all and end it.
    if (steady && u >= perSample) this.model.addLikely(unsynced, u / perSample, 0.5, held);
    return held;
  }

  /**
   * Near the end of a migration that will not converge, what remains when it stops is what is
   * held plus what the last round catches. Two choices: hold every page due within the time of
   * the whole send list (H0: the rounds are then short, the final round has H0 and one sample's
   * writes), or only those due within the round as it runs when the rest is sent (H1, due within
   * h1 = |unsynced - H0| / rate: the final round has H1 and what is written while the rest is
   * sent). The smaller final round wins; when they are about equal (everything is rewritten
   * within a round anyway), H0, which sends fewer pages.
   */
  private endHold(unsynced: PageBitmap, u: number, perSample: number, held: PageBitmap): PageBitmap {
    const m = this.model;
    m.addLikely(unsynced, u / perSample, 0.5, held);
    const h0 = held.count();
    const h1 = Math.max(1, (u - h0) / perSample);
    const within = new PageBitmap(unsynced.size);
    m.addLikely(unsynced, h1, 0.5, within);
    const finalHolding = h0 + m.expectedWritten(1);
    const finalSending = within.count() + m.expectedWritten((u - within.count()) / perSample);
    return finalSending < END_CHOICE * finalHolding ? within : held;
  }

  /**
   * Where pre-copy's rest settles from here: each round sends the last one's writes, so the rest
   * follows u <- written(u / link rate), a few rounds of it from the pages written during a flush.
   */
  private settlesAt(written: number): number {
    const rate = this.lastRate;
    if (!(rate > 0)) return written;
    const perSample = (rate * this.opts.intervalMs) / 1000;
    let u = written;
    for (let i = 0; i < SETTLE_ROUNDS && u / perSample >= 1; i++) u = Math.min(u, this.model.expectedWritten(u / perSample));
    return u;
  }

  status(): ForecastPolicyStatus {
    return {
      regionPages: this.model.regionPages,
      regionScores: this.model.scores,
      modelBytes: this.model.byteSize(),
      samples: this.model.samples,
      converging: this.converging,
      convergingFromRound: this.convergingFrom,
      perRoundHeldPages: [...this.heldPages],
      perRoundForecastMs: this.forecastMs.map((x) => Math.round(x * 1000) / 1000),
      perSampleMs: this.model.samples ? this.sampleMs / this.model.samples : 0,
    };
  }
}
