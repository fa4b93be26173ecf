import { PeerAbortError } from '@forecopy/protocol';
import { AlreadyTrackedError, TrackerUnsupportedError, hasExited, readProcStat, sleepSync } from '@forecopy/linux';
import {
  ConnectionError,
  DestinationAbortError,
  ProcessError,
  ProcessExitedError,
  RestoreFailedError,
  SourceError,
  TrackingError,
} from './errors.js';

// What an error of the system (errno), of the Linux layer or of the channel means for a
// migration, as one of the agent's errors (errors.ts). Errors it does not know go on unchanged.

/** An error about process `pid` (ptrace, /proc, process_vm_readv, the tracker) as the user's error. */
export function asSourceError(e: unknown, pid: number): Error {
  if (e instanceof SourceError) return e;
  if (e instanceof TrackerUnsupportedError) return new TrackingError(e.message, { cause: e });
  if (e instanceof AlreadyTrackedError) {
    return new ProcessError(
      `${e.message}: one agent at a time records, models or migrates a process; if none runs, forecopy-source cleanup --pid ${pid} removes it`,
      { cause: e },
    );
  }
  const err = e as { code?: string; message?: string };
  // A process that dies under us can answer ptrace with EPERM and /proc with EACCES as well.
  if (['ESRCH', 'ENOENT', 'EPERM', 'EACCES'].includes(err.code ?? '') && goneSoon(pid, 500)) {
    return new ProcessExitedError(`process ${pid} exited during the migration`, { cause: e });
  }
  if (err.code === 'ESRCH' || err.code === 'ENOENT') {
    return processGone(pid)
      ? new ProcessExitedError(`process ${pid} exited during the migration`, { cause: e })
      : new ProcessError(`process ${pid}: ${err.message}`, { cause: e });
  }
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    return new ProcessError(
      `not permitted to trace process ${pid}: run as root or with CAP_SYS_PTRACE (and the same user), and check /proc/sys/kernel/yama/ptrace_scope`,
      { cause: e },
    );
  }
  return e as Error;
}

/** An error of the channel to the destination (its codes start with E_) as the user's error. */
export function asChannelError(e: unknown): Error {
  if (e instanceof SourceError) return e;
  if (e instanceof PeerAbortError && e.peerCode.startsWith('E_RESTORE')) {
    return new RestoreFailedError(`the destination cannot restore the process (${e.peerCode}): ${e.reason}; the process runs on here`, {
      cause: e,
    });
  }
  if (e instanceof PeerAbortError) return new DestinationAbortError(`the destination aborted: ${e.reason}`, { cause: e });
  const err = e as { code?: string; message?: string };
  if (typeof err.code === 'string' && err.code.startsWith('E_')) {
    return new ConnectionError(`the connection to the destination failed: ${err.message}`, { cause: e });
  }
  return e as Error;
}

/** Whether the process is gone within `ms` (an exiting process answers ESRCH before it is a zombie). */
export function goneSoon(pid: number, ms: number): boolean {
  for (let t = 0; t <= ms; t += 10) {
    if (processGone(pid)) return true;
    sleepSync(10);
  }
  return false;
}

/**
 * Gone, a zombie its parent has not reaped yet, or already exiting (a big process can take a
 * while to release its memory, and answers ptrace with EPERM meanwhile): either way it exited.
 */
export function processGone(pid: number): boolean {
  try {
    return hasExited(readProcStat(pid));
  } catch {
    return true;
  }
}
