import { PageBitmap } from './page-bitmap.js';
import {
  XEN_DEFAULT_STOP_RULES,
  limitRate,
  restFitsLimit,
  type Policy,
  type RoundContext,
  type RoundRecord,
  type StopRules,
} from './policy.js';
import { ForecastModel } from './forecast-model.js';
import { MappingLifetimes } from './lifetimes.js';

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
//   rounds it has left are about the rounds a pre-copy tail needs to converge from here (while
//   auto-converge's throttle can still rise: the rounds it needs to reach its highest, then a
//   tail at that throttle, for the held pages are best sent while the process writes least), once the
//   rest is within twice the downtime limit (when there is one), once
//   the send list would be the held pages alone (holding longer saves nothing more), or before
//   the data limit (maxFactor). It does this only if sending the held pages converges: if the
//   process would write as many pages during that round as it sends, the held pages are part of
//   any final round and holding them to the end costs no extra downtime.
// - With a downtime limit (QEMU's rule) a round can be the last: once the pages written while
//   everything is sent would fit the limit, a held page is a page of the final round or, if the
//   held pages do not fit, the reason for a whole extra round (its writes to send, and under
//   auto-converge a tighter throttle). So there it holds only pages likely to be written again
//   while the round runs, which are in the final round whether held or sent, and only if the
//   final round it forecasts is no larger than sending everything leaves and fits the limit
//   (`lastRoundHold`).
// - Under auto-converge, a steady state's hold that would let the driver stop (the held pages and
//   what is written meanwhile fit the limit) puts the held pages in the final round while the
//   throttle could still shrink it: there it holds everything, the round writes more than it
//   sends, and the throttle rises, up to its highest; then the hold is as before (`steadyHold`).
//   (sqlite rewriting 86% of its pages every sample, in the simulator: a final round of 3,642
//   pages at a 90% throttle, 417 at 99%.)
// - The round before that one: when the next round's writes would fit the limit, the driver stops
//   after it, and its writes are the final round. A page held now and not written meanwhile is
//   sent in it and lengthens it, so the hold there keeps only pages likely enough that the final
//   round grows by no more than the forecast's resolution (`beforeLast`).
// - Horizons are in the process's own time: under auto-converge's throttle the process runs only
//   part of the time (RoundContext.throttlePercent), and a page due within 40 of its samples is
//   not due within 40 samples of a process stopped 99% of the time. Without this, held pages of
//   a throttled process are forecast due round after round and never written, and the held
//   pages keep the rest over the limit until the round cap (the compile job, live).
// - The link rate is the best measured: a round of a few pages measures the round trip.
// - The round after which the round cap or the data cap stops the migration (`lastHold`) holds
//   a set only if the final round it forecasts (every held page, and what is written while the
//   round runs that was not held) is no larger than sending everything would leave, to within
//   the forecast's resolution (the smaller of sqrt of the count and one sample's writes);
//   otherwise nothing. After it the round does not wait for a sample.
// - A round shorter than one sample is not filtered: the forecast cannot see into it, and a
//   round that holds pages waits for the next sample.
// - Pages written again during the round are skipped batch by batch (Xen's to_skip): they are
//   unsynchronized again already, whatever the forecast said.
// - A page whose mapping will be unmapped before the migration ends need never be sent. Shown the
//   pages mapped at each sample, it learns how long the process's mappings live
//   (MappingLifetimes) and, while the stop is far, also holds the pages of a mapping more likely
//   than not to be gone within the rest of the migration (holdGone).

/** How the last round's hold is judged (lastHold): by default at 1/2, over every unsynchronized page, with no limit. */
interface LastHoldOptions {
  /** Whether a forecast final round of this many pages fits (lastRoundHold: the downtime limit). */
  fits?: (final: number) => boolean;
  /** "Due": forecast to be written with a probability over this. */
  threshold?: number;
  /** The pages looked at: a superset of H0. */
  candidates?: PageBitmap;
  /** Where H0 is left, for a narrower threshold to look at only those. */
  h0?: PageBitmap;
  /** The candidates are a subset of the pages of the plan's pass that recorded their ages (the model's census): skim by it. */
  skim?: boolean;
}

/**
 * A round's length in samples when it holds `kept` of its `u` pages: at least one (a shorter one
 * may still catch a sample's writes).
 */
function roundHolding(u: number, kept: number, perSample: number): number {
  return Math.max(1, (u - kept) / perSample);
}

/**
 * Adds to `held` the `n` highest-numbered pages of `pages` (all of them if fewer): a binary search
 * for where the top `n` begin.
 */
function holdHighest(pages: PageBitmap, n: number, held: PageBitmap): PageBitmap {
  const size = pages.size;
  let lo = 0;
  let hi = size;
  while (lo < hi) {
    const mid = (lo + hi + 1) >>> 1;
    if (pages.countRange(mid, size) >= n) lo = mid;
    else hi = mid - 1;
  }
  pages.clearRange(0, lo);
  return held.or(pages);
}

export interface ForecastPolicyOptions {
  /** The sampling interval, ms (one step of the forecast). */
  intervalMs: number;
  /** Pages per second to assume while the link is unmeasured; 0 = unknown (nothing is held). */
  initialPageRate: number;
  /** The driver's stop rules: the filter stops holding back before they fire. */
  stopRules: StopRules;
  /** Under a downtime limit, keep the migration going a round rather than end on a round far longer than the limit (splitLast); default on. */
  splitLast: boolean;
  /** Under a downtime limit, run one round past the first whose rest fits it (extendPastFit); default on. */
  extendPastFit: boolean;
}

