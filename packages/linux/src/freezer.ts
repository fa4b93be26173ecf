import fs from 'node:fs';
import { PTRACE, PTRACE_EVENT, WALL, WIFSTOPPED, WNOHANG, WSTOPSIG, ptrace, tgkill, waitpid } from './libc.js';
import { KernelError } from './errors.js';

const SIGKILL = 9;
const SIGSTOP = 19;
const SIGTRAP = 5;

/** Sleeps synchronously (ptrace calls must stay on this thread, so no awaiting between them). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function threadsOf(pid: number): number[] {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    throw new KernelError('read /proc/PID/task', 3, `no process ${pid}`);
  }
}

/**
 * The wait status of `tid`'s next stop (or exit), or null if none came within `timeoutMs`.
 * Polls with WNOHANG, since ptrace calls must stay on this thread: a few tries at once, then one
 * every `pollMs`.
 */
export function nextWaitStatus(tid: number, timeoutMs: number, pollMs: number): number | null {
  const deadline = Date.now() + timeoutMs;
  for (let spin = 0; ; spin++) {
    const { pid, status } = waitpid(tid, WALL | WNOHANG);
    if (pid === tid) return status;
    if (Date.now() > deadline) return null;
    if (spin > 50) sleepSync(pollMs);
  }
}

/**
 * Waits for `tid` to enter a ptrace-stop. Returns the signal to re-inject on release (0 for a
 * ptrace event stop, the signal for a signal-delivery stop). Throws if the thread exited.
 */
export function waitStopped(tid: number, timeoutMs = 5000): number {
  const status = nextWaitStatus(tid, timeoutMs, 1);
  if (status === null) throw new KernelError('waitpid', 62 /* ETIME */, `thread ${tid} did not stop within ${timeoutMs} ms`);
  if (!WIFSTOPPED(status)) throw new KernelError('waitpid', 3, `thread ${tid} exited`);
  if (PTRACE_EVENT(status) === PTRACE.EVENT_STOP) return 0; // interrupt or group stop
  const sig = WSTOPSIG(status);
  return sig === SIGTRAP ? 0 : sig; // a signal arrived first: hold it, re-inject on release
}

/**
 * A process with every thread held in a ptrace-stop. If this agent dies, the kernel detaches
 * the tracees and the process runs on: a freeze cannot outlive a crashed agent.
 */
export class FrozenProcess {
  private released = false;

  constructor(
    readonly pid: number,
    /** tid -> signal to re-inject when released */
    readonly threads: Map<number, number>,
  ) {}

  get isReleased(): boolean {
    return this.released;
  }

  /** Lets the process run on. */
  thaw(): void {
    if (this.released) return;
    this.released = true;
    for (const [tid, sig] of this.threads) {
      try {
        // tid was seized by us and is in a ptrace-stop; data = the held signal to deliver.
        ptrace(PTRACE.DETACH, tid, 0n, BigInt(sig));
      } catch {
        // thread gone
      }
    }
  }

  /** Kills the process (it never runs again). */
  kill(): void {
    if (this.released) return;
    this.released = true;
    process.kill(this.pid, SIGKILL);
  }

  /** Leaves the process stopped (SIGSTOP), no longer traced. */
  stopped(): void {
    if (this.released) return;
    process.kill(this.pid, SIGSTOP);
    this.thaw();
  }
}

export class Freezer {
  /** Seizes and interrupts every thread, including threads created while freezing. */
  freeze(pid: number, timeoutMs = 5000): FrozenProcess {
    const held = new Map<number, number>();
    const frozen = new FrozenProcess(pid, held);
    try {
      for (let pass = 0; ; pass++) {
        const tids = threadsOf(pid).filter((t) => !held.has(t));
        if (tids.length === 0) break;
        if (pass > 100) throw new KernelError('freeze', 11 /* EAGAIN */, `process ${pid} keeps creating threads`);
        for (const tid of tids) {
          try {
            // tid is a thread of pid (from /proc/PID/task); SEIZE sets no options.
            ptrace(PTRACE.SEIZE, tid);
            ptrace(PTRACE.INTERRUPT, tid);
          } catch (e) {
            if (e instanceof KernelError && e.code === 'ESRCH' && fs.existsSync(`/proc/${pid}`)) continue; // thread exited
            throw e;
          }
          held.set(tid, waitStopped(tid, timeoutMs));
        }
      }
    } catch (e) {
      frozen.thaw();
      throw e;
    }
    return frozen;
  }
}

export { tgkill };
