import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Freezer, type FrozenProcess } from './freezer.js';
import { readProcStat } from './proc-stat.js';

// Slowing a process down for auto-converge: a CPU quota through a cgroup of its own, made next to
// (v2) or under (v1) the cgroup it is in, named forecopy-throttle-<pid>, so that a leftover one is
// found and removed by `forecopy-source cleanup`. The process goes back where it was and the
// cgroup is removed when the throttle is removed.
//
// The quota is (100 - percent)% of the CPU the process used before it was throttled (its
// `baseline`, measured by the caller; without one, a CPU per thread that can run, at most the
// host's CPUs). So the throttle takes that share of what the process actually runs, as QEMU's
// cpu-throttle takes it of a vCPU's time: a CPU-bound process and one that sleeps most of the
// time (a paced writer, a server between requests) are both slowed by it. A quota of the whole
// CPUs would slow the second only once it fell below the little it uses.

export const THROTTLE_PREFIX = 'forecopy-throttle-';
/** The quota's period: 100 ms, longer (up to the kernel's 1 s) where the quota would be under 1 ms. */
const PERIOD_US = 100_000;
const MAX_PERIOD_US = 1_000_000;
const MIN_QUOTA_US = 1000;
/**
 * The duty cycle's run slice, QEMU's CPU_THROTTLE_TIMESLICE_NS: the process runs 10 ms, then is
 * held 10 ms x percent / (100 - percent) (990 ms at 99%). Short slices would not slow a program
 * that makes up for lost time by the clock (a paced writer, a server with a queue); stops of a
 * second do.
 */
const RUN_SLICE_MS = 10;

/** How a process is slowed down: a cgroup's CPU quota, or a stop/continue duty cycle held through ptrace. */
export type ThrottleKind = 'cgroup-v1' | 'cgroup-v2' | 'ptrace';

/** Which throttle to use: a cgroup where one can be made, else ptrace (auto), or only the one named. */
export const THROTTLE_METHODS = ['auto', 'cgroup', 'ptrace'] as const;
export type ThrottleMethod = (typeof THROTTLE_METHODS)[number];

export interface CpuThrottle {
  /** 'cgroup-v1' (cpu.cfs_quota_us), 'cgroup-v2' (cpu.max) or 'ptrace' (a duty cycle). */
  readonly kind: ThrottleKind;
  readonly percent: number;
  /**
   * Holds the process to (100 - percent)% of what it ran before: `baselineCpus`, the CPUs it used
   * (1.0 = one CPU all the time). 0 lifts the limit but keeps the cgroup.
   */
  set(percent: number, baselineCpus?: number): void;
  /** Moves the process back and removes the cgroup. Idempotent; never throws. */
  remove(): void;
  /**
   * As remove(), for a freeze that follows at once: a throttle that holds the process stopped
   * right now (a duty cycle's stop phase) keeps it stopped and hands the hold over, with when it
   * began (performance.now()), instead of letting it run for the moment before the freeze.
   * Returns null when it does not hold the process. Never throws.
   */
  handOver(): ThrottleHold | null;
}

/** A duty cycle's hold on the process, handed over to the freeze that follows (CpuThrottle.handOver). */
export interface ThrottleHold {
  frozen: FrozenProcess;
  sinceMs: number;
}

interface Hierarchy {
  kind: 'cgroup-v1' | 'cgroup-v2';
  /** Where the hierarchy is mounted. */
  mount: string;
  /** The process's cgroup in it, e.g. '/' or '/system.slice/app.service'. */
  cgroup: string;
}

/** The cgroup hierarchy that can limit the CPU of `pid` here, or null (none usable). */
export function cpuHierarchy(pid: number): Hierarchy | null {
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n');
  const lines = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
  for (const m of mounts) {
    const f = m.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0) continue;
    const [fstype, , superOpts] = f.slice(sep + 1);
    if (fstype === 'cgroup' && superOpts?.split(',').includes('cpu')) {
      const line = lines.find((l) => l.split(':')[1]?.split(',').includes('cpu'));
      if (line) return { kind: 'cgroup-v1', mount: f[4], cgroup: line.split(':').slice(2).join(':') };
    }
  }
  for (const m of mounts) {
    const f = m.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || f[sep + 1] !== 'cgroup2') continue;
    const line = lines.find((l) => l.startsWith('0::'));
    if (!line) continue;
    const cgroup = line.slice(3);
    // cpu.max exists in a cgroup only where its parent enabled the cpu controller for it.
    const parent = path.join(f[4], path.dirname(cgroup));
    try {
      if (fs.readFileSync(path.join(parent, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('cpu')) {
        return { kind: 'cgroup-v2', mount: f[4], cgroup };
      }
    } catch {
      // not readable: not usable
    }
  }
  return null;
}