/** A pre-copy tail needs at least this many rounds; the filter stops holding this many (or more) before the last. */
const MIN_TAIL_ROUNDS = 2;
/** A steady state: the rest is at least this share of what it was STEADY_ROUNDS rounds before. */
const STEADY_SHRINK = 0.7;
const STEADY_ROUNDS = 3;
/** The rest of the migration is estimated as at most 1 / (1 - this) rounds' worth. */
const HORIZON_RHO_CAP = 0.9;
/** Pre-copy settles (a steady state) if a few rounds from a flush leave more than this share of the rest. */
const SETTLES = 0.5;
const SETTLE_ROUNDS = 4;
/** Near the end, sending the rest wins if it leaves a final round this much smaller than holding. */
const END_CHOICE = 0.9;
/** A flush converges when the pages written during it are at most this share of what it sends. */
const CONVERGES = 0.9;
/** In the last round and the one before it (under a downtime limit), the thresholds over 1/2 tried in turn for a hold that does not grow the final round. */
const BEFORE_LAST_THRESHOLDS = [0.75, 0.9, 0.97];
/** The last round is split (splitLast) by holding this many times the pages the limit lets the freeze have. */
const SPLIT_MARGIN = 1.5;
/** Whole samples taken at the throttle in force before the pages they wrote measure the process's pace (paceShare). */
const PACE_SAMPLES = 10;
/** The pace is measured over at most this many of the latest samples at that throttle. */
const PACE_WINDOW = 40;
/** Pages written within the window this close to what the process wrote at full speed within as many samples: the writes cannot tell its pace (paceShare). */
const PACE_SATURATED = 0.9;
/** At least this many of the pages the count looks at written (about 4,096 of them, spread over the space): a coarser count is noise (paceShare). */
const PACE_HITS = 50;
/**
 * The writes' share overrules the CPU's only when it is this much larger: within it the two
 * agree to within the noise of a few dozen samples' counts (in the simulator, whose throttle
 * thins the writes by exactly its share, the writes read 0.20-0.21 at 80% and 0.10-0.11 at 90%).
 */
const PACE_MARGIN = 1.25;
/** Auto-converge throttles to 99% at most: the process runs at least this share of the time. */
const MIN_RUNNING = 0.01;
/**
 * The spans, in samples of the process's own time, at which the model's forecast of the pages
 * written at full speed is kept (paceShare's curve): from one sample (within one the model has
 * seen nothing) to the window's 40.
 */
const PACE_GRID = [1, 1.5, 2, 3, 4, 6, 8, 12, 20, PACE_WINDOW];

/** The share of the time a process runs under auto-converge's throttle of `percent`. */
function runningShare(percent: number): number {
  return Math.max(MIN_RUNNING, 1 - percent / 100);
}

export interface ForecastPolicyStatus extends Record<string, unknown> {
  regionPages: number;
  modelBytes: number;
  /** Pages of mappings born while watched whose mapping has ended (what the lifetimes are learned from). */
  mappingPagesEnded: number;
  samples: number;
  converging: boolean;
  convergingFromRound: number | null;
  perRoundHeldPages: number[];
  /**
   * The throttle each round was planned for (RoundContext.throttlePercent; 0 without auto-converge),
   * beside perRoundHeldPages: the throttle the round then ran at, as auto-converge weighs each
   * round before the next is planned.
   */
  perRoundThrottlePercent: number[];
  /**
   * The share of the time each round was planned to run the process at (1 unthrottled; 100% less
   * the throttle, or what was measured of it: RoundContext.ranShare), beside perRoundThrottlePercent.
   */
  perRoundRunningShare: number[];
  /**
   * Beside perRoundRunningShare: the share the process's writes showed at the round's throttle
   * (paceShare: the pages its last samples wrote, against the model's forecast at full speed),
   * or null where they cannot tell (too few samples at it, or a hot set written whole). Planned at
   * where it is well over the CPU's.
   */
  perRoundWriteShare: Array<number | null>;
  /** The rounds that held back more than the limit's worth so as not to end on a round far longer than the limit (splitLast). */
  splitRounds: number[];
  /** The round run past the first that fitted the downtime limit (extendPastFit), or null. */
  extendedRound: number | null;
  perRoundForecastMs: number[];
  perSampleMs: number;
}

export class ForecastPolicy implements Policy {
  readonly name = 'forecast';
  readonly skipRedirtied = true;
  readonly model: ForecastModel;
  /** How long the process's mappings live (pages of one likely gone before the migration ends are held). */
  readonly lifetimes = new MappingLifetimes();
  private readonly opts: ForecastPolicyOptions;
  private converging = false;
  private lastRate = 0;
  private peakRate = 0;
  /** The share of the time the process runs (1 - auto-converge's throttle). */
  private running = 1;
  /** expectedWritten by horizon, for the plan being made (the model does not change while planning). */
  private readonly writtenMemo = new Map<number, number>();
  /** The unsynchronized pages of each round planned since converging began. */
  private readonly tailPages: number[] = [];
  private convergingFrom: number | null = null;
  private sent = 0;
  /** The pages mapped, as of the plan being made (RoundContext.memoryPages). */
  private memory = 0;
  readonly heldPages: number[] = [];
  /** The throttle each plan was made for. */
  private readonly plannedThrottle: number[] = [];
  private readonly plannedShare: number[] = [];
  private readonly writeShares: Array<number | null> = [];
  /** The throttle of the last plan, and the model's sample count when a plan was first made at it (paceShare: the samples taken at it since). */
  private paceThrottle = 0;
  private paceFrom = 0;
  /**
   * The pages the model forecast written within each of PACE_GRID's spans, before the first
   * throttle (paceShare), among the pages it had a history of then (`among`); 'unready' if it
   * had seen too few samples at full speed then; null before the first throttle.
   */
  private fullSpeed: { curve: number[]; among: PageBitmap } | 'unready' | null = null;
  /** The rounds splitLast split. */
  private readonly splitRounds: number[] = [];
  /** The round extendPastFit added (null: none). */
  private extendedAt: number | null = null;
  readonly forecastMs: number[] = [];
  private sampleMs = 0;

