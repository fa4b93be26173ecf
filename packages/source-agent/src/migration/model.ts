import type { Policy } from '@forecopy/filter';
import { helloEvent, sampleEvent } from '../ui-events.js';
import type { Tracking } from '../tracking.js';
import type { MigrateOptions } from './options.js';

/**
 * Starts sampling and makes the policy: markov models the process first, through the sampler
 * (the paper builds its model in normal operation, so the time is reported apart as modelMs).
 * From then on every sample goes to the policy, and to the dashboard.
 */
export async function model(opts: MigrateOptions, tracking: Tracking): Promise<{ policy: Policy; modelMs: number }> {
  const { sampler, space } = tracking;
  sampler.start();
  const t = performance.now();
  const policy = await opts.makePolicy({ sampler, space, log: opts.log, onProgress: opts.onProgress });
  const modelMs = performance.now() - t;
  // With the pages mapped at each sample: forecast learns how long the process's mappings live.
  sampler.onSample((s) => policy.observeSample?.(s.pages, s.atMs, space.live));
  const emit = opts.onEvent;
  if (emit) {
    emit(helloEvent(opts.pid, policy.name, space.livePages));
    sampler.onSample((s) => emit(sampleEvent(s.pages, s.atMs, policy)));
  }
  return { policy, modelMs };
}

/**
 * Whether a round waits for a whole sample of its own time before the next is planned
 * (runRound): for a policy that forecasts from the samples while it holds pages back, as the
 * paper's filter identifies the current state afresh each round. Without the wait, a round that
 * sends little or nothing (everything held) would end at once and the next would repeat the same
 * forecast from the same sample. A round with nothing held does not wait: plain pre-copy's
 * rounds, and their convergence, stay as they are. forecopy-sim models the same rule.
 */
export function waitsForSample(policy: Policy): boolean {
  return !!policy.observeSample && ((policy as { heldLastPlan?: number }).heldLastPlan ?? 1) > 0;
}
