import type { MigrationReport } from './report.js';
import { requireMigratable } from './process-checks.js';
import { abortMigration } from './migration/abort.js';
import { connect } from './migration/connect.js';
import { handover } from './migration/handover.js';
import { hello } from './migration/hello.js';
import { model } from './migration/model.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, replyTimeoutOf, type MigrateOptions } from './migration/options.js';
import { migrationReport } from './migration/outcome.js';
import { HeldProcess } from './migration/release.js';
import { runRounds } from './migration/rounds.js';
import type { MigrationSession } from './migration/session.js';
import { startTracking } from './migration/start-tracking.js';
import { stopAndCopy } from './migration/stop-and-copy.js';
import { type FrozenHashes, hashFrozen, mismatchError, verify } from './migration/verify.js';
import { captureProcess, handOverRestored, recordOf, refuseBlockers, sendProcessState, writeRecord } from './migration/restore.js';
import type { CapturedProcess } from '@forecopy/linux';
import type { DowntimeClock } from './migration/downtime.js';
import { AutoConverge, cpuMark } from './migration/auto-converge.js';

export type { MigrateOptions, PolicyContext } from './migration/options.js';
export { AFTER_ACTIONS, type AfterAction } from './migration/release.js';

/**
 * One live migration, source side, step by step as the protocol runs (packages/protocol/src/
 * frame.ts has the sequence). The order is what keeps the process safe: nothing touches the
 * process before the connection stands, nothing is sent before the destination answered Hello,
 * and until the destination confirms the handover every failure leaves the process running with
 * all tracking removed.
 */
export async function migrate(opts: MigrateOptions): Promise<MigrationReport> {
  const startedAt = new Date().toISOString();
  requireMigratable(opts.pid);
  const channel = await connect(opts, opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, replyTimeoutOf(opts));
  const held = new HeldProcess(opts.pid, opts.log);
  let session: MigrationSession | null = null;
  let t0 = performance.now();
  let handedOver = false;
  let hashed: FrozenHashes | null = null;
  const freeSince = cpuMark(opts.pid); // auto-converge's baseline CPU: over the modelling window too (AutoConverge)
  try {
    // Tracking starts before the first page is read: a page written between its read and the
    // start of tracking would never be sent again.
    const { tracking, trace } = await startTracking(opts, held);
    const { policy, modelMs } = await model(opts, tracking);
    t0 = performance.now(); // the migration proper (totalMs) starts after modelling
    const autoConverge = opts.autoConverge?.enabled ? new AutoConverge(opts.pid, opts.autoConverge, opts.log, freeSince) : null;
    held.autoConverge = autoConverge;
    const s = (session = await hello({ opts, channel, tracking, trace, policy, autoConverge }));
    if (s.restore) refuseBlockers(s); // before the first page moves
    const stop = await runRounds(s);
    // A destination that restores gets the frozen process's state (registers, mappings, files),
    // covered by verification like the pages. It is captured before the last writes are
    // collected: the system calls it injects let the kernel write to the process (rseq's cpu
    // fields), and those writes must reach the final round.
    let captured: CapturedProcess | null = null;
    // Full verification's hashes of the frozen memory are made while the final round is sent:
    // after the capture (its system calls may write to the process) and the last collect (it
    // may find new mappings). Incremental verification has its hashes already (sentHashes).
    const { frozen, clock } = await stopAndCopy(
      s,
      stop,
      held,
      s.restore ? (f) => (captured = captureProcess(s, f)) : undefined,
      s.sender.sentHashes ? undefined : (f) => (hashed = hashFrozen(s, f)),
    );
    Object.assign(s.stopCopyParts, clock.fold('stopCopyMs'));
    if (captured) s.stateHash = await sendProcessState(s, captured);
    clock.mark('stateMs');
    const verification = await verify(s, frozen, hashed);
    clock.mark('verifyMs');
    const measured = { startedAt, t0, modelMs, stopCopyMs: clock.parts.stopCopyMs, stopReason: stop.reason };
    if (verification.mismatch) throw mismatchError(migrationReport(s, measured, verification), verification.mismatch); // the process runs on here
    if (s.restore) writeRecord(opts.stateDir, recordOf(s)); // before Commit: from then on the destination may hold a copy
    // --after resume keeps this copy whatever the destination does with its image: it runs on at
    // once, and the handover (the destination making its image final) is not part of the downtime.
    const resumed = !s.restore && opts.after === 'resume' ? resumeNow(held, clock) : null;
    const committed = await handover(s);
    handedOver = true;
    if (committed.restoredPid !== undefined) {
      clock.mark('handoverMs');
      await handOverRestored(s, committed.restoredPid, held);
      clock.mark('releaseMs');
    } else if (resumed === null) {
      clock.mark('handoverMs');
      held.finish(opts.after, () => clock.mark('releaseMs'));
    }
    // The report is made once the process runs again (here or there): making it (the policy's
    // status among it) took 0.5-6 ms, which had been part of the downtime.
    const report = migrationReport(s, measured, verification);
    if (committed.restoredPid !== undefined) Object.assign(report, { restoredPid: committed.restoredPid, restoreMs: committed.restoreMs });
    s.sender.closeStreams();
    channel.close();
    // The process ran nowhere from the freeze until now (restored and released), or until it was
    // thawed here, or, with --after kill or stop and no restore, until the handover ended.
    report.downtimeMs = resumed ?? clock.totalMs();
    report.downtimeParts = { ...clock.parts, ...(committed.restoreMs !== undefined ? { restoreMs: committed.restoreMs } : {}) };
    Object.assign(report, limitOutcome(opts, report.downtimeMs), convergeOutcome(s), freezeAndHolds(report, held, clock));
    report.totalMs = performance.now() - t0;
    opts.onEvent?.({ type: 'done', verified: true, downtimeMs: report.downtimeMs, totalMs: report.totalMs, pagesSent: report.pagesSent });
    return report;
  } catch (e) {
    throw await abortMigration(e, opts, channel, handedOver, t0);
  } finally {
    (hashed as FrozenHashes | null)?.cancel(); // done, unless the migration ended before its verification
    session?.sender.abort();
    held.release(); // whatever was not handed over runs on, untracked
  }
}