  constructor(totalPages: number, opts: Partial<ForecastPolicyOptions> = {}) {
    this.opts = {
      intervalMs: opts.intervalMs ?? 50,
      initialPageRate: opts.initialPageRate ?? 0,
      stopRules: opts.stopRules ?? XEN_DEFAULT_STOP_RULES,
      splitLast: opts.splitLast ?? true,
      extendPastFit: opts.extendPastFit ?? true,
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

  observeSample(sample: PageBitmap, _atMs?: number, live?: PageBitmap): void {
    const t = performance.now();
    if (sample.size !== this.model.totalPages) this.model.resize(sample.size);
    this.model.observe(sample, this.running); // ages and gaps in the time the process ran
    if (live) {
      this.lifetimes.observe(live);
      this.model.release(live); // what it kept for pages whose mappings are gone
    }
    this.sampleMs += performance.now() - t;
  }

  observeRound(r: RoundRecord): void {
    this.sent += r.pagesSent;
  }

  /**
   * Under QEMU's rule the driver stops at the first round whose rest fits the limit. A tail that
   * converges by a ratio r (pages written per page sent) gets there from a rest over the limit,
   * so that its final round lands anywhere between r and 1 times the limit: pre-copy's, and this
   * policy's, by where their rounds happen to fall. One more round, sending that rest, leaves
   * what the process writes meanwhile: at most r times the limit, where pre-copy's first fit
   * lands above r times it (at its own r). It costs the rest's pages once (at most the limit's
   * worth). Taken once, where the forecast says the round leaves fewer pages than it sends by
   * more than the forecast can tell apart, and where the rest is over r times the limit (a rest
   * under it already lands where the round would take it: over the 25 traces of BENCHMARKS.md,
   * this left the verdicts as they were and sent 7,569 pages fewer than a round wherever one
   * converges).
   */
  extendPastFit(unsynced: PageBitmap, ctx: RoundContext): boolean {
    if (!this.opts.extendPastFit || this.extendedAt !== null) return false;
    const rate = Math.max(this.peakRate, ctx.pageRate);
    if (!(rate > 0) || this.model.samples === 0) return false;
    const u = unsynced.count();
    // At the throttle the round will run at (it may have risen since the last plan).
    const share = (this.running * runningShare(ctx.throttlePercent ?? 0)) / runningShare(this.plannedThrottle.at(-1) ?? 0);
    const perSample = (rate * this.opts.intervalMs) / 1000;
    const next = this.model.expectedWritten((u / perSample) * share);
    if (next + Math.min(this.model.expectedWritten(share), Math.sqrt(u)) >= u) return false;
    // Pre-copy's first fit lands above r times the limit; a rest already under it needs no round.
    const limit = this.opts.stopRules.downtimeLimitMs ?? 0;
    if ((u / rate) * 1000 + (ctx.fixedDowntimeMs ?? 0) <= (next / u) * limit) return false;
    this.extendedAt = ctx.round;
    return true;
  }

  resize(totalPages: number): void {
    this.model.resize(totalPages);
    this.lifetimes.resize(totalPages);
  }

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const t = performance.now();
    const held = this.splitLast(unsynced, this.plan(unsynced, ctx), ctx);
    this.forecastMs.push(performance.now() - t);
    this.heldPages.push(held.count());
    this.plannedThrottle.push(ctx.throttlePercent ?? 0);
    this.plannedShare.push(this.running);
    return held;
  }

  /**
   * The share of the time the process will run in the round being planned: 100% less its
   * throttle, or, where it was measured (RoundContext.ranShare), what it ran at the throttle it
   * was measured under, scaled by how much the throttle has risen since. A program the throttle
   * slows less than its share (a paced one, under a duty cycle it makes up for) is forecast at
   * the pace it keeps. And where the process's writes say it runs well faster than its CPU does
   * (paceShare), at the pace of its writes: they are what the forecast is of, and CPU is only a
   * proxy for them (a process may write without spending its own CPU, or catch up on its writes
   * after each stop at less CPU). Live on this project's machine the two agreed: mw at a 90%
   * throttle wrote 0.08-0.12 of its pages and used 0.11-0.15 of its CPU.
   */
  private shareFor(ctx: RoundContext): number {
    const throttle = ctx.throttlePercent ?? 0;
    const assumed = runningShare(throttle);
    const cpu =
      ctx.ranShare === undefined || ctx.ranAtPercent === undefined
        ? assumed
        : Math.min(1, Math.max(MIN_RUNNING, (ctx.ranShare * assumed) / runningShare(ctx.ranAtPercent)));
    const writes = this.paceShare(throttle);
    this.writeShares.push(writes);
    return writes !== null && writes > PACE_MARGIN * cpu ? writes : cpu;
  }

  /**
   * The share of its full speed the process's writes showed at the throttle `throttle`: over the
   * k latest samples taken at it (ten to PACE_WINDOW), the pages written in them
   * (ForecastModel.recentlyWrittenAmong: what the process did), found on the curve of the pages the
   * model forecast written within x samples before the first throttle (`fullSpeed`); the share
   * is x / k (a process at a quarter of its speed writes in 20 samples what it wrote in 5). The
   * curve as it was at full speed: the model learns on under the throttle, at the share it is
   * told, and a share too low would make it learn the process as a faster writer, which would
   * hide the error. Over several samples, not one: the model knows nothing within a sample (its
   * curve there is a straight line it never saw), and one sample's count read on it put mw's
   * pace anywhere from 0.06 to 0.22 at 90% from run to run, live (0.06 to 0.33 at 80%), where
   * over 10-40 samples it reads 0.08-0.12 at 90%, as its CPU does. Null without a throttle,
   * before ten samples at this one, where the pages written are nearly all it writes in as many
   * samples at full speed (a hot set: the count cannot tell the pace), fewer than one sample's
   * worth at full speed, or too few to count (PACE_HITS), or where the model had watched fewer
   * than PACE_WINDOW samples at full speed when the throttle began.
   */
  private paceShare(throttle: number): number | null {
    const m = this.model;
    // The samples shown after a plan at this throttle were taken at it (the round runs at it).
    if (throttle !== this.paceThrottle) {
      this.paceThrottle = throttle;
      this.paceFrom = m.samples;
    }
    if (throttle <= 0) return null;
    // Taken once, before the model has learned anything under the throttle, and only from a
    // model that watched the process at full speed for a window's worth of samples.
    this.fullSpeed ??= m.samples >= PACE_WINDOW ? { curve: PACE_GRID.map((x) => m.expectedWritten(x)), among: m.history() } : 'unready';
    const k = Math.min(m.samples - this.paceFrom, PACE_WINDOW);
    if (this.fullSpeed === 'unready' || k < PACE_SAMPLES) return null;
    const { curve, among } = this.fullSpeed;
    // The pages it had a history of then: the curve forecasts no first write, and a process that
    // maps new memory under the throttle would otherwise read as faster than it runs.
    const { pages: written, hits } = m.recentlyWrittenAmong(k, among);
    if (hits < PACE_HITS) return null;
    // The curve at k samples, between the points of the grid.
    let i = 1;
    while (i < PACE_GRID.length - 1 && PACE_GRID[i] < k) i++;
    const atK = curve[i - 1] + ((k - PACE_GRID[i - 1]) / (PACE_GRID[i] - PACE_GRID[i - 1])) * (curve[i] - curve[i - 1]);
    // Nearly as many as at full speed: a hot set, written whole at any pace. Fewer than in one
    // sample at full speed: the pace would be read where the model has seen nothing; it is read
    // once more samples were taken at this throttle (none at 99%, whose 40 samples are 0.4 of one).
    if (written >= PACE_SATURATED * atK || written < curve[0]) return null;
    i = 1;
    while (curve[i] < written) i++; // curve[0] <= written < curve[i] <= atK: i is within the grid
    const f = (written - curve[i - 1]) / Math.max(1e-9, curve[i] - curve[i - 1]);
    return (PACE_GRID[i - 1] + f * (PACE_GRID[i] - PACE_GRID[i - 1])) / k;
  }

  private plan(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    this.writtenMemo.clear();
    const held = new PageBitmap(unsynced.size);
    // The link's rate: the best measured so far. A round of a few pages measures mostly the
    // round trip, not the link (live: 20 pages in 8 ms, a quarter of the rate): taken as the
    // link's rate it would make the next round look long and its horizon far.
    this.peakRate = Math.max(this.peakRate, ctx.pageRate);
    const rate = this.peakRate > 0 ? this.peakRate : this.opts.initialPageRate;
    this.lastRate = rate;
    // A throttled process runs only part of the time: within a round it lives through that share
    // of the samples the round lasts, so every horizon of the forecast (in the process's samples)
    // shrinks by it. A page due within 40 samples of its own time is not due within 40 samples of
    // a process stopped 99% of the time.
    this.running = this.shareFor(ctx);
    if (rate <= 0 || this.model.samples === 0) return held;
    if (unsynced.size !== this.model.totalPages) this.model.resize(unsynced.size);
    // The process's memory: the pages mapped (the driver's data cap counts these), not the index space.
    this.memory = ctx.memoryPages ?? this.model.totalPages;
    const perSample = this.samplePages;
    const u = unsynced.count();
    const h = u / perSample; // the round's length in samples if everything were sent
    const rules = this.opts.stopRules;
    // The round after which the round cap or the data cap stops the migration: what it holds
    // goes straight into the final round.
    if (ctx.round >= rules.maxRounds || this.sent + u >= rules.maxFactor * this.memory) {
      if (this.converging) this.tailPages.push(u);
      return h < 1 ? held : this.lastHold(unsynced, u, perSample, held);
    }
    if (this.converging) return this.steadyHold(unsynced, u, perSample, held, ctx);
    if (h < 1) return held;
    const m = this.model;
    // A page sent now is wasted if written again before the migration ends: after this round come
    // the rounds that send what it dirties, each about rho times shorter (rho: pages written per
    // page sent), so the rest of the migration lasts about h / (1 - rho).
    const written = this.written(h);
    // QEMU's rule: if the pages written while everything is sent would fit the downtime limit,
    // this round can be the last. A page held in it is then a page of the final round, or (if
    // the held pages do not fit the limit) the reason for a whole extra round, with the writes of
    // that round to send and, under auto-converge, a tighter throttle. So it holds only what a
    // last round may (lastRoundHold).
    if (this.fitsLimit(written, rate, ctx)) {
      this.startConverging(ctx.round, held);
      return this.lastRoundHold(unsynced, u, perSample, held, (final) => this.fitsLimit(final, rate, ctx));
    }
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
    const rest = h / (1 - rho);
    for (const horizon of [rest, h]) {
      held.clearAll();
      const saving = m.addLikely(unsynced, horizon * this.running, 0.5, held);
      const kept = held.count();
      if (kept === 0) return this.holdGone(unsynced, rest, held);
      if (!convergent || !this.notWorthIt(u, held, saving, perSample)) {
        return this.holdGone(unsynced, rest, convergent ? this.beforeLast(horizon, written, u, perSample, ctx, held) : held);
      }
    }
    return this.startConverging(ctx.round, held);
  }

  /**
   * Under a downtime limit, the round after which the driver stops (what it leaves fits the
   * limit) leaves what the process writes while it runs. A round far longer than the limit (the
   * first, over all of memory; or the held pages sent at once, as after a throttle's hold) leaves
   * the writes of all that time. Holding back a little more than the limit's worth of pages keeps
   * the migration going one more round: this one ends sooner, the next sends those pages and this
   * one's writes, and the freeze is left only what is written while that round runs, a round
   * about the limit's length (a pre-copy tail that converges ends so when its rounds fall well).
   * A page held so is sent once, in the next round, whether written meanwhile or not: nothing is
   * sent twice for it. Done only when the final round it forecasts is smaller by more than the
   * forecast's resolution, when both the forecast and what the process wrote lately say the
   * driver will stop after this round, and not in the round the round cap or the data cap ends on.
   */
  private splitLast(unsynced: PageBitmap, held: PageBitmap, ctx: RoundContext): PageBitmap {
    const rules = this.opts.stopRules;
    const limit = rules.downtimeLimitMs;
    const rate = this.lastRate;
    if (!this.opts.splitLast || limit === undefined || !(rate > 0) || this.model.samples === 0 || ctx.round >= rules.maxRounds) return held;
    const u = unsynced.count();
    if (this.sent + u >= rules.maxFactor * this.memory) return held;
    // The most pages the driver lets the freeze have after this round (restFitsLimit's, turned round).
    const fitting = ((limit - (ctx.fixedDowntimeMs ?? 0)) / 1000) * limitRate(rate, ctx.round);
    const k = held.count();
    const extra = Math.ceil(SPLIT_MARGIN * fitting) - k;
    if (extra <= 0 || u - k - extra <= 0) return held;
    const perSample = this.samplePages;
    const length = roundHolding(u, k, perSample);
    // The freeze's pages if nothing more is held: the held ones and what is written meanwhile.
    // Whether the driver stops after this round is judged also by what the process wrote over
    // the last samples as many as the round lasts: the forecast does not see pages written for
    // the first time coming (on the kept trace it forecast 1,758 pages written in round 1 where
    // 2,878 were: round 1 was not the last, and a split only lengthened round 2).
    const overlap = this.model.expectedAmong(held, length * this.running);
    const final = Math.min(this.memory, k + this.written(length) - overlap);
    if (!this.fitsLimit(final, rate, ctx)) return held; // the migration goes on anyway
    // A sample taken while the process ran more of the time than it does now (the throttle has
    // risen since) counts for the share it would write now.
    const now = this.running;
    const seen = Math.min(
      this.memory,
      k + this.model.recentlyWritten(length, (a) => Math.min(1, now / (this.model.shareAgo(a) ?? now))) - overlap,
    );
    if (!this.fitsLimit(seen, rate, ctx)) return held;
    const w1 = this.written(roundHolding(u, k + extra, perSample));
    const split = this.written((k + extra + w1) / perSample);
    if (split + this.resolution(final) >= final) return held;
    // The pages held must still be there when the driver judges the next round: a held page whose
    // mapping ends meanwhile leaves the rest smaller, and the driver may then stop after this round
    // with a freeze the split did not plan (node-map in the simulator: of 6,867 pages held, 4,938
    // were unmapped, and 3,220 pages froze where 1,829 do without the split). So they are taken
    // from mappings not forecast to end within the two rounds, counted at the clock's pace (what
    // ends a mapping need not be throttled); where there are not enough, it does not split.
    const lasting = unsynced.clone().andNot(held);
    const gone = new PageBitmap(lasting.size);
    this.lifetimes.addLikelyGone(lasting, (u + w1) / perSample, 0.5, gone);
    if (lasting.andNot(gone).count() < extra) return held;
    this.splitRounds.push(ctx.round);
    return holdHighest(lasting, extra, held);
  }

  /**
   * The round before the last: if the next round, sending what this one leaves, would write few
   * enough pages to fit the downtime limit, the driver stops after it, and the final round is
   * what the process writes while that round runs. A page held now and not written while this
   * round runs (`idle`, expected, at the length the round has when it holds them) is sent then
   * and lengthens it, so the final round grows: pre-copy sent that page now. Live on MariaDB,
   * holding 8,300 pages in round 1 (a quarter of them not written again) left a final round a
   * third larger than pre-copy's (four runs each). So a hold is kept only if its idle pages
   * lengthen the final round by no more than the forecast's resolution (see lastHold): the pages
   * due before the migration ends, or only those due within this round as it runs holding them
   * (H1, as lastHold), or those likelier to be written (thresholds over 1/2); none if no hold fits.
   */
  private beforeLast(horizon: number, written: number, u: number, perSample: number, ctx: RoundContext, held: PageBitmap): PageBitmap {
    const next = this.written(written / perSample);
    if (!this.fitsLimit(next, this.lastRate, ctx, ctx.round + 1)) return held;
    const tolerance = this.resolution(next);
    const m = this.model;
    // Whether `idle` pages (held and not written while the round runs) lengthen the next round by
    // no more than the resolution; for a hold, at the round's length when it holds them.
    const idleFits = (idle: number) => this.written((written + idle) / perSample) - next <= tolerance;
    const fits = (hold: PageBitmap): boolean => {
      const k = hold.count();
      return idleFits(k - m.expectedAmong(hold, roundHolding(u, k, perSample) * this.running));
    };
    // The narrower holds are subsets of this one: forecast over it, not over every page again.
    // H1 is at the horizon the wide hold is judged at: one pass gives both.
    const wide = held.clone();
    held.clearAll();
    const inRound = { expected: 0 };
    m.addLikely(wide, roundHolding(u, wide.count(), perSample) * this.running, 0.5, held, inRound);
    if (idleFits(wide.count() - inRound.expected)) return wide;
    if (held.count() === 0 || fits(held)) return held;
    for (const threshold of BEFORE_LAST_THRESHOLDS) {
      held.clearAll();
      m.addLikely(wide, horizon * this.running, threshold, held);
      if (held.count() === 0 || fits(held)) return held;
    }
    held.clearAll();
    return held;
  }

  /**
   * Adds the pages whose mapping is likely (over 1/2) to be gone within `rest` samples, the rest
   * of the migration: sent now, they would be sent for nothing; held, they are never sent, and
   * if their mapping outlives the forecast they are sent in a later round. Only while the stop is
   * far (the main path of plan): near it a held page is a page of the final round.
   */
  private holdGone(unsynced: PageBitmap, rest: number, held: PageBitmap): PageBitmap {
    this.lifetimes.addLikelyGone(unsynced, rest * this.running, 0.5, held);
    return held;
  }

  /** Expected pages the process writes within `h` samples of the clock (its own: fewer when throttled). */
  private written(h: number): number {
    const x = h * this.running;
    let w = this.writtenMemo.get(x);
    if (w === undefined) {
      w = this.model.expectedWritten(x);
      this.writtenMemo.set(x, w);
    }
    return w;
  }

  /**
   * Whether the rest left by sending everything (`written`) fits the downtime limit, when there is
   * one, as the driver will judge it after `round` (this one by default; after round 1, at half
   * the rate).
   */
  private fitsLimit(written: number, rate: number, ctx: RoundContext, round = ctx.round): boolean {
    const limit = this.opts.stopRules.downtimeLimitMs;
    return limit !== undefined && restFitsLimit(written, rate, ctx.fixedDowntimeMs ?? 0, limit, round);
  }

  /** How closely a forecast count of `w` pages written can be told apart (see lastHold). */
  private resolution(w: number): number {
    return Math.min(this.written(1), Math.sqrt(w));
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
   * round (at least one sample long) that holding adds: the pages written in a sample, less the
   * held ones among them (they are sent later whether written then or not).
   */
  private notWorthIt(u: number, held: PageBitmap, saving: number, perSample: number): boolean {
    const kept = held.count();
    if (u - kept < perSample) return true;
    return saving <= this.written(1) - this.model.expectedAmong(held, this.running);
  }

  /**
   * Whether the stop is near: the rest is within twice the downtime limit (the driver stops as
   * soon as it fits it: a page held then is a page of downtime); the rounds left are what a
   * pre-copy tail needs to converge from here (a couple when it will not converge; under a
   * throttle that can still rise, after the rounds it needs to reach its highest); or the data
   * cap is two rounds away.
   */
  private endNear(ctx: RoundContext, u: number, written: number, convergent: boolean): 'limit' | 'rounds' | 'data' | null {
    const rules = this.opts.stopRules;
    if (rules.downtimeLimitMs !== undefined && (u / this.lastRate) * 1000 <= 2 * rules.downtimeLimitMs) return 'limit';
    const floor = Math.max(1, rules.minRemainingPages);
    const roundsToConverge = (ratio: number) =>
      ratio > 0 ? Math.min(20, Math.ceil(Math.log(u / floor) / Math.log(1 / Math.max(ratio, 1e-3)))) : 0;
    // While auto-converge's throttle can still rise, the rounds that hold pages back raise it (they
    // write more than they send), and the tail is better left until it is at its highest, where
    // the process writes least while the held pages are sent: the rounds the throttle needs to
    // get there come first, then a tail that converges at it (the pages written while everything
    // is sent, at the highest throttle). A tail at the throttle of now would flush the held pages
    // while the process still writes many times what it will at the highest, and the rounds that
    // follow have to send those writes again (mw-256 in the simulator: a final round of 4,526
    // pages where holding until 90% left 2,761).
    // (Weighed over periods, the rounds it needs are not known: the rule is then the one below.)
    const rises = this.throttleRises(ctx) ? (ctx.throttleRoundsToMax ?? 0) : 0;
    if (rises > 0) {
      const atMax = this.model.expectedWritten((u / this.samplePages) * runningShare(ctx.throttleMaxPercent ?? 0)) / u;
      const converge = atMax <= CONVERGES ? roundsToConverge(atMax) : 0;
      if (ctx.round + rises + MIN_TAIL_ROUNDS + converge >= rules.maxRounds) return 'rounds';
    } else if (ctx.round + MIN_TAIL_ROUNDS + (convergent ? roundsToConverge(written / u) : 0) >= rules.maxRounds) return 'rounds';
    if (this.sent + u * 2 >= rules.maxFactor * this.memory) return 'data';
    return null;
  }

  /**
   * After the held pages were sent: while the rest shrinks, pre-copy is converging and nothing is
   * held (a round that holds waits for a sample, which would slow it down). When it stops
   * shrinking (seen over three rounds, or over one where the forecast says the next will not
   * shrink it either) (a steady state: the process writes as much per round as the round sends, and only
   * the round cap will end the migration), pages forecast to be written again within the round
   * itself are held: they would be unsynchronized at its end anyway, so holding them costs no
   * downtime and saves sending them every round (what TPO and the paper's filter do for a hot set).
   * But where that hold would let the migration stop (the rest it leaves fits the downtime limit)
   * while auto-converge can still raise its throttle, it holds everything: see below.
   */
  private steadyHold(unsynced: PageBitmap, u: number, perSample: number, held: PageBitmap, ctx: RoundContext): PageBitmap {
    const tail = this.tailPages;
    tail.push(u);
    const k = tail.length;
    const floor = 4 * Math.max(1, this.opts.stopRules.minRemainingPages);
    // Seen: the rest did not shrink by 30% over STEADY_ROUNDS rounds. Foreseen, sooner: it did not
    // over the last round, and the forecast says sending all of it now would not either (as many
    // pages are written meanwhile); waiting for three rounds to show it sends them three times.
    const seen = () => k > STEADY_ROUNDS && u >= STEADY_SHRINK * tail[k - 1 - STEADY_ROUNDS];
    const foreseen = () => k >= 2 && u >= STEADY_SHRINK * tail[k - 2] && this.written(u / perSample) >= STEADY_SHRINK * u;
    const steady = u > floor && (seen() || foreseen());
    // Only rounds a sample long anyway: a shorter one may catch no write at all and end it.
    if (!steady || u < perSample) return held;
    this.model.addLikely(unsynced, (u / perSample) * this.running, 0.5, held);
    const kept = held.count();
    if (kept === 0 || !this.throttleRises(ctx)) return held;
    // Under a throttle that is still rising, the hold is not free if it ends the migration: once
    // the rest it leaves (the held pages, and what the process writes while the others are sent)
    // fits the downtime limit the driver stops, and the held pages are the final round. Holding
    // everything instead keeps the steady state one round more: the round writes more than it
    // sends, the throttle rises, and each step shrinks the final round (the process writes that
    // much less while it is sent).
    const length = roundHolding(u, kept, perSample);
    const rest = Math.min(this.memory, kept + this.written(length) - this.model.expectedAmong(held, length * this.running));
    return this.fitsLimit(rest, this.lastRate, ctx) ? held.copyFrom(unsynced) : held;
  }

  /**
   * Whether auto-converge throttles, and can still raise its throttle (before the round cap:
   * where it weighs periods, as QEMU does, the rounds are paced so that it can: ThrottleSchedule.paceMs).
   */
  private throttleRises(ctx: RoundContext): boolean {
    return ctx.throttleMaxPercent !== undefined && (ctx.throttlePercent ?? 0) < ctx.throttleMaxPercent;
  }

  /** Pages the link carries in one sample, at the rate the last plan took (lastRate). */
  private get samplePages(): number {
    return (this.lastRate * this.opts.intervalMs) / 1000;
  }

  /**
   * Near the end of a migration that will not converge (the rounds before the last), what
   * remains when it stops is what the last round holds and catches. Two choices: hold every page
   * due within the time of the whole send list (H0: the rounds are then short), or only those due
   * within the round as it runs when the rest is sent (H1, due within h1 = |unsynced - H0| /
   * rate). The smaller forecast final round wins; when they are about equal (everything is
   * rewritten within a round anyway), H0, which sends fewer pages. The last round itself
   * (lastHold) checks its choice against pre-copy's.
   */
  private endHold(unsynced: PageBitmap, u: number, perSample: number, held: PageBitmap): PageBitmap {
    const m = this.model;
    m.addLikely(unsynced, (u / perSample) * this.running, 0.5, held);
    const h0 = held.count();
    const h1 = roundHolding(u, h0, perSample);
    const within = new PageBitmap(unsynced.size);
    m.addLikely(unsynced, h1 * this.running, 0.5, within);
    const finalHolding = h0 + this.written(1);
    const finalSending = within.count() + this.written((u - within.count()) / perSample);
    return finalSending < END_CHOICE * finalHolding ? within : held;
  }

  /**
   * A round that can be the last under the downtime limit (the pages written while everything
   * is sent would fit it). A page the process writes again while the round runs is in the final
   * round whether it is held or sent: holding it saves a page of link and costs no downtime. A
   * page held and not written again is a page of downtime that pre-copy would not have, and that
   * cost falls on the freeze, not on the link; so the hold is judged as the last round's
   * (lastHold: a final round no larger than sending everything leaves, to within the forecast's
   * resolution) and must fit the limit, and only pages likely to be written are considered: the
   * thresholds over 1/2 of the round before the last, widest first. (On MariaDB's recorded trace
   * in the simulator, the pages over 1/2 passed that test and made the final round 15% larger.)
   */
  private lastRoundHold(
    unsynced: PageBitmap,
    u: number,
    perSample: number,
    held: PageBitmap,
    fits: (final: number) => boolean,
  ): PageBitmap {
    // A narrower threshold's hold is a subset of a wider one's: forecast over that, not over every
    // page again, and only in the regions where an age the first pass met is likely enough.
    let candidates = unsynced;
    for (const threshold of BEFORE_LAST_THRESHOLDS) {
      const h0 = new PageBitmap(unsynced.size);
      const h = this.lastHold(unsynced, u, perSample, held, { fits, threshold, candidates, h0, skim: candidates !== unsynced });
      if (h.count() > 0) return h;
      if (h0.count() === 0) break; // nothing over this threshold: nothing over a higher one
      candidates = h0;
    }
    return held;
  }

  /**
   * The last round: the final round carries every page it holds, and the pages written while it
   * runs that it did not hold. Hold nothing (the final round is what the process writes while
   * everything is sent: pre-copy's from here), every page due within that time (H0), or only
   * those due within the round as it runs with the rest sent (H1). Each one's final round is
   * forecast as |held| + written(round) - E[held pages written in the round], and is never more
   * pages than the process has. The larger hold that leaves a final round no larger than
   * sending everything does (pre-copy's from here, to within the forecast's resolution) is kept:
   * it sends the fewest pages without growing the final round.
   *
   * The resolution: a forecast count of W pages written is an expectation, and the count the
   * process actually writes spreads about it by some sqrt(W) (a sum of many unlikely writes);
   * nor is a round's length known to better than a sample. Two final rounds closer than the
   * smaller of those cannot be told apart: a hold that forecasts a whole working set of 130,953
   * pages against sending everything's 130,707 is a tie, and holding saves the working set; a
   * hold that forecasts 3,075 against 2,947 (a random writer, 2.4 sqrt(W) more) is not.
   *
   * "Due" means forecast to be written with probability over `threshold` (1/2 by default), and a
   * hold is kept only if its forecast final round also `fits` (lastRoundHold: the downtime limit).
   * `held` comes in empty. The pages looked at are `candidates` (a superset of H0, by default the
   * unsynchronized ones); H0 is left in `h0`. H1 is a subset of H0 (a shorter horizon).
   */
  private lastHold(unsynced: PageBitmap, u: number, perSample: number, held: PageBitmap, o: LastHoldOptions = {}): PageBitmap {
    const { fits = () => true, threshold = 0.5, candidates = unsynced, h0 = new PageBitmap(unsynced.size), skim = false } = o;
    const m = this.model;
    const all = this.written(u / perSample);
    const sendAll = all + this.resolution(all);
    const holding = (kept: number) => roundHolding(u, kept, perSample);
    // Whether a hold of `kept` pages wins, given `e`, the expected number of them written while
    // the round runs. Without it, the bounds decide where they can (the fit is monotone); null
    // where they cannot. At most, none of them is written; at fewest, the final round is the held
    // pages or the pages written, whichever is more (e is at most either).
    const wins = (kept: number, e?: number): boolean | null => {
      if (kept === 0) return false;
      const w = this.written(holding(kept));
      if (e !== undefined) {
        const final = Math.min(this.memory, kept + w - e);
        return final <= sendAll && fits(final);
      }
      const most = Math.min(this.memory, kept + w);
      if (most <= sendAll && fits(most)) return true;
      const least = Math.min(this.memory, Math.max(kept, w));
      return least > sendAll || !fits(least) ? false : null;
    };
    // Its ages are recorded (or, over a subset of the pages that recorded them, skimmed by them).
    m.addLikely(candidates, (u / perSample) * this.running, threshold, h0, undefined, skim ? 'skim' : 'record');
    const k0 = h0.count();
    const v0 = wins(k0);
    if (v0 === true) return h0;
    if (k0 === 0) return held;
    // H1 and the forecast over H0 are at the same horizon, the round as it runs holding H0: one
    // pass, over every page of H0 if that forecast is needed, else only where H1 can be.
    if (v0 === null) {
      const e0 = { expected: 0 };
      m.addLikely(h0, holding(k0) * this.running, threshold, held, e0);
      if (wins(k0, e0.expected)) {
        held.clearAll();
        return h0;
      }
    } else m.addLikely(h0, holding(k0) * this.running, threshold, held, undefined, 'skim');
    const k1 = held.count();
    let v1 = wins(k1);
    if (v1 === null) v1 = wins(k1, m.expectedAmong(held, holding(k1) * this.running));
    if (v1) return held;
    held.clearAll();
    return held;
  }

  /**
   * Where pre-copy's rest settles from here: each round sends the last one's writes, so the rest
   * follows u <- written(u / link rate), a few rounds of it from the pages written during a flush.
   */
  private settlesAt(written: number): number {
    const rate = this.lastRate;
    if (!(rate > 0)) return written;
    const perSample = this.samplePages;
    let u = written;
    for (let i = 0; i < SETTLE_ROUNDS && u / perSample >= 1; i++) {
      const next = this.written(u / perSample);
      if (next >= u) break; // settled: the next rounds would compute the same
      u = next;
    }
    return u;
  }

  status(): ForecastPolicyStatus {
    return {
      regionPages: this.model.regionPages,
      regionScores: this.model.scores,
      modelBytes:
        this.model.byteSize() +
        this.lifetimes.byteSize() +
        (this.fullSpeed && this.fullSpeed !== 'unready' ? this.fullSpeed.among.byteLength : 0),
      mappingPagesEnded: this.lifetimes.counts.ended,
      samples: this.model.samples,
      converging: this.converging,
      convergingFromRound: this.convergingFrom,
      perRoundHeldPages: [...this.heldPages],
      perRoundThrottlePercent: [...this.plannedThrottle],
      perRoundRunningShare: [...this.plannedShare],
      perRoundWriteShare: this.writeShares.map((x) => (x === null ? null : Math.round(x * 1000) / 1000)),
      splitRounds: [...this.splitRounds],
      extendedRound: this.extendedAt,
      perRoundForecastMs: this.forecastMs.map((x) => Math.round(x * 1000) / 1000),
      perSampleMs: this.model.samples ? this.sampleMs / this.model.samples : 0,
    };
  }
}
