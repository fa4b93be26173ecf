import type { Logger } from 'pino';
import { openCpuThrottle, type CpuThrottle } from '@forecopy/linux';

/** QEMU's cpu-throttle parameters (percent). */
export interface AutoConvergeOptions {
  enabled: boolean;
  initial: number;
  increment: number;
  max: number;
}

export const AUTO_CONVERGE_DEFAULTS: Readonly<AutoConvergeOptions> = Object.freeze({ enabled: true, initial: 20, increment: 10, max: 99 });

/**
 * Auto-converge, as QEMU does it: when the pages written during a round exceed half of those
 * sent in it (its throttle-trigger-threshold), for the second time, the process is slowed down:
 * to `initial` percent the first time, `increment` more each time after, at most `max`. The
 * throttle is a CPU quota through a cgroup (packages/linux cpu-throttle.ts); where none can be
 * made, auto-converge says so once and the migration goes on without it. `remove()` lifts it; the
 * migration calls it on every path (HeldProcess).
 */
export class AutoConverge {
  private throttle: CpuThrottle | null = null;
  /** The kind of throttle it used (kept after remove(), for the report). */
  usedKind: string | null = null;
  private highRounds = 0;
  /** Why it could not throttle, when it could not. */
  unavailable: string | null = null;

  constructor(
    private readonly pid: number,
    private readonly opts: AutoConvergeOptions,
    private readonly log: Logger,
  ) {}

  /** The throttle in force, in percent. */
  get percent(): number {
    return this.throttle?.percent ?? 0;
  }

  /** After an iterative round: raises the throttle when the process writes faster than the link. */
  afterRound(pagesSent: number, pagesDirtied: number): void {
    if (!this.opts.enabled || this.unavailable) return;
    if (!(pagesDirtied > pagesSent / 2)) return;
    if (++this.highRounds < 2) return;
    this.highRounds = 0;
    const next = this.percent === 0 ? this.opts.initial : Math.min(this.opts.max, this.percent + this.opts.increment);
    if (next === this.percent) return;
    try {
      this.throttle ??= openCpuThrottle(this.pid);
      this.usedKind = this.throttle.kind;
      this.throttle.set(next);
      this.log.info({ percent: next, kind: this.throttle.kind }, 'auto-converge: throttled the process');
    } catch (e) {
      this.unavailable = (e as Error).message;
      this.log.warn({ err: this.unavailable }, 'auto-converge: cannot throttle the process; going on without');
    }
  }

  /** Lifts the throttle and removes its cgroup; never throws. */
  remove(): void {
    this.throttle?.remove();
    this.throttle = null;
  }
}
