import { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundContext } from './policy.js';
import { ModelBuilder, type MarkovModel } from './markov-model.js';
import { FitMonitor, type FitResult } from './goodness-of-fit.js';

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
export type ForecastMode = 'chain' | 'visits';

export interface MarkovPolicyOptions {
  forecast: ForecastMode;
  /** Also apply Xen's per-batch skip of pages written again during the round. */
  skipRedirtied: boolean;
  /** The sampling interval: the duration of one state (paper: 50 ms). */
  intervalMs: number;
  /** Pages per second to assume before the link was measured (from --bandwidth), 0 = unknown. */
  initialPageRate: number;
  /** On a failed fit, rebuild the model from samples taken after the change (true) or just disable. */
  rebuild: boolean;
  /** Samples needed after a change to rebuild (default 40 = 2 s at 50 ms). */
  rebuildSamples: number;
  fitWindow?: number;
  zCritical?: number;
}

export interface FallbackEvent {
  atMs: number;
  action: 'disabled' | 'rebuilt';
  fit?: FitResult;
}

/** The `visits` forecast looks at most this many sampling intervals ahead (60 s at 50 ms). */
const MAX_VISIT_STEPS = 1200;

/**
 * The paper's data filter (Fig. 3, lines 13-23) on the Policy interface:
 *
 *   sendtime := |sendlist| / netrate
 *   curr := the current identified state
 *   while sendtime >= duration:  curr := Forecast(curr); filter += LWWS(curr); sendtime -= duration
 *   send sendlist - filter; the filtered pages join the next round's send list
 *
 * The current state is the state of the latest sample the agent observed. Maintenance: every
 * sample is scored by a FitMonitor; when the pattern no longer fits, the filter is disabled at
 * once, and (with `rebuild`) a new model is built from the next `rebuildSamples` samples and the
 * filter enabled again. Both events are reported by status().
 */
export class MarkovPolicy implements Policy {
  readonly name = 'markov';
  private model: MarkovModel;
  private monitor: FitMonitor;
  private curr: number | null = null;
  private disabled = false;
  private rebuilder: ModelBuilder | null = null;
  private rebuildLeft = 0;
  private lastAtMs = 0;
  readonly events: FallbackEvent[] = [];
  readonly forecastMs: number[] = [];
  private readonly opts: MarkovPolicyOptions;

  constructor(model: MarkovModel, opts: Partial<MarkovPolicyOptions> = {}) {
    this.model = model;
    this.opts = {
      forecast: opts.forecast ?? 'chain',
      skipRedirtied: opts.skipRedirtied ?? false,
      intervalMs: opts.intervalMs ?? 50,
      initialPageRate: opts.initialPageRate ?? 0,
      rebuild: opts.rebuild ?? true,
      rebuildSamples: opts.rebuildSamples ?? 40,
      ...(opts.fitWindow !== undefined ? { fitWindow: opts.fitWindow } : {}),
      ...(opts.zCritical !== undefined ? { zCritical: opts.zCritical } : {}),
    };
    this.monitor = new FitMonitor(model, this.opts.fitWindow, this.opts.zCritical);
    this.skipRedirtied = this.opts.skipRedirtied;
  }

  readonly skipRedirtied: boolean;

  get currentModel(): MarkovModel {
    return this.model;
  }

  get enabled(): boolean {
    return !this.disabled;
  }

  /** The state the filter starts from. */
  currentState(): number {
    return this.curr ?? this.model.mostFrequentState();
  }

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const t = performance.now();
    const held = new PageBitmap(unsynced.size);
    const rate = ctx.pageRate > 0 ? ctx.pageRate : this.opts.initialPageRate;
    if (!this.disabled && rate > 0 && this.opts.forecast === 'visits') {
      const steps = Math.min(MAX_VISIT_STEPS, Math.floor(((unsynced.count() / rate) * 1000) / this.opts.intervalMs));
      if (steps > 0) {
        const occ = this.model.expectedOccupancy(this.currentState(), steps);
        for (let st = 0; st < occ.length; st++) {
          if (occ[st] < 1) continue;
          for (const p of this.model.lwws(st)) if (p < held.size) held.set(p);
        }
        held.and(unsynced);
      }
    } else if (!this.disabled && rate > 0) {
      let sendtime = (unsynced.count() / rate) * 1000;
      let curr = this.currentState();
      const seen = new Set<number>();
      // A deterministic chain repeats once a state comes back: the union stops growing there.
      while (sendtime >= this.opts.intervalMs) {
        curr = this.model.mostLikelyNext(curr);
        if (seen.has(curr)) break;
        seen.add(curr);
        for (const p of this.model.lwws(curr)) if (p < held.size) held.set(p);
        sendtime -= this.opts.intervalMs;
      }
      held.and(unsynced);
    }
    this.forecastMs.push(performance.now() - t);
    return held;
  }

  observeSample(sample: PageBitmap, atMs: number): void {
    this.lastAtMs = atMs;
    if (this.rebuilder) {
      this.rebuilder.observe(sample);
      if (--this.rebuildLeft <= 0) {
        this.model = this.rebuilder.build();
        this.monitor = new FitMonitor(this.model, this.opts.fitWindow, this.opts.zCritical);
        this.rebuilder = null;
        this.disabled = false;
        this.curr = null;
        this.events.push({ atMs, action: 'rebuilt' });
      }
      return;
    }
    const s = this.model.stateOf(sample);
    if (s === null) return;
    this.curr = s;
    if (this.disabled) return;
    const fit = this.monitor.observe(s);
    if (fit && !fit.fits) {
      this.disabled = true;
      this.events.push({ atMs, action: 'disabled', fit });
      if (this.opts.rebuild) {
        this.rebuilder = new ModelBuilder(Math.max(this.model.totalPages, sample.size), {
          states: this.model.states,
          lwwsThreshold: this.model.lwwsThreshold,
        });
        this.rebuildLeft = this.opts.rebuildSamples;
      }
    }
  }

  status(): Record<string, unknown> {
    const m = this.model;
    const total = this.forecastMs.reduce((a, b) => a + b, 0);
    return {
      forecast: this.opts.forecast,
      skipRedirtied: this.opts.skipRedirtied,
      model: { states: m.states, observedStates: m.observedStates, transitions: m.transitionCount, samples: m.samples, bytes: m.byteSize(), lwwsThreshold: m.lwwsThreshold },
      enabled: !this.disabled,
      fallback: this.events.length ? this.events : null,
      lastFit: this.monitor.latest,
      forecastMsTotal: total,
      forecastMsPerRound: this.forecastMs.map((x) => Math.round(x * 1000) / 1000),
      lastSampleAtMs: this.lastAtMs,
    };
  }
}
