import { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundContext } from './policy.js';
import { ModelBuilder, type MarkovModel } from './markov-model.js';
import { DEFAULT_FIT_ALPHA, DEFAULT_FIT_WINDOW, FitMonitor, type FitResult } from './goodness-of-fit.js';

/**
 * How the filter forecasts (see MarkovPolicy):
 * - `chain` (default, the paper's Fig. 3): follow the single most probable next state, one step
 *   per sampling interval, and hold back the LWWS of every state on that chain.
 * - `visits` (our option): propagate the whole distribution over states for the same number of
 *   steps and hold back the LWWS of every state expected to occupy at least one whole sampling
 *   interval. A workload whose hot spot dwells (mw hotspot: 10 samples a zone) has "stay" as its
 *   most probable transition, so the paper's chain never leaves the current state and forecasts
 *   only one zone for a round that lasts several seconds; `visits` sees the zones it will move
 *   through. BENCHMARKS.md has the measurements.
 */
export const FORECAST_MODES = ['chain', 'visits'] as const;
export type ForecastMode = (typeof FORECAST_MODES)[number];

export interface MarkovPolicyOptions {
  forecast: ForecastMode;
  /** Also apply Xen's per-batch skip of pages written again during the round. */
  skipRedirtied: boolean;
  /** The sampling interval: the duration of one state (paper: 50 ms). */
  intervalMs: number;
  /**
   * Pages per second to assume while the link is unmeasured (ctx.pageRate = 0, e.g. round 1):
   * the caller passes bandwidth / page size. 0 = unknown: then nothing is held back.
   */
  initialPageRate: number;
  /** On a failed fit, rebuild the model from the recent samples (true) or disable the filter. */
  rebuild: boolean;
  /** N: a rebuild needs this many recent samples with writes (default 20 = 1 s at 50 ms). */
  rebuildSamples: number;
  /** Rebuilds allowed per migration (default 1); a failed fit after that disables the filter. */
  maxRebuilds: number;
  /** Transitions per fit test (default 20). */
  fitWindow: number;
  /** False-alarm probability per fit test (default 0.001). */
  fitAlpha: number;
}

/** What the policy did when the write pattern stopped fitting the model. */
export interface FallbackEvent {
  /** Time of the sample that completed the failing window. */
  atMs: number;
  /** The round running then (the last one planned; 0 before round 1). */
  round: number;
  action: 'rebuilt' | 'disabled';
  /** The fit test's z and its critical value. */
  statistic: number;
  threshold: number;
  pValue: number;
}

export interface MarkovPolicyStatus extends Record<string, unknown> {
  forecast: ForecastMode;
  skipRedirtied: boolean;
  enabled: boolean;
  model: { states: number; observedStates: number; transitions: number; samples: number; bytes: number; lwwsThreshold: number };
  /** The latest fallback, or null when the model fitted throughout. */
  fallback: FallbackEvent | null;
  fallbacks: FallbackEvent[];
  lastFit: FitResult | null;
  fitWindowsTested: number;
  /** Compute time of holdBack, total and per round (ms, performance.now()). */
  forecastMsTotal: number;
  perRoundForecastMs: number[];
  /** Pages held back per round. */
  perRoundHeldPages: number[];
}

/** The `visits` forecast looks at most this many sampling intervals ahead (60 s at 50 ms). */
const MAX_VISIT_STEPS = 1200;

/**
 * The paper's data filter (Fig. 3, lines 13-23) on the Policy interface:
 *
 *   sendtime := |sendlist| / netrate                 ctx.pageRate, or initialPageRate if 0
 *   curr := the current identified state             the latest sample's, else the most frequent
 *   while sendtime >= duration:                      duration = intervalMs
 *     curr := Forecast(curr); filter += LWWS(curr); sendtime -= duration
 *   return filter ∩ sendlist                         the driver sends the rest
 *
 * The chain of most probable states is deterministic, so once a state comes back the union
 * stops growing and the loop ends early (a state that stays where it is ends it after one step).
 *
 * Maintenance (paper 3.3): every sample's state is fed to a FitMonitor. When a window fails,
 * the model is rebuilt from the last `rebuildSamples` samples if `rebuild` is on, that many are
 * at hand and fewer than `maxRebuilds` rebuilds were done; otherwise the filter is disabled for
 * the rest of the migration (holdBack returns nothing: plain pre-copy), as the paper does when
 * there is no time to rebuild. status() reports either.
 */
export class MarkovPolicy implements Policy {
  readonly name = 'markov';
  readonly skipRedirtied: boolean;
  private model: MarkovModel;
  private monitor: FitMonitor;
  private curr: number | null = null;
  private disabled = false;
  private rebuilds = 0;
  private round = 0;
  private lastAtMs = 0;
  /** The most recent samples with writes (copies), for a rebuild; empty when rebuild is off. */
  private readonly recent: PageBitmap[] = [];
  readonly events: FallbackEvent[] = [];
  readonly forecastMs: number[] = [];
  readonly heldPages: number[] = [];
  private readonly opts: MarkovPolicyOptions;

