import fs from 'node:fs';
import type { Logger } from 'pino';
import {
  MAX_STATES,
  MIN_STATES,
  MarkovModel,
  ModelBuilder,
  POLICY_NAMES,
  createPolicy,
  isPolicyName,
  isStateCount,
  warmUpForecast,
  type ForecastMode,
  type Policy,
  type PolicyName,
  type StopRules,
} from '@forecopy/filter';
import { PAGE_SIZE } from '@forecopy/protocol';
import type { TrackerChoice } from '@forecopy/linux';
import type { PageSpace } from './page-space.js';
import type { Sample, Sampler } from './sampler.js';
import { watchModel, writeFileAtomic } from './model-watch.js';
import type { PolicyContext } from './migration/options.js';
import type { Progress } from './progress.js';
import { InputError } from './errors.js';
import { requireProcess } from './process-checks.js';
import { openTracking } from './tracking.js';

export interface PolicySetup {
  policy: PolicyName;
  states: number;
  modelSeconds: number;
  modelFile?: string;
  lwwsThreshold?: number;
  intervalMs: number;
  bandwidthBps: number;
  /** markov: 'chain' (the paper) or 'visits' (our option). */
  forecast?: ForecastMode;
  /** markov: also skip pages written again during the round (Xen's to_skip). */
  skipRedirtied?: boolean;
  /** forecast: the migration's stop rules (it stops holding back before they fire). */
  stopRules?: StopRules;
}

/**
 * Builds the policy for `migrate` once tracking runs. For markov it first models the process
 * for `modelSeconds` (samples from the migration's own sampler: the tracker has one owner), or
 * loads a saved model.
 */
export function makePolicyFactory(s: PolicySetup): (ctx: PolicyContext) => Promise<Policy> {
  if (!isPolicyName(s.policy)) throw new InputError(`--policy must be one of ${POLICY_NAMES.join(', ')}`);
  if (!isStateCount(s.states)) throw new InputError(`--states must be a whole number from ${MIN_STATES} to ${MAX_STATES}, got ${s.states}`);
  if (s.lwwsThreshold !== undefined && !(s.lwwsThreshold > 0 && s.lwwsThreshold <= 1)) {
    throw new InputError(`--lwws-threshold must be in (0, 1], got ${s.lwwsThreshold}`);
  }
  const preloaded = s.policy === 'markov' && s.modelFile ? loadModel(s.modelFile) : undefined;
  // Before tracking starts: the first plan and the round cap's then run compiled (warmUpForecast).
  const warmUpMs = s.policy === 'forecast' ? warmUpForecast() : 0;
  return async (ctx) => {
    const common = {
      totalPages: ctx.space.totalPages,
      intervalMs: s.intervalMs,
      initialPageRate: s.bandwidthBps > 0 ? s.bandwidthBps / 8 / PAGE_SIZE : 0,
    };
    if (s.policy === 'forecast') {
      if (warmUpMs > 0) ctx.log.info({ warmUpMs }, 'forecast: its planning code compiled before tracking');
      const policy = createPolicy('forecast', { ...common, ...(s.stopRules ? { stopRules: s.stopRules } : {}) });
      await watch(ctx.sampler, ctx.space, policy, s.modelSeconds * 1000, ctx.log, ctx.onProgress);
      return policy;
    }
    if (s.policy !== 'markov') return createPolicy(s.policy, common);
    const observed = preloaded
      ? null
      : await observe(ctx.sampler, ctx.space, s.modelSeconds * 1000, s.states, s.lwwsThreshold, ctx.log, ctx.onProgress);
    const model = preloaded ?? observed!.model;
    const policy = createPolicy('markov', { ...common, model, forecast: s.forecast ?? 'chain', skipRedirtied: s.skipRedirtied ?? false });
    // The forecast starts from the state the process is in: the last sample modelled.
    if (observed?.last) policy.observeSample?.(observed.last.pages, observed.last.atMs);
    return policy;
  };
}

function loadModel(file: string): MarkovModel {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new InputError(`cannot read the model file ${file}: ${(e as Error).message}`);
  }
  try {
    return MarkovModel.fromBytes(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  } catch (e) {
    throw new InputError(`${file} is not a forecopy model: ${(e as Error).message}`);
  }
}

/** Feeds the sampler's (whole) samples to a ModelBuilder for `ms` milliseconds; returns the model and the last sample. */
async function observe(
  sampler: Sampler,
  space: PageSpace,
  ms: number,
  states: number,
  lwwsThreshold: number | undefined,
  log: Logger,
  onProgress?: (p: Progress) => void,
): Promise<{ model: MarkovModel; last: Sample | null }> {
  const builder = new ModelBuilder(space.totalPages, {
    states,
    ...(lwwsThreshold !== undefined ? { lwwsThreshold } : {}),
  });
  let samples = 0;
  let computeMs = 0;
  let last: Sample | null = null;
  const start = sampler.now();
  const off = sampler.onSample((smp) => {
    last = smp;
    const t = performance.now();
    builder.observe(smp.pages);
    computeMs += performance.now() - t;
    samples++;
    onProgress?.({ phase: 'modelling', doneMs: sampler.now() - start, totalMs: ms, samples });
  });
  await new Promise((r) => setTimeout(r, ms));
  off();
  const model = builder.build();
  log.info({ samples, modelBytes: model.byteSize(), computeMsPerSample: samples ? computeMs / samples : 0 }, 'markov model built');
  return { model, last };
}

/** forecast learns online: shows it the sampler's whole samples for `ms` milliseconds before the migration starts. */
async function watch(
  sampler: Sampler,
  space: PageSpace,
  policy: Policy,
  ms: number,
  log: Logger,
  onProgress?: (p: Progress) => void,
): Promise<void> {
  let samples = 0;
  const start = sampler.now();
  const off = sampler.onSample((smp) => {
    policy.observeSample?.(smp.pages, smp.atMs, space.live);
    samples++;
    onProgress?.({ phase: 'modelling', doneMs: sampler.now() - start, totalMs: ms, samples });
  });
  await new Promise((r) => setTimeout(r, ms));
  off();
  log.info({ samples, status: policy.status?.() }, 'forecast: watched the process before migrating');
}

export interface WriteModelOptions {
  pid: number;
  out: string;
  seconds: number;
  states: number;
  intervalMs: number;
  lwwsThreshold?: number;
  tracker: TrackerChoice;
  log: Logger;
  onProgress?: (p: Progress) => void;
  /** Keep watching: a sliding window of the last `windowMinutes`, the file rewritten every `everySeconds`, until SIGINT/SIGTERM. */
  watch?: { windowMinutes: number; everySeconds: number; print?: (line: string) => void };
}

/** `forecopy-source model`: observes a process and saves its model (`--watch`: keeps it fresh). Returns a summary line. */
export async function writeModel(o: WriteModelOptions): Promise<string> {
  if (o.watch) return watchModel({ ...o, ...o.watch });
  requireProcess(o.pid);
  const { sampler, space, close } = openTracking(o.pid, o.tracker, o.intervalMs);
  try {
    sampler.start();
    const { model } = await observe(sampler, space, o.seconds * 1000, o.states, o.lwwsThreshold, o.log, o.onProgress);
    writeFileAtomic(o.out, model.toBytes());
    return `model of pid ${o.pid}: ${model.byteSize()} bytes, written to ${o.out}`;
  } finally {
    close();
  }
}
