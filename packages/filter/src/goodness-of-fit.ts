import type { MarkovModel } from './markov-model.js';

/**
 * Model maintenance (paper 3.3, "Maintain the Markov model"): does the recent sequence of states
 * still follow the model's distribution of states and transitions?
 *
 * The test: the mean log-likelihood of the last `window` transitions under the model, against the
 * mean the model's own training transitions scored. Under the model, a window's mean is about
 * normal with the training mean and std/sqrt(window); a window scoring `zCritical` standard
 * errors below it fails (one-sided, z = 3.09 is p = 0.001 per window). A new state, a state
 * visited far more often than it used to be, or a transition the model never saw all pull the
 * mean down, so this one number tests both distributions at the cost of one addition per
 * sample. The standard deviation is floored (MIN_STD) so that a perfectly regular training
 * sequence does not make the test fire on the first harmless deviation.
 */
export interface FitResult {
  fits: boolean;
  /** The window's mean log-likelihood per transition. */
  meanLogLik: number;
  /** How many standard errors below the training mean it lies. */
  z: number;
  zCritical: number;
}

export const DEFAULT_FIT_WINDOW = 20;
export const DEFAULT_Z_CRITICAL = 3.09;
const MIN_STD = 0.5;

export class FitMonitor {
  private readonly lls: number[] = [];
  private prev: number | null = null;
  private last: FitResult | null = null;

  constructor(
    private readonly model: MarkovModel,
    readonly window = DEFAULT_FIT_WINDOW,
    readonly zCritical = DEFAULT_Z_CRITICAL,
  ) {}

  /** Feeds the state of the next sample; returns a verdict once a whole window was seen, else null. */
  observe(state: number): FitResult | null {
    if (this.prev !== null) {
      this.lls.push(this.model.logProb(this.prev, state));
      if (this.lls.length > this.window) this.lls.shift();
    }
    this.prev = state;
    if (this.lls.length < this.window) return null;
    const mean = this.lls.reduce((a, b) => a + b, 0) / this.lls.length;
    const t = this.model.trainingLogLik;
    const se = Math.max(t.std, MIN_STD) / Math.sqrt(this.lls.length);
    const z = (t.mean - mean) / se;
    this.last = { fits: z <= this.zCritical, meanLogLik: mean, z, zCritical: this.zCritical };
    return this.last;
  }

  get latest(): FitResult | null {
    return this.last;
  }
}