  constructor(model: MarkovModel, opts: Partial<MarkovPolicyOptions> = {}) {
    this.model = model;
    this.opts = {
      forecast: opts.forecast ?? 'chain',
      skipRedirtied: opts.skipRedirtied ?? false,
      intervalMs: opts.intervalMs ?? 50,
      initialPageRate: opts.initialPageRate ?? 0,
      rebuild: opts.rebuild ?? true,
      rebuildSamples: opts.rebuildSamples ?? DEFAULT_FIT_WINDOW,
      maxRebuilds: opts.maxRebuilds ?? 1,
      fitWindow: opts.fitWindow ?? DEFAULT_FIT_WINDOW,
      fitAlpha: opts.fitAlpha ?? DEFAULT_FIT_ALPHA,
    };
    if (!(this.opts.intervalMs > 0)) throw new RangeError(`intervalMs must be > 0, got ${this.opts.intervalMs}`);
    if (!(this.opts.initialPageRate >= 0)) throw new RangeError(`initialPageRate must be >= 0, got ${this.opts.initialPageRate}`);
    if (!(Number.isInteger(this.opts.rebuildSamples) && this.opts.rebuildSamples >= 2)) {
      throw new RangeError(`rebuildSamples must be a whole number >= 2, got ${this.opts.rebuildSamples}`);
    }
    this.monitor = this.newMonitor();
    this.skipRedirtied = this.opts.skipRedirtied;
  }

  get currentModel(): MarkovModel {
    return this.model;
  }

  /** Pages the last holdBack held back (the round being run, once planned). */
  get heldLastPlan(): number {
    return this.heldPages.at(-1) ?? 0;
  }

  get enabled(): boolean {
    return !this.disabled;
  }

  /** The state the forecast starts from. */
  currentState(): number {
    return this.curr ?? this.model.mostFrequentState();
  }

  currentForecast(steps: number): { state: number; forecast: number[] } {
    const state = this.currentState();
    return { state, forecast: this.model.forecast(state, steps) };
  }

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const t = performance.now();
    this.round = ctx.round;
    const held = new PageBitmap(unsynced.size);
    const rate = ctx.pageRate > 0 ? ctx.pageRate : this.opts.initialPageRate;
    if (!this.disabled && rate > 0) {
      const sendMs = (unsynced.count() / rate) * 1000;
      const steps = Math.floor(sendMs / this.opts.intervalMs); // iterations of "while sendtime >= duration"
      const m = this.model;
      if (this.opts.forecast === 'visits' && steps > 0) {
        const occ = m.expectedOccupancy(this.currentState(), Math.min(MAX_VISIT_STEPS, steps));
        for (let st = 0; st < occ.length; st++) if (occ[st] >= 1) m.addLwwsTo(st, held);
      } else if (steps > 0) {
        const seen = new Uint8Array(m.states);
        let curr = this.currentState();
        for (let i = 0; i < steps; i++) {
          curr = m.mostLikelyNext(curr);
          if (seen[curr]) break;
          seen[curr] = 1;
          m.addLwwsTo(curr, held);
        }
      }
      held.and(unsynced);
    }
    this.forecastMs.push(performance.now() - t);
    this.heldPages.push(held.count());
    return held;
  }

  observeSample(sample: PageBitmap, atMs: number): void {
    this.lastAtMs = atMs;
    const s = this.model.stateOf(sample);
    if (s === null) return; // no writes, no state (as when modelling)
    this.curr = s;
    if (this.disabled) return;
    if (this.opts.rebuild && this.rebuilds < this.opts.maxRebuilds) {
      this.recent.push(sample.clone());
      if (this.recent.length > this.opts.rebuildSamples) this.recent.shift();
    }
    const fit = this.monitor.observe(s);
    if (fit && !fit.fits) this.fallBack(fit, atMs, sample);
  }

  private fallBack(fit: FitResult, atMs: number, latest: PageBitmap): void {
    const canRebuild = this.opts.rebuild && this.rebuilds < this.opts.maxRebuilds && this.recent.length >= this.opts.rebuildSamples;
    const event = { atMs, round: this.round, statistic: fit.statistic, threshold: fit.threshold, pValue: fit.pValue };
    if (canRebuild) {
      const b = new ModelBuilder(latest.size, { states: this.model.states, lwwsThreshold: this.model.lwwsThreshold });
      for (const x of this.recent) b.observe(x);
      this.model = b.build();
      this.monitor = this.newMonitor();
      this.curr = this.model.stateOf(latest);
      this.rebuilds++;
      this.events.push({ ...event, action: 'rebuilt' });
    } else {
      this.disabled = true;
      this.events.push({ ...event, action: 'disabled' });
    }
    this.recent.length = 0;
  }

  private newMonitor(): FitMonitor {
    return new FitMonitor(this.model, { window: this.opts.fitWindow, alpha: this.opts.fitAlpha });
  }

  status(): MarkovPolicyStatus {
    const m = this.model;
    return {
      forecast: this.opts.forecast,
      skipRedirtied: this.opts.skipRedirtied,
      enabled: !this.disabled,
      model: {
        states: m.states,
        observedStates: m.observedStates,
        transitions: m.transitionCount,
        samples: m.samples,
        bytes: m.byteSize(),
        lwwsThreshold: m.lwwsThreshold,
      },
      fallback: this.events.at(-1) ?? null,
      fallbacks: [...this.events],
      lastFit: this.monitor.latest,
      fitWindowsTested: this.monitor.windowsTested,
      forecastMsTotal: this.forecastMs.reduce((a, b) => a + b, 0),
      perRoundForecastMs: this.forecastMs.map((x) => Math.round(x * 1000) / 1000),
      perRoundHeldPages: [...this.heldPages],
      lastSampleAtMs: this.lastAtMs,
    };
  }
}