/**
 * Starts throttling `pid` at 0% (no limit yet) by `method`: auto takes a cgroup where one can be
 * made and the ptrace duty cycle otherwise. Throws when the method cannot be used.
 */
export function openCpuThrottle(pid: number, method: ThrottleMethod = 'auto'): CpuThrottle {
  if (method === 'ptrace') return new PtraceDutyCycle(pid);
  try {
    return openCgroupThrottle(pid);
  } catch (e) {
    if (method === 'cgroup') throw e;
    return new PtraceDutyCycle(pid);
  }
}

/** A CPU quota through a cgroup of the process's own. Throws when no cgroup hierarchy can. */
function openCgroupThrottle(pid: number): CpuThrottle {
  const h = cpuHierarchy(pid);
  if (!h) throw new Error('no cgroup here can limit the CPU of a process (neither the v1 cpu controller nor cpu.max of v2)');
  // v1: a child of its own cgroup (limits nest). v2: a sibling (a cgroup with processes cannot
  // have children with controllers), so limits set on its own cgroup do not apply while throttled.
  const home = path.join(h.mount, h.cgroup);
  const dir =
    h.kind === 'cgroup-v1' ? path.join(home, `${THROTTLE_PREFIX}${pid}`) : path.join(path.dirname(home), `${THROTTLE_PREFIX}${pid}`);
  fs.mkdirSync(dir, { recursive: false });
  const throttle = new CgroupThrottle(pid, h.kind, dir, home);
  try {
    throttle.set(0);
    fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(pid)); // v1 and v2: every thread moves
  } catch (e) {
    throttle.remove();
    throw e;
  }
  return throttle;
}

class CgroupThrottle implements CpuThrottle {
  percent = 0;
  private removed = false;

  constructor(
    readonly pid: number,
    readonly kind: 'cgroup-v1' | 'cgroup-v2',
    private readonly dir: string,
    private readonly home: string,
  ) {}

  set(percent: number, baselineCpus?: number): void {
    this.percent = Math.max(0, Math.min(99, percent));
    const cpus = runnableCpus(this.pid);
    const base = baselineCpus !== undefined && baselineCpus > 0 ? Math.min(baselineCpus, cpus) : cpus;
    const share = ((100 - this.percent) / 100) * base; // CPUs it may use
    const period = Math.round(Math.min(MAX_PERIOD_US, Math.max(PERIOD_US, MIN_QUOTA_US / share)));
    const quota = this.percent === 0 ? -1 : Math.max(MIN_QUOTA_US, Math.round(share * period));
    if (this.kind === 'cgroup-v1') {
      // No limit first, then the period, then the quota: each write is valid whatever the old values.
      fs.writeFileSync(path.join(this.dir, 'cpu.cfs_quota_us'), '-1');
      fs.writeFileSync(path.join(this.dir, 'cpu.cfs_period_us'), String(period));
      fs.writeFileSync(path.join(this.dir, 'cpu.cfs_quota_us'), String(quota));
    } else {
      fs.writeFileSync(path.join(this.dir, 'cpu.max'), `${quota < 0 ? 'max' : quota} ${period}`);
    }
  }

  handOver(): null {
    this.remove();
    return null;
  }

  remove(): void {
    if (this.removed) return;
    this.removed = true;
    releaseThrottle(this.pid, this.dir, this.home);
  }
}

/**
 * The throttle where no cgroup can be used, QEMU's cpu-throttle applied to a process: it runs a
 * slice of RUN_SLICE_MS, then is held in a ptrace-stop (every thread seized and interrupted, as
 * the freezer does) for RUN_SLICE_MS x percent / (100 - percent), then detached. It is not traced
 * while it runs, so signals and new threads behave as usual; a signal that arrives during a stop
 * is delivered at the detach. If the agent dies, the kernel detaches the tracees and the process
 * runs on: unlike a duty cycle of SIGSTOP and SIGCONT, no crash can leave it stopped. The timers
 * run on the agent's event loop, so a busy loop lengthens a phase.
 */
export class PtraceDutyCycle implements CpuThrottle {
  readonly kind = 'ptrace' as const;
  percent = 0;
  private timer: NodeJS.Timeout | null = null;
  private held: FrozenProcess | null = null;
  private heldSince = 0;
  private removed = false;

  constructor(readonly pid: number) {}

  set(percent: number): void {
    if (this.removed) return;
    this.percent = Math.max(0, Math.min(99, percent));
    if (this.percent > 0 && !this.timer) this.stopPhase();
  }

  remove(): void {
    if (this.removed) return;
    this.stopCycling();
    this.runPhase();
  }

  handOver(): ThrottleHold | null {
    if (this.removed) return null;
    this.stopCycling();
    const frozen = this.held;
    this.held = null;
    return frozen && !frozen.isReleased ? { frozen, sinceMs: this.heldSince } : null;
  }

