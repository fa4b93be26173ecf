import { PrecopyPolicy, type Policy, type StopRules } from './policy.js';
import { TpoPolicy, type TpoOptions } from './tpo-policy.js';
import { XenSkipPolicy } from './xen-skip-policy.js';
import { MarkovPolicy, type MarkovPolicyOptions } from './markov-policy.js';
import type { MarkovModel } from './markov-model.js';
import { ForecastPolicy } from './forecast-policy.js';

export const POLICY_NAMES = ['precopy', 'xen-skip', 'tpo', 'markov', 'forecast'] as const;
export type PolicyName = (typeof POLICY_NAMES)[number];

export function isPolicyName(name: string): name is PolicyName {
  return POLICY_NAMES.some((p) => p === name);
}

export interface PolicyOptions extends Partial<MarkovPolicyOptions> {
  /** The page space's size (tpo keeps per-page counts). */
  totalPages?: number;
  /** Required for markov. */
  model?: MarkovModel;
  /** tpo: k of h (default 2 of 3). */
  tpo?: Partial<TpoOptions>;
  /** forecast: the driver's stop rules (it stops holding back before they fire). */
  stopRules?: StopRules;
}

/**
 * Every policy by name, on the one Policy interface the live agent and the simulator drive.
 * markov needs `model`, and takes `intervalMs` (the sampling interval) and `initialPageRate`
 * (bandwidth / page size, used until the link is measured). forecast learns online from the
 * samples it is shown; it takes `totalPages`, `intervalMs`, `initialPageRate` and `stopRules`.
 */
export function createPolicy(name: PolicyName, opts: PolicyOptions = {}): Policy {
  switch (name) {
    case 'precopy':
      return new PrecopyPolicy();
    case 'xen-skip':
      return new XenSkipPolicy();
    case 'tpo':
      return new TpoPolicy(opts.totalPages ?? 0, opts.tpo);
    case 'markov':
      if (!opts.model) throw new Error('the markov policy needs a model');
      return new MarkovPolicy(opts.model, opts);
    case 'forecast':
      return new ForecastPolicy(opts.totalPages ?? 0, {
        ...(opts.intervalMs !== undefined ? { intervalMs: opts.intervalMs } : {}),
        ...(opts.initialPageRate !== undefined ? { initialPageRate: opts.initialPageRate } : {}),
        ...(opts.stopRules ? { stopRules: opts.stopRules } : {}),
      });
    default:
      throw new Error(`unknown policy ${String(name)}: one of ${POLICY_NAMES.join(', ')}`);
  }
}
