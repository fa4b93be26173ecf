import type { MarkovModel } from './markov-model.js';

// Model maintenance (paper 3.3, "Maintain the Markov model"): does the recent sequence of states
// still follow the model's distribution of states and of state transitions?
//
// The test, once per window of `window` transitions (default 20 = 1 s at 50 ms), non-overlapping:
//
//   L  = sum over the window of log P(b_t | a_t)         P: the model, smoothed (MarkovModel.logProb)
//   mu = sum of E[log P(X | a_t)],  v = sum of Var[log P(X | a_t)]   (exact, from the model's rows)
//   z  = (mu - L) / sqrt(v)                              fails when z > z_(1-alpha)
//
// Under the model, given the states the window starts from, the terms are independent (Markov
// property), so L has mean mu and variance v exactly and z is about standard normal; a pattern
// the model does not know scores lower. The smoothing is what makes this one number test both
// distributions: P(b | a) backs off to the model's state distribution (see logProb), so a state
// the model never saw costs log(q0 / unseen states), a transition never seen from a well-observed
// row costs more than one from a rarely seen row, and a row the model never left is scored
// against the state distribution. Cost: one add per sample, moments cached per row.
//
// Why not a chi-square test of the window's state counts against the state distribution: states
// are strongly autocorrelated (a hot spot dwells for several samples), so a 1-second window of a
// perfectly regular workload holds two or three states, and such a test would fail at once. The
// transition test conditions on where each step starts, which is what makes it valid on 20
// samples, and the expected counts of a transition chi-square would be far below 5.
//
// The critical value is computed from alpha (default 0.001 per window, so over 10 windows of an
// unchanged workload a false alarm has a chance of about 1%) with the inverse normal
// distribution (Acklam's rational approximation, relative error < 1.2e-9); the p-value of each
// window is 1 - Phi(z).

export interface FitResult {
  fits: boolean;
  /** z: standard errors by which the window's log-likelihood falls short of its expectation. */
  statistic: number;
  /** The critical value of z: z_(1-alpha). */
  threshold: number;
  /** P(Z >= statistic) under the model. */
  pValue: number;
  alpha: number;
  /** Transitions tested. */
  transitions: number;
  logLik: number;
  expectedLogLik: number;
}

export interface FitOptions {
  /** Transitions per test (default 20: 1 s of 50 ms samples). */
  window: number;
  /** False-alarm probability per window (default 0.001). */
  alpha: number;
}

export const DEFAULT_FIT_WINDOW = 20;
export const DEFAULT_FIT_ALPHA = 0.001;

export class FitMonitor {
  readonly window: number;
  readonly alpha: number;
  readonly threshold: number;
  private prev: number | null = null;
  private n = 0;
  private ll = 0;
  private mu = 0;
  private v = 0;
  private last: FitResult | null = null;
  private tests = 0;

  constructor(
    private readonly model: MarkovModel,
    opts: Partial<FitOptions> = {},
  ) {
    this.window = opts.window ?? DEFAULT_FIT_WINDOW;
    this.alpha = opts.alpha ?? DEFAULT_FIT_ALPHA;
    if (!(Number.isInteger(this.window) && this.window >= 2))
      throw new RangeError(`fit window must be a whole number >= 2, got ${this.window}`);
    if (!(this.alpha > 0 && this.alpha < 0.5)) throw new RangeError(`fit alpha must be in (0, 0.5), got ${this.alpha}`);
    this.threshold = normalQuantile(1 - this.alpha);
  }

  /** Feeds the state of the next sample; returns the verdict when it completes a window, else null. */
  observe(state: number): FitResult | null {
    const a = this.prev;
    this.prev = state;
    if (a === null) return null;
    const m = this.model.transitionMoments(a);
    this.ll += this.model.logProb(a, state);
    this.mu += m.mean;
    this.v += m.variance;
    if (++this.n < this.window) return null;
    const gap = this.mu - this.ll;
    // A window made only of certain steps (variance 0) fits exactly when it scored what it had to.
    const z = this.v > 0 ? gap / Math.sqrt(this.v) : gap > 1e-9 ? Infinity : 0;
    this.last = {
      fits: z <= this.threshold,
      statistic: z,
      threshold: this.threshold,
      pValue: normalUpperTail(z),
      alpha: this.alpha,
      transitions: this.n,
      logLik: this.ll,
      expectedLogLik: this.mu,
    };
    this.tests++;
    this.n = 0;
    this.ll = this.mu = this.v = 0;
    return this.last;
  }

  /** The verdict of the last complete window (true before the first one). */
  fits(): boolean {
    return this.last?.fits ?? true;
  }

  get latest(): FitResult | null {
    return this.last;
  }

  /** Windows tested so far. */
  get windowsTested(): number {
    return this.tests;
  }
}

/**
 * Quantile of the standard normal distribution (Acklam's algorithm; |relative error| < 1.15e-9).
 * normalQuantile(0.999) = 3.0902.
 */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) throw new RangeError(`normalQuantile needs 0 < p < 1, got ${p}`);
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const lo = 0.02425;
  if (p < lo) {
    const q = Math.sqrt(-2 * Math.log(p));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (p > 1 - lo) return -normalQuantile(1 - p);
  const q = p - 0.5;
  const r = q * q;
  return (
    ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) /
    (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
  );
}

/** P(Z >= z) for a standard normal Z, through erfc (Numerical Recipes' Chebyshev fit erfcc, relative error < 1.2e-7). */
export function normalUpperTail(z: number): number {
  if (z === Infinity) return 0;
  if (z === -Infinity) return 1;
  const x = z / Math.SQRT2;
  const t = 1 / (1 + 0.5 * Math.abs(x));
  const y =
    t *
    Math.exp(
      -x * x -
        1.26551223 +
        t *
          (1.00002368 +
            t *
              (0.37409196 +
                t *
                  (0.09678418 +
                    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  const erfc = x >= 0 ? y : 2 - y;
  return erfc / 2;
}
