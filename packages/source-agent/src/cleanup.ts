import fs from 'node:fs';
import { Freezer, KernelError, SYS, close, injectSyscall, ioctl, readMaps, removeLeftoverThrottle, sys } from '@forecopy/linux';
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
const OUR_FEATURES = (1 << 15) | (1 << 13); // UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
const OUR_FLAGS = 0o2000000 | 0o4000; // O_CLOEXEC | O_NONBLOCK

export function forecopyUffds(pid: number): number[] {
  const out: number[] = [];
  let fds: string[];
  try {
    fds = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    throw new ProcessError(`no process with pid ${pid} (or not permitted to look at it)`);
  }
  for (const fd of fds) {
    try {
      if (!fs.readlinkSync(`/proc/${pid}/fd/${fd}`).includes('[userfaultfd]')) continue;
      const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const flags = parseInt(/^flags:\s*([0-7]+)/m.exec(info)?.[1] ?? '0', 8);
      const features = parseInt(/^API:\s*[0-9a-f]+:([0-9a-f]+):/m.exec(info)?.[1] ?? '0', 16);
      if ((features & OUR_FEATURES) === OUR_FEATURES && (flags & OUR_FLAGS) === OUR_FLAGS) out.push(Number(fd));
    } catch {
      // closed meanwhile
    }
  }
  return out;
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
  const fds = forecopyUffds(pid);
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