  private stopCycling(): void {
    this.removed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** Holds the process for its share of a cycle, then lets it run a slice (a process that cannot be held is left to run). */
  private stopPhase(): void {
    const holdMs = (RUN_SLICE_MS * this.percent) / (100 - this.percent);
    this.held = null;
    try {
      if (holdMs > 0) this.held = new Freezer().freeze(this.pid, 1000);
      this.heldSince = performance.now();
    } catch {
      // gone, or busy (another tracer): nothing to hold this cycle
    }
    this.timer = setTimeout(() => {
      this.runPhase();
      if (!this.removed) this.timer = setTimeout(() => this.stopPhase(), RUN_SLICE_MS);
    }, holdMs);
  }

  private runPhase(): void {
    try {
      this.held?.thaw();
    } catch {
      // gone
    }
    this.held = null;
  }
}

/**
 * The time the live threads of `pid` have run so far, in ns: the first field of each thread's
 * /proc/PID/task/TID/schedstat, which counts in ns where stat's utime and stime count in ticks
 * of 10 ms. A thread that exited takes its time with it: over an interval in which threads come
 * and go, the difference is the run time of the threads that lived through it. Without
 * schedstat (a kernel without CONFIG_SCHEDSTATS), stat's ticks.
 */
export function runNanoseconds(pid: number): number {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return cpuSeconds(pid) * 1e9; // throws in its turn if the process is gone
  }
  let ns = 0;
  for (const tid of tids) {
    try {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT' && fs.existsSync(`/proc/${pid}/task/${tid}`)) return cpuSeconds(pid) * 1e9;
      // the thread exited meanwhile
    }
  }
  return ns;
}

/** A process's run time (runNanoseconds) and when it was read (performance.now()). */
export interface RunMark {
  ns: number;
  at: number;
}

/** The CPUs a process used between two marks of its run time (1.0 = one CPU all the time; `to` after `from`). */
export function cpusBetween(from: RunMark, to: RunMark): number {
  return Math.max(0, (to.ns - from.ns) / 1e6 / (to.at - from.at));
}

/** Process `pid`'s run time now, or null where it cannot be read (gone). */
export function runMark(pid: number): RunMark | null {
  try {
    return { ns: runNanoseconds(pid), at: performance.now() };
  } catch {
    return null;
  }
}

/** The CPU time `pid` has used so far (user and system, all threads), in seconds. */
export function cpuSeconds(pid: number): number {
  const st = readProcStat(pid);
  return (st.field(14) + st.field(15)) / CLOCK_TICKS;
}

/** sysconf(_SC_CLK_TCK): 100 on every Linux architecture forecopy runs on (x86_64, arm64). */
const CLOCK_TICKS = 100;

/** Threads that can run at once: the process's threads, at most the host's CPUs. */
function runnableCpus(pid: number): number {
  let threads = 1;
  try {
    threads = fs.readdirSync(`/proc/${pid}/task`).length;
  } catch {
    // gone: the quota no longer matters
  }
  return Math.max(1, Math.min(threads, os.cpus().length));
}

/** Moves `pid` (if it still exists) from `dir` to `home` and removes `dir`; never throws. */
function releaseThrottle(pid: number, dir: string, home: string): void {
  // The limit goes first: a process that used up its quota sleeps until the next period (up to
  // 1 s at 99%); lifting the limit wakes it at once, where moving it out did not (a freeze right
  // after waited up to a period: 0.6-1 s of downtime in 2 of 4 runs of the auto-converge test).
  try {
    const v1 = path.join(dir, 'cpu.cfs_quota_us');
    if (fs.existsSync(v1)) fs.writeFileSync(v1, '-1');
    else fs.writeFileSync(path.join(dir, 'cpu.max'), 'max');
  } catch {
    // gone: the move below does what is left
  }
  try {
    if (fs.existsSync(`/proc/${pid}`)) fs.writeFileSync(path.join(home, 'cgroup.procs'), String(pid));
  } catch {
    // exited meanwhile
  }
  try {
    fs.rmdirSync(dir);
  } catch {
    // still busy (a process we did not move) or gone: nothing more to do
  }
}

/**
 * A throttle a killed agent left on `pid`: if the process is in a forecopy-throttle cgroup, it
 * goes back to the cgroup above and the throttle's cgroup is removed. Returns what was done, or
 * null when there was nothing.
 */
export function removeLeftoverThrottle(pid: number): string | null {
  const h = cpuHierarchy(pid);
  if (!h || !path.basename(h.cgroup).startsWith(THROTTLE_PREFIX)) return null;
  const dir = path.join(h.mount, h.cgroup);
  // v1: the throttle is a child of the process's own cgroup; v2: a sibling, whose owner is not
  // recorded, so the process goes to the parent.
  const home = path.dirname(dir);
  releaseThrottle(pid, dir, home);
  return `moved process ${pid} out of the CPU throttle ${dir} and removed it`;
}
