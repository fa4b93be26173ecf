import type { Logger } from 'pino';
import { QEMU_THROTTLE, ThrottleSchedule, type ThrottleParams } from '@forecopy/filter';
import {
  cpuSeconds,
  cpusBetween,
  openCpuThrottle,
  runMark,
  type CpuThrottle,
  type RunMark,
  type ThrottleHold,
  type ThrottleMethod,
} from '@forecopy/linux';
import { undoOnInterrupt } from '../interrupt.js';

/** --auto-converge, QEMU's cpu-throttle parameters (percent), and --throttle-by. */
export interface AutoConvergeOptions extends ThrottleParams {
  enabled: boolean;
  /** A cgroup's CPU quota, a ptrace duty cycle, or the first of them that can be used (auto). */
  method?: ThrottleMethod;
}

export const AUTO_CONVERGE_DEFAULTS: Readonly<Required<AutoConvergeOptions>> = Object.freeze({
  enabled: true,
  method: 'auto',
  ...QEMU_THROTTLE,
  periodMs: 0,
});

/**
 * Auto-converge, as QEMU does it: when to throttle and how much is the filter's ThrottleSchedule
 * (the simulator runs the same); the throttle is a CPU quota through a cgroup, or where none can
 * be made a stop/continue duty cycle held through ptrace (packages/linux cpu-throttle.ts). Where
 * neither can be used, auto-converge says so once and the migration goes on without it.
 * `remove()` lifts it; the migration calls it before the freeze and on every path (HeldProcess).
 */
export class AutoConverge {
  private throttle: CpuThrottle | null = null;
  /** Drops the throttle's undo on an interrupt (interrupt.ts), once it is lifted. */
  private dropUndo: () => void = () => {};
  private readonly schedule: ThrottleSchedule;
  /** The kind of throttle it used (kept after remove(), for the report). */
  usedKind: string | null = null;
  /** How long its duty cycle had held the process when that hold became the freeze (stop-and-copy), ms. */
  heldIntoFreezeMs: number | null = null;
  /** Why it could not throttle, when it could not. */
  unavailable: string | null = null;

  private readonly method: ThrottleMethod;
  /**
   * CPU time (s) and wall time (performance.now()) when the process was last seen running
   * freely: the baseline of what it runs is measured from there to the first throttle.
   */
  private readonly cpuAtStart: number;
  private readonly wallAtStart: number;
  /** The CPUs the process used before it was first throttled (1.0 = one CPU all the time). */
  baselineCpus: number | null = null;
  /** Each throttle set so far, from when it was set (the process's run time then; measuredShare). */
  private readonly levels: ThrottleLevel[] = [];
  /** The time the throttle took from the process so far, ms: each throttle's time in force times its percent. */
  private takenMs = 0;
  /** When the throttle in force was set. */
  private since = 0;

  /**
   * `since`: where to measure the baseline from (cpuMark when the migration began, before its
   * modelling window; default: now). Measured from the end of the modelling window instead, a
   * filter whose first rounds hold everything back (and last a few ms) left the baseline to a
   * tick or two of CPU time (10 ms each), off by several times either way: a process using 5% of
   * a CPU was given 1%, every quota of the throttle a fifth of what it should be.
   */
  constructor(
    private readonly pid: number,
    opts: AutoConvergeOptions,
    private readonly log: Logger,
    since: CpuMark = cpuMark(pid),
  ) {
    this.schedule = new ThrottleSchedule(opts, performance.now());
    this.method = opts.method ?? 'auto';
    this.cpuAtStart = since.cpuSeconds;
    this.wallAtStart = since.wallMs;
  }

  /** The throttle in force, in percent. */
  get percent(): number {
    return this.throttle?.percent ?? 0;
  }

  /** The highest throttle it may still set, in percent (the one in force where it cannot throttle). */
  get maxPercent(): number {
    return this.unavailable ? this.percent : this.schedule.params.max;
  }

  /** The rounds still needed before the throttle is at its highest (ThrottleSchedule.roundsToMax; 0 where it cannot throttle). */
  get roundsToMax(): number | undefined {
    return this.unavailable ? 0 : this.schedule.roundsToMax;
  }

  /** How much longer the round that is running should last, ms (ThrottleSchedule.paceMs; `roundsAfter`: the rounds the cap allows after it). */
  paceMs(roundsAfter: number): number {
    return this.unavailable ? 0 : this.schedule.paceMs(performance.now(), roundsAfter);
  }

  /**
   * How fast the process ran under the throttle, measured: the CPU it used against its baseline,
   * in (0, 1], and the throttle it ran at (pooledShare: over the throttle in force and, where that
   * was set too recently to tell, the ones before it, back to a time long enough to tell).
   * Undefined when the process has not been throttled (nothing to measure against), has not been
   * throttled long enough yet, or could not be read.
   */
  measuredShare(now: RunMark | null = runMark(this.pid)): { share: number; atPercent: number } | undefined {
    if (!now || !this.baselineCpus) return undefined;
    return pooledShare(this.levels, now, this.baselineCpus);
  }

