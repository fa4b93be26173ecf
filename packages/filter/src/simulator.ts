import { PageBitmap } from './page-bitmap.js';
import {
  PrecopyDriver,
  finalRoundSummary,
  summarizeRound,
  type Policy,
  type RoundContext,
  type RoundSummary,
  type StopRules,
} from './policy.js';
import type { Trace } from './trace-format.js';
import { TraceFormatError } from './errors.js';
import { ThrottleSchedule, thinWrites, type ThrottleParams } from './auto-converge.js';

// Replays a recorded dirty trace through the very PrecopyDriver and policies the live agent
// runs, over a modelled link, deterministically: the same trace and options always give the
// same numbers.
//
// The model:
// - time is the trace's clock; the migration starts at `startMs` (after the modelling window,
//   for every policy alike, so they all meet the same writes);
// - the link carries `pageRate` pages a second, nothing else takes time;
// - a sample stamped t holds the writes of the interval ending at t, and counts as written at t;
// - the sender sends in batches of `batchPages`; with a policy's skipRedirtied, a batch skips the
//   pages written since the round began (Xen's to_skip);
// - stop-and-copy sends what remains at the measured rate: downtime = remaining / pageRate;
// - a migration longer than the trace wraps around to its start (reported as `wrapped`);
// - with `autoConverge`, the throttle the live agent would set (ThrottleSchedule) thins the
//   writes of every sample taken while it is in force (thinWrites): the policy sees, and the
//   rounds meet, what a throttled process writes.

export interface SimOptions {
  pageRate: number;
  stopRules: StopRules;
  startMs: number;
  batchPages?: number;
  /** QEMU's auto-converge, as the live agent runs it (--auto-converge on). */
  autoConverge?: ThrottleParams;
}

export interface SimReport {
  policy: string;
  downtimeMs: number;
  totalMs: number;
  pagesSent: number;
  memoryPages: number;
  stopReason: string;
  rounds: RoundSummary[];
  wrapped: boolean;
  /** The throttle in force during each iterative round, in percent (all 0 without auto-converge). */
  throttles: number[];
}

/** The trace as a clock: what was written in (from, to]. */
export class TraceClock {
  readonly durationMs: number;
  wrapped = false;

  constructor(readonly trace: Trace) {
    if (trace.samples.length === 0) throw new TraceFormatError('the trace has no samples');
    this.durationMs = trace.samples[trace.samples.length - 1].atMs;
  }

  /** Samples stamped in (from, to], in order, with their times on the unwrapped clock. */
  *between(from: number, to: number): IterableIterator<{ atMs: number; pages: PageBitmap }> {
    const d = this.durationMs;
    if (!(d > 0)) return;
    for (let lap = Math.floor(from / d); lap * d < to; lap++) {
      if (lap > 0) this.wrapped = true;
      for (const s of this.trace.samples) {
        const t = lap * d + s.atMs;
        if (t > from && t <= to && !(lap > 0 && s.atMs === 0)) yield { atMs: t, pages: s.pages };
      }
    }
  }

  /** Union of the writes in (from, to], sized `size`, as a process throttled by `throttle`% wrote them. */
  written(from: number, to: number, size: number, throttle = 0): PageBitmap {
    const out = new PageBitmap(size);
    for (const s of this.between(from, to)) {
      const pages = s.pages.size === size ? s.pages : s.pages.resized(size);
      out.or(thinWrites(pages, throttle, s.atMs));
    }
    return out;
  }
}

export function simulate(trace: Trace, policy: Policy, opts: SimOptions): SimReport {
  const N = trace.totalPages;
  const clock = new TraceClock(trace);
  const batch = opts.batchPages ?? 256;
  const msPerPage = 1000 / opts.pageRate;
  let now = opts.startMs;
  const schedule = opts.autoConverge ? new ThrottleSchedule(opts.autoConverge) : null;
  const throttles: number[] = [];
  const feed = (from: number, to: number) => {
    const throttle = schedule?.percent ?? 0;
    for (const s of clock.between(from, to))
      policy.observeSample?.(thinWrites(s.pages.size === N ? s.pages : s.pages.resized(N), throttle, s.atMs), s.atMs);
  };
  // The policy sees the trace up to the start (a model builder would have seen it too).
  feed(-1, now);
  const driver = new PrecopyDriver(N, opts.stopRules, policy);
  const ctx = (): Omit<RoundContext, 'round'> => ({ pageRate: opts.pageRate, nowMs: now });
  let plan = driver.firstRound(ctx());
  const rounds: RoundSummary[] = [];
  for (;;) {
    const start = now;
    let sent = 0;
    let skipped = 0;
    const pages = [...plan.send];
    const re = new PageBitmap(N); // written since the round began, for skipRedirtied
    let seen = start;
    for (let i = 0; i < pages.length; i += batch) {
      let chunk = pages.slice(i, i + batch);
      if (policy.skipRedirtied) {
        re.or(clock.written(seen, now, N, schedule?.percent));
        seen = now;
        const before = chunk.length;
        chunk = chunk.filter((p) => !re.has(p));
        skipped += before - chunk.length;
      }
      const t0 = now;
      now += chunk.length * msPerPage;
      sent += chunk.length;
      feed(t0, now);
    }
    const dirtied = clock.written(start, now, N, schedule?.percent);
    throttles.push(schedule?.percent ?? 0);
    const decision = driver.endRound(
      { pagesSent: sent, pagesSkipped: skipped, dirtied, durationMs: now - start, pageRate: opts.pageRate },
      ctx(),
    );
    const rec = driver.records[driver.records.length - 1];
    rounds.push(summarizeRound(rec));
    schedule?.afterRound(rec.pagesSent, rec.pagesDirtied);
    if (decision.kind === 'stop') {
      const remaining = decision.remaining.count();
      const downtimeMs = remaining * msPerPage;
      rounds.push(finalRoundSummary(rec.round + 1, remaining, downtimeMs));
      return {
        policy: policy.name,
        downtimeMs,
        totalMs: now + downtimeMs - opts.startMs,
        pagesSent: driver.pagesSent + remaining,
        memoryPages: N,
        stopReason: decision.reason,
        rounds,
        wrapped: clock.wrapped,
        throttles,
      };
    }
    plan = decision.plan;
  }
}
