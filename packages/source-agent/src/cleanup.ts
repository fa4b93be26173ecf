import {
  Freezer,
  KernelError,
  SYS,
  close,
  forecopyUffds,
  injectSyscall,
  ioctl,
  readMaps,
  removeLeftoverThrottle,
  sys,
} from '@forecopy/linux';
import { ProcessError } from './errors.js';

// `forecopy-source cleanup --pid PID`: removes what a killed source agent may have left in a
// process. A tracer and a freeze cannot outlive the agent (the kernel detaches tracees when their
// tracer dies), but the userfaultfd it installed stays open in the process, with its ranges
// write-protected (asynchronously: the process does not block, but each first write costs a
// fault). This finds the userfaultfds forecopy made, by their signature in /proc/PID/fdinfo (the
// WP_ASYNC and WP_UNPOPULATED features, O_CLOEXEC|O_NONBLOCK), unregisters every range and closes
// them in the process. A userfaultfd the program made for itself is left alone. A CPU throttle
// (auto-converge) left on it is lifted: it goes back to its cgroup, and the throttle's is removed.

const UFFDIO_UNREGISTER = 0x8010aa01;

/** The userfaultfds forecopy made in the process (forecopyUffds), or a ProcessError when there is no such process. */
function ourUffds(pid: number): number[] {
  try {
    return forecopyUffds(pid);
  } catch {
    throw new ProcessError(`no process with pid ${pid} (or not permitted to look at it)`);
  }
}

/** Returns a summary line. */
export function cleanupProcess(pid: number): string {
  const throttle = removeLeftoverThrottle(pid);
  const uffds = removeUffds(pid);
  if (!throttle && !uffds) return `pid ${pid}: nothing of forecopy's left in it`;
  return [throttle, uffds].filter(Boolean).join('; ');
}

/** The userfaultfds a killed agent left; returns what was done, or null. */
function removeUffds(pid: number): string | null {
  const fds = ourUffds(pid);
  if (fds.length === 0) return null;
  const frozen = new Freezer().freeze(pid);
  try {
    const pidfd = sys('pidfd_open', SYS.pidfd_open, pid, 0);
    try {
      for (const fd of fds) {
        const ours = sys('pidfd_getfd', SYS.pidfd_getfd, pidfd, fd, 0);
        try {
          for (const m of readMaps(pid)) {
            const range = Buffer.alloc(16);
            range.writeBigUInt64LE(BigInt(m.start), 0);
            range.writeBigUInt64LE(BigInt(m.end - m.start), 8);
            try {
              ioctl('UFFDIO_UNREGISTER', ours, UFFDIO_UNREGISTER, range);
            } catch (e) {
              if (!(e instanceof KernelError)) throw e; // a range this uffd never had: fine
            }
          }
        } finally {
          close(ours);
        }
        injectSyscall(pid, SYS.close, [BigInt(fd)], { frozen });
      }
    } finally {
      close(pidfd);
    }
  } finally {
    frozen.thaw();
  }
  return `pid ${pid}: removed ${fds.length} userfaultfd${fds.length > 1 ? 's' : ''} left by forecopy (fd ${fds.join(', ')})`;
}