  /**
   * After an iterative round: raises the throttle when the process writes faster than the link.
   * `mark`: the process's run time at the round's end (where a new throttle's time starts).
   */
  afterRound(pagesSent: number, pagesDirtied: number, mark: RunMark | null = runMark(this.pid)): void {
    if (this.unavailable) return;
    const next = this.schedule.afterRound(pagesSent, pagesDirtied, performance.now());
    if (next === this.percent) return;
    try {
      if (!this.throttle) {
        const t = openCpuThrottle(this.pid, this.method);
        this.throttle = t;
        this.dropUndo = undoOnInterrupt(`lifted auto-converge's throttle from process ${this.pid}`, () => t.remove());
      }
      this.usedKind = this.throttle.kind;
      this.baselineCpus ??= this.usedSoFar();
      this.account();
      this.throttle.set(next, this.baselineCpus);
      if (mark) this.levels.push({ from: mark, percent: next });
      this.log.info({ percent: next, kind: this.throttle.kind, baselineCpus: this.baselineCpus }, 'auto-converge: throttled the process');
    } catch (e) {
      this.unavailable = (e as Error).message;
      this.log.warn({ err: this.unavailable }, 'auto-converge: cannot throttle the process; going on without');
    }
  }

  /** The CPUs the process used since the migration began (at least a hundredth of one). */
  private usedSoFar(): number {
    const wallS = (performance.now() - this.wallAtStart) / 1000;
    return Math.max(0.01, wallS > 0 ? (safeCpuSeconds(this.pid) - this.cpuAtStart) / wallS : 1);
  }

  /** The time the throttle took from the process, ms: each throttle's time in force times its percent (until lifted). */
  get throttledMs(): number {
    return this.takenMs + ((performance.now() - this.since) * this.percent) / 100;
  }

  /** Adds the time of the throttle in force up to now. */
  private account(): void {
    const now = performance.now();
    this.takenMs += ((now - this.since) * this.percent) / 100;
    this.since = now;
  }

  /** Lifts the throttle and removes its cgroup; never throws. */
  remove(): void {
    this.account();
    this.throttle?.remove();
    this.throttle = null;
    this.dropUndo();
  }

  /** As remove(), but a duty cycle that holds the process right now hands its hold over (CpuThrottle.handOver). */
  handOver(): ThrottleHold | null {
    this.account();
    const hold = this.throttle?.handOver() ?? null;
    this.throttle = null;
    this.dropUndo();
    return hold;
  }
}

/** A throttle auto-converge set: from when (the process's run time then) and how much, percent. */
export interface ThrottleLevel {
  from: RunMark;
  percent: number;
}

/**
 * How fast a throttled process ran, measured: its run time against `baselineCpus` over the
 * throttle in force (the last of `levels`) up to `now`, if that lasted long enough to tell (two of
 * its cycles: a duty cycle's 10 ms of running and its stop; at least 200 ms); else over it and the
 * throttles before it, back to the first that makes the time long enough. `atPercent` is the
 * throttle the time ran at on average (its running shares weighed by how long each lasted), so
 * that a process slowed by its share measures its share at it, whatever the mix. Without the
 * pooling, throttles that each lasted less (the rounds of a filter that holds everything back last
 * a few ms, and the throttle rises every two) were never measured, and the round after them was
 * planned at the share assumed (live, session 24: a paced writer that ran at full speed under a
 * 70% throttle was planned at 20% under 80%, and sent 24,500 pages it wrote again). Undefined when
 * no time long enough has passed since the first throttle.
 */
export function pooledShare(
  levels: readonly ThrottleLevel[],
  now: RunMark,
  baselineCpus: number,
): { share: number; atPercent: number } | undefined {
  let end = now.at;
  let running = 0; // the sum of each throttle's running share (percent) times its time, ms
  let maxPercent = 0;
  for (let i = levels.length - 1; i >= 0; i--) {
    const { from, percent } = levels[i];
    running += (100 - percent) * Math.max(0, end - from.at);
    end = Math.min(end, from.at);
    maxPercent = Math.max(maxPercent, percent);
    const wallMs = now.at - from.at;
    if (!(wallMs >= Math.max(200, (2 * 10 * 100) / (100 - Math.min(99, maxPercent))))) continue;
    return { share: Math.min(1, Math.max(0.01, cpusBetween(from, now) / baselineCpus)), atPercent: 100 - running / wallMs };
  }
  return undefined;
}

/** A process's CPU time and the wall time it was read at. */
export interface CpuMark {
  cpuSeconds: number;
  wallMs: number;
}

/** Process `pid`'s CPU time now (AutoConverge measures its baseline from such a mark). */
export function cpuMark(pid: number): CpuMark {
  return { cpuSeconds: safeCpuSeconds(pid), wallMs: performance.now() };
}

function safeCpuSeconds(pid: number): number {
  try {
    return cpuSeconds(pid);
  } catch {
    return 0; // gone: the throttle will not matter
  }
}
