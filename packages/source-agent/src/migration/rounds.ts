import { cpusBetween, runMark, type RunMark } from '@forecopy/linux';
import { PrecopyDriver, finalRoundSummary, summarizeRound, type PageBitmap, type RoundDecision, type RoundSummary } from '@forecopy/filter';
import { MessageType, roundEnd, roundStart, type MessageChannel } from '@forecopy/protocol';
import { ConnectionError, ProcessExitedError } from '../errors.js';
import { asChannelError } from '../errno-map.js';
import { roundReport, type RoundConvergence } from '../report.js';
import { PAGE_SIZE } from '@forecopy/protocol';
import type { SendResult } from '../sender.js';
import { addToTotals, type MigrationSession } from './session.js';
import { waitsForSample } from './model.js';
import { measureLink } from './link-rate.js';
import type { DowntimeClock } from './downtime.js';

/** The decision that ends the iterative phase: why, and the pages still to send. */
export type StopDecision = Extract<RoundDecision, { kind: 'stop' }>;

/** A round the driver planned; it reports to the driver. */
export interface IterativeRound {
  final: false;
  round: number;
  pages: PageBitmap;
  driver: PrecopyDriver;
}

/** The stop-and-copy round: what remains of the process, frozen since `clock.frozenAt` (its time is the downtime). */
export interface FinalRound {
  final: true;
  round: number;
  pages: PageBitmap;
  /** The downtime's clock, started at the freeze: the round marks announceMs and sendMs on it. */
  clock: DowntimeClock;
}

/**
 * The iterative phase: round 1 sends every page, each later round what the driver plans (the
 * pages written meanwhile, less what the policy holds back), until a stop rule fires.
 */
export async function runRounds(s: MigrationSession): Promise<StopDecision> {
  const { sampler, space } = s.tracking;
  // Round 1 sends everything there is: writes so far need no record. The scan that take()
  // makes may add mappings, so the driver is sized after it, or round 1 would miss them.
  sampler.take();
  const driver = new PrecopyDriver(space.totalPages, s.opts.stopRules, s.policy);
  let plan = driver.firstRound({ pageRate: s.pageRate, nowMs: sampler.now() }, space.live); // the pages mapped now
  for (;;) {
    const decision = await runRound(s, { final: false, round: plan.round, pages: plan.send, driver });
    if (decision.kind === 'stop') return decision;
    plan = decision.plan;
  }
}

/**
 * Runs one round, iterative or final: RoundStart (with the layout if it changed), the pages,
 * RoundEnd, the destination's RoundAck; then records it (totals, report, log, dashboard).
 * Returns the driver's decision after an iterative round, null after the final one.
 */
