import { stopAndCopy as stopAndCopyMessage } from '@forecopy/protocol';
import { Freezer, type FrozenProcess } from '@forecopy/linux';
import { asSourceError } from '../errno-map.js';
import { DowntimeClock } from './downtime.js';
import type { HeldProcess } from './release.js';
import { runRound, type StopDecision } from './rounds.js';
import type { MigrationSession } from './session.js';

/**
 * Stop-and-copy: freezes the process (held by `held` from then on), collects its last writes and
 * sends, in the final round, what remains unsynchronized. The downtime runs from the freeze to
 * the destination's acknowledgement of that round. The process stays frozen.
 */
export async function stopAndCopy(
  s: MigrationSession,
  stop: StopDecision,
  held: HeldProcess,
  /** Runs on the frozen process before its last writes are collected (see migrate()). */
  onFrozen?: (frozen: FrozenProcess) => void,
  /** Runs once they are, before the final round: the pages and the mappings are final. */
  onCollected?: (frozen: FrozenProcess) => void,
): Promise<{ frozen: FrozenProcess; clock: DowntimeClock }> {
  const { sampler, space } = s.tracking;
  const pid = s.opts.pid;
  sampler.stop();
  // The throttle goes first: a duty cycle holds the process through ptrace, which the freeze
  // needs. If it holds the process right now, that hold becomes the freeze: released first, the
  // process would run (and write) for the moment the freeze takes (live: 4,053 pages of
  // stress-ng, 85 ms more downtime). The downtime still starts here, at the stop decision; the
  // report says how long the throttle had held the process before (autoConverge.heldIntoFreezeMs).
  const hold = held.liftThrottleForFreeze();
  const frozenAt = performance.now();
  let frozen: FrozenProcess;
  try {
    frozen = hold?.frozen ?? new Freezer().freeze(pid);
  } catch (e) {
    throw asSourceError(e, pid);
  }
  if (hold && s.autoConverge) s.autoConverge.heldIntoFreezeMs = frozenAt - hold.sinceMs;
  held.frozen = frozen;
  // The downtime's clock: stop-and-copy's parts first (MigrationReport.stopCopyParts).
  const clock = new DowntimeClock(frozenAt);
  clock.mark('freezeMs');
  if (s.opts.dieWhenFrozen) process.kill(process.pid, 'SIGKILL');
  onFrozen?.(frozen);
  const round = s.rounds.length + 1;
  const last = sampler.take();
  const remaining = stop.remaining.resized(space.totalPages).or(last).and(space.live);
  onCollected?.(frozen);
  clock.mark('collectMs');
  await s.channel.send(stopAndCopyMessage({ round }));
  await runRound(s, { final: true, round, pages: remaining, clock });
  clock.mark('ackMs');
  return { frozen, clock };
}