/** Thaws the process here and removes its tracking; returns the downtime, which ends at the thaw. */
function resumeNow(held: HeldProcess, clock: DowntimeClock): number {
  held.finish('resume', () => clock.mark('releaseMs'));
  return clock.totalMs();
}

/** When the freeze began; with the tracker's hold after the thaw (--after resume), if there was one. */
function freezeAndHolds(r: MigrationReport, held: HeldProcess, clock: DowntimeClock): Partial<MigrationReport> {
  return {
    frozenAt: new Date(performance.timeOrigin + clock.frozenAt).toISOString(),
    ...(r.trackingHoldMs && held.holdAfterThawMs !== null ? { trackingHoldMs: { ...r.trackingHoldMs, stopMs: held.holdAfterThawMs } } : {}),
  };
}

/** Whether the downtime stayed within --downtime-limit-ms, and by how much it did not. */
function limitOutcome(opts: MigrateOptions, downtimeMs: number): Partial<MigrationReport> {
  const limit = opts.stopRules.downtimeLimitMs;
  if (limit === undefined) return {};
  const met = downtimeMs <= limit;
  return { downtimeLimitMs: limit, downtimeLimitMet: met, ...(met ? {} : { downtimeOverMs: downtimeMs - limit }) };
}

/** What auto-converge did: the throttle it used and the most it throttled, or why it could not. */
function convergeOutcome(s: MigrationSession): Partial<MigrationReport> {
  const ac = s.autoConverge;
  if (!ac) return {};
  const maxPercent = Math.max(0, ...s.rounds.map((r) => r.throttlePercent ?? 0));
  return {
    autoConverge: {
      throttle: ac.usedKind,
      maxPercent,
      ...(ac.baselineCpus !== null ? { baselineCpus: ac.baselineCpus } : {}),
      ...(ac.heldIntoFreezeMs !== null ? { heldIntoFreezeMs: ac.heldIntoFreezeMs } : {}),
      ...(ac.usedKind !== null ? { throttledMs: ac.throttledMs } : {}),
      ...(ac.unavailable ? { unavailable: ac.unavailable } : {}),
    },
  };
}