export async function runRound(s: MigrationSession, r: IterativeRound): Promise<RoundDecision>;
export async function runRound(s: MigrationSession, r: FinalRound): Promise<null>;
export async function runRound(s: MigrationSession, r: IterativeRound | FinalRound): Promise<RoundDecision | null> {
  const startedAt = r.final ? r.clock.frozenAt : performance.now();
  const ranFrom = r.final ? null : runMark(s.opts.pid);
  const pagesPlanned = r.pages.count();
  await announceRound(s, r.round, r.final, pagesPlanned);
  if (r.final) r.clock.mark('announceMs');
  const { sampler } = s.tracking;
  const skip = !r.final && s.policy.skipRedirtied ? () => sampler.peek(10) : undefined;
  const sent = await s.sender.sendPages(r.round, r.pages, skip);
  if (r.final) r.clock.mark('sendMs');
  if (r.final && sent.unreadable.length > 0) {
    throw new ProcessExitedError(`${sent.unreadable.length} pages of the frozen process could not be read`);
  }
  const pacedMs = r.final ? 0 : await paceRound(s, r);
  // What was written while the round ran (the frozen process writes nothing); a page that could
  // not be read (its mapping vanished meanwhile) counts as written.
  const dirtied = r.final ? null : sampler.take();
  for (const p of sent.unreadable) if (dirtied && p < dirtied.size) dirtied.set(p);
  const endAt = performance.now();
  await s.channel.send(roundEnd({ round: r.round, pagesSent: sent.pagesSent, batches: sent.batches }));
  await expectRoundAck(s.channel, r.round, s.replyTimeoutMs);
  s.forecast.observeRoundTrip(performance.now() - endAt);
  const durationMs = performance.now() - startedAt;
  // A forecasting policy holding pages back plans the next round from a whole sample of this
  // round's time; not after the last round the round cap allows (no round follows to be planned).
  if (!r.final && r.round < r.driver.rules.maxRounds && waitsForSample(s.policy)) await sampler.wholeSampleSince(startedAt);
  const throttlePercent = s.autoConverge?.percent ?? 0; // in force while the round ran
  const ranTo = ranFrom ? runMark(s.opts.pid) : null; // the process's run time at the round's end
  const decision = !r.final && dirtied ? settleRound(s, r.driver, sent, dirtied, { durationMs, pacedMs, ranTo }) : null;
  const summary = r.final
    ? finalRoundSummary(r.round, sent.pagesSent, durationMs)
    : summarizeRound(r.driver.records[r.driver.records.length - 1]);
  const ran = { throttlePercent, ...processCpus(ranFrom, ranTo) };
  recordRound(s, summary, sent, pagesPlanned, convergence(s, summary, decision, ran));
  return decision;
}

/**
 * Under a throttle weighed over periods (--throttle-period-ms), a round may last until it can be
 * weighed (ThrottleSchedule.paceMs): the sampler goes on, and what the process writes meanwhile
 * is the round's. Returns the time waited, ms.
 */
async function paceRound(s: MigrationSession, r: IterativeRound): Promise<number> {
  const waitMs = s.autoConverge?.paceMs(r.driver.rules.maxRounds - r.round) ?? 0;
  if (waitMs <= 0) return 0;
  s.log.info(
    { round: r.round, waitMs: Math.round(waitMs), throttlePercent: s.autoConverge?.percent },
    'auto-converge: the round lasts until its throttle period ends',
  );
  await new Promise((resolve) => setTimeout(resolve, waitMs));
  return waitMs;
}

/**
 * What the round says of convergence: the throttle in force, the rates, the downtime if stopped
 * now (the rest at the measured rate, plus the freeze, verification and handover).
 */
function convergence(
  s: MigrationSession,
  summary: RoundSummary,
  decision: RoundDecision | null,
  ran: Pick<RoundConvergence, 'throttlePercent' | 'processCpus'>,
): RoundConvergence {
  const unsynced = !decision
    ? 0
    : decision.kind === 'stop'
      ? decision.remaining.count()
      : decision.plan.send.count() + decision.plan.held.count();
  return {
    ...ran,
    dirtyRate: summary.durationMs > 0 ? (summary.pagesDirtied / summary.durationMs) * 1000 : 0,
    bandwidthBps: s.pageRate * PAGE_SIZE * 8,
    expectedDowntimeMs: (s.pageRate > 0 ? (unsynced / s.pageRate) * 1000 : 0) + fixedDowntimeMs(s),
  };
}

/** RoundConvergence.processCpus: the CPUs the process used between two marks, where both were read. */
function processCpus(from: RunMark | null, to: RunMark | null): { processCpus?: number } {
  return from && to && to.at > from.at ? { processCpus: cpusBetween(from, to) } : {};
}

/** RoundContext's ranShare: how fast the process ran under the throttle, measured up to `now`, and at which throttle. */
function ranShareOf(s: MigrationSession, now: RunMark | null): { ranShare?: number; ranAtPercent?: number } {
  const m = s.autoConverge?.measuredShare(now);
  return m ? { ranShare: m.share, ranAtPercent: m.atPercent } : {};
}

