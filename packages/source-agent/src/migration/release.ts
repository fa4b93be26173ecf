import type { Logger } from 'pino';
import type { FrozenProcess, ThrottleHold } from '@forecopy/linux';
import type { Tracking } from '../tracking.js';
import { processGone } from '../errno-map.js';
import type { AutoConverge } from './auto-converge.js';

/** The source process's fate once the destination made its image final (--after). */
export const AFTER_ACTIONS = ['kill', 'stop', 'resume'] as const;
export type AfterAction = (typeof AFTER_ACTIONS)[number];

/**
 * What a migration holds of the process: its tracking from the start, its freeze from
 * stop-and-copy. Every path that does not hand the process over releases it: it runs on,
 * untracked.
 */
export class HeldProcess {
  tracking: Tracking | null = null;
  frozen: FrozenProcess | null = null;
  /** Auto-converge's throttle: lifted on every path. */
  autoConverge: AutoConverge | null = null;
  /** How long removing the tracking after the thaw (--after resume) could hold the process up, ms (DirtyTracker.stopHoldMs). */
  holdAfterThawMs: number | null = null;

  constructor(
    readonly pid: number,
    private readonly log: Logger,
  ) {}

  /**
   * After the handover: kills the process, or leaves it stopped, or lets it run and then removes
   * its tracking. `downtimeOver` is called when the downtime ends: at the thaw, or once the
   * process is killed or left stopped.
   */
  finish(after: AfterAction, downtimeOver?: () => void): void {
    this.liftThrottle();
    const { tracking, frozen } = this;
    if (!tracking || !frozen) throw new Error('finish() before stop-and-copy');
    this.tracking = null;
    this.frozen = null;
    if (after === 'resume') {
      // What the tracker put into the process goes while the freeze holds it (one injected
      // system call, counted in the downtime): removed after the thaw, it took a second stop of
      // its own, outside the downtime. The rest goes after the thaw (it stops the process no
      // more, but the write protection is lifted under a hold of its memory map, which a write
      // fault waits for: the report's trackingHoldMs.stopMs).
      this.untrack(() => tracking.tracker.closeInTarget(frozen));
      frozen.thaw();
      downtimeOver?.();
      this.untrack(() => tracking.tracker.stop());
      this.holdAfterThawMs = tracking.tracker.stopHoldMs;
      return;
    }
    if (after === 'kill') frozen.kill();
    else {
      tracking.tracker.stop(frozen);
      frozen.stopped();
    }
    downtimeOver?.();
  }

  /** Removes tracking and thaws, if still held; never throws (it runs on failure paths). */
  release(): void {
    this.liftThrottle();
    const { tracking, frozen } = this;
    tracking?.sampler.stop();
    if (!tracking && !frozen) return;
    if (tracking) this.untrack(() => tracking.tracker.stop(frozen));
    try {
      frozen?.thaw();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'could not thaw the process');
    }
    this.tracking = null;
    this.frozen = null;
  }

  /** Runs `remove`, a removal of tracking (or of part of it); never throws. */
  private untrack(remove: () => void): void {
    try {
      remove();
    } catch (e) {
      // Nothing to remove from a process that is gone.
      if (!processGone(this.pid)) this.log.error({ err: (e as Error).message }, 'could not remove tracking from the process');
    }
  }

  /** Lifts auto-converge's throttle (before the freeze, and on every path); never throws. */
  liftThrottle(): void {
    this.autoConverge?.remove();
    this.autoConverge = null;
  }

  /**
   * Lifts the throttle for the freeze: if its duty cycle holds the process right now, the hold
   * is returned, to become the freeze (the process does not run between); never throws.
   */
  liftThrottleForFreeze(): ThrottleHold | null {
    const hold = this.autoConverge?.handOver() ?? null;
    this.autoConverge = null;
    return hold;
  }
}