/** The downtime's forecast fixed costs now, plus what the pacer still owes of the last round. */
function fixedDowntimeMs(s: MigrationSession): number {
  return s.forecast.fixedMs() + s.sender.pacingDebtMs();
}

/** RoundStart, with the layout when the page space changed since the destination last heard of it. */
async function announceRound(s: MigrationSession, round: number, final: boolean, plannedPages: number): Promise<void> {
  const { space } = s.tracking;
  const layoutChanged = space.layoutVersion !== s.announcedLayout;
  s.announcedLayout = space.layoutVersion;
  await s.channel.send(roundStart({ round, final, plannedPages, ...(layoutChanged ? { layout: space.layout() } : {}) }));
}

/** Tells the driver how an iterative round went: the measured rate, the writes; returns its decision. */
function settleRound(
  s: MigrationSession,
  driver: PrecopyDriver,
  sent: SendResult,
  dirtiedSoFar: PageBitmap,
  time: { durationMs: number; pacedMs: number; ranTo: RunMark | null },
): RoundDecision {
  const { space, sampler } = s.tracking;
  const { durationMs } = time;
  // The link is measured over the time it carried the round, not the time the round was paced.
  const sending = { pagesSent: sent.pagesSent, bytesOnWire: sent.bytesOnWire, durationMs: durationMs - time.pacedMs };
  const link = measureLink(s, sending, s.opts.bandwidthBps);
  s.pageRate = link.pageRate;
  s.wireRate = link.wireRate;
  // The space may have grown while we waited for the acknowledgement (the sampler runs on).
  driver.resize(space.totalPages);
  const dirtied = dirtiedSoFar.size === space.totalPages ? dirtiedSoFar : dirtiedSoFar.resized(space.totalPages);
  dirtied.and(space.live);
  // Auto-converge weighs the round before the next is planned (QEMU raises the throttle at the
  // bitmap sync that ends an iteration): the policy plans for the throttle the round runs at.
  s.autoConverge?.afterRound(sent.pagesSent, dirtied.count(), time.ranTo);
  return driver.endRound(
    {
      pagesSent: sent.pagesSent,
      pagesSkipped: sent.pagesSkipped,
      dirtied,
      durationMs,
      pageRate: s.pageRate,
      fixedDowntimeMs: fixedDowntimeMs(s),
      live: space.live, // held pages of a mapping gone are no longer unsynchronized
    },
    {
      pageRate: s.pageRate,
      nowMs: sampler.now(),
      throttlePercent: s.autoConverge?.percent ?? 0,
      ...ranShareOf(s, time.ranTo),
      ...(s.autoConverge ? { throttleMaxPercent: s.autoConverge.maxPercent } : {}),
      ...(s.autoConverge?.roundsToMax !== undefined ? { throttleRoundsToMax: s.autoConverge.roundsToMax } : {}),
    },
  );
}

/** The one place a round is recorded: the totals, the report's rounds, the log, the dashboard, the progress line. */
function recordRound(s: MigrationSession, summary: RoundSummary, sent: SendResult, pagesPlanned: number, c: RoundConvergence): void {
  addToTotals(s.totals, sent);
  const report = roundReport(summary, sent.bytesOnWire, sent.pagesResent, c);
  s.rounds.push(report);
  // The stop-and-copy round is in the migration's final report (its duration is the downtime).
  if (!report.final) s.log.info({ ...report }, 'round done');
  s.opts.onEvent?.({ type: 'round', ...report });
  s.opts.onProgress?.({ phase: 'round', round: report.round, pagesSent: report.pagesSent, pagesPlanned, final: report.final });
}

async function expectRoundAck(channel: MessageChannel, round: number, timeoutMs: number): Promise<void> {
  const ack = await channel.expect(MessageType.RoundAck, timeoutMs).catch((e) => {
    throw asChannelError(e);
  });
  if (ack.header.round !== round) {
    throw new ConnectionError(`the destination acknowledged round ${ack.header.round} while round ${round} was expected`);
  }
}
