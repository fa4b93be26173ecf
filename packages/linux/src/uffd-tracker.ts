import fs from 'node:fs';
import koffi from 'koffi';
import { injectSyscall } from './inject.js';
import type { TrackerKind } from './create-tracker.js';
import { sleepSync, type FrozenProcess } from './freezer.js';
import { AlreadyTrackedError, KernelError } from './errors.js';
import { SYS, close, ioctl, openReadOnly, sys } from './libc.js';
import type { ProcMapping } from './proc-maps.js';

/** Written pages since the last collect: page-aligned [start, end) addresses. */
export interface DirtyRange {
  start: number;
  end: number;
}

export interface CollectResult {
  /** Written since the previous collect (or start), and write-protected again. */
  written: DirtyRange[];
  /**
   * Migratable ranges registered afresh in this collect (new, reshaped, or replaced under the
   * same addresses): the caller must count every page of them as written.
   */
  added: ProcMapping[];
  /** Migratable ranges that refused registration: they must always count as dirty. */
  unregistrable: ProcMapping[];
  /** Time spent in PAGEMAP_SCAN (or pagemap reads) in this collect. */
  scanMs: number;
}

export interface DirtyTracker {
  readonly kind: TrackerKind;
  /** Starts tracking the given mappings; every write after this is reported by a later collect. */
  start(mappings: readonly ProcMapping[]): void;
  collect(mappings: readonly ProcMapping[]): CollectResult;
  /** Removes all tracking from the process. Idempotent; `frozen` when the process is frozen by us. */
  stop(frozen?: FrozenProcess | null): void;
  /**
   * Removes from the process, frozen by us, what the tracker installed in it, so that `stop()`
   * after the thaw holds it stopped no more. Idempotent; tracking goes on until `stop()`.
   */
  closeInTarget(frozen: FrozenProcess): void;
  /** Descriptors the tracker installed in the process (a restore must not carry them). */
  installedFds(): number[];
  /**
   * How long `start()` could hold the process up, ms: the whole call, an upper bound. The
   * uffd-wp tracker stops the process for the system call it injects, and its registration and
   * write protection hold the process's memory map, which a write fault of the process waits
   * for; soft-dirty's clearing holds it too.
   */
  readonly startHoldMs: number;
  /** The same for the last `stop()` (null before one): it holds the memory map as it removes the protection. */
  readonly stopHoldMs: number | null;
}

// ioctl numbers, _IOWR('\xAA', nr, struct) from linux/userfaultfd.h (checked against the 6.1
// headers here); PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg) from linux/fs.h (6.7+).
const UFFDIO_API = 0xc018aa3f; // struct uffdio_api { u64 api, features, ioctls } = 24 bytes
const UFFDIO_REGISTER = 0xc020aa00; // struct uffdio_register { range{start,len}, mode, ioctls } = 32
const UFFDIO_UNREGISTER = 0x8010aa01; // struct uffdio_range { start, len } = 16
const UFFDIO_WRITEPROTECT = 0xc018aa06; // struct uffdio_writeprotect { range, mode } = 24
const PAGEMAP_SCAN = 0xc0606610; // struct pm_scan_arg: 12 u64 = 96 bytes
const UFFD_API = 0xaan;
const UFFD_FEATURE_WP_UNPOPULATED = 1n << 13n;
const UFFD_FEATURE_WP_ASYNC = 1n << 15n;
const UFFDIO_REGISTER_MODE_WP = 2n;
const UFFDIO_WRITEPROTECT_MODE_WP = 1n;
const PM_SCAN_WP_MATCHING = 1n;
const PM_SCAN_CHECK_WPASYNC = 2n;
const PAGE_IS_WRITTEN = 1n << 1n;
const O_CLOEXEC = 0x80000n;
const O_NONBLOCK = 0x800n;
const UFFD_USER_MODE_ONLY = 1n;
const VEC_REGIONS = 4096;
/** stop() lifts the write protection of a running process this many bytes at a time (unprotect). */
const UNPROTECT_CHUNK = 4 << 20;

/**
 * The userfaultfds open in process `pid` that forecopy made (a tracker of this agent or of
 * another, or one a killed agent left), by their signature in /proc/PID/fdinfo: the WP_ASYNC and
 * WP_UNPOPULATED features and O_CLOEXEC|O_NONBLOCK. One the program made for itself does not
 * count. Throws ENOENT (KernelError-like, from fs) when the process is gone.
 */
export function forecopyUffds(pid: number): number[] {
  const features = Number(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED);
  const flags = Number(O_CLOEXEC | O_NONBLOCK);
  const out: number[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (!fs.readlinkSync(`/proc/${pid}/fd/${fd}`).includes('[userfaultfd]')) continue;
      const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const f = parseInt(/^flags:\s*([0-7]+)/m.exec(info)?.[1] ?? '0', 8);
      const api = parseInt(/^API:\s*[0-9a-f]+:([0-9a-f]+):/m.exec(info)?.[1] ?? '0', 16);
      if ((api & features) === features && (f & flags) === flags) out.push(Number(fd));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/**
 * The default dirty tracker: userfaultfd write-protect in asynchronous mode, read and re-armed
 * atomically with the PAGEMAP_SCAN ioctl (Linux 6.7+). The userfaultfd is created inside the
 * target by an injected system call and duplicated into the agent with pidfd_getfd; the target
 * never notices (asynchronous WP resolves its write faults in the kernel).
 */
export class UffdWpTracker implements DirtyTracker {
  readonly kind = 'uffd-wp' as const;
  private uffd = -1; // our duplicate
  private targetFd = -1; // the same file, as a descriptor of the target
  private pagemap = -1;
  /** Registered ranges, by start. */
  private registered = new Map<number, ProcMapping>();
  private refused = new Map<number, ProcMapping>();
  private readonly scanArg = Buffer.alloc(96);
  private readonly vec = Buffer.alloc(VEC_REGIONS * 24);
  startHoldMs = 0;
  stopHoldMs: number | null = null;

  constructor(readonly pid: number) {}

  installedFds(): number[] {
    return this.targetFd >= 0 ? [this.targetFd] : [];
  }

  start(mappings: readonly ProcMapping[]): void {
    this.refuseIfTracked([]);
    const t = performance.now();
    try {
      // In the target: userfaultfd(O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY).
      this.targetFd = Number(injectSyscall(this.pid, SYS.userfaultfd, [O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY]));
      const pidfd = sys('pidfd_open', SYS.pidfd_open, this.pid, 0);
      try {
        this.uffd = sys('pidfd_getfd', SYS.pidfd_getfd, pidfd, this.targetFd, 0);
      } finally {
        close(pidfd);
      }
      const api = Buffer.alloc(24);
      api.writeBigUInt64LE(UFFD_API, 0);
      api.writeBigUInt64LE(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 8);
      ioctl('UFFDIO_API', this.uffd, UFFDIO_API, api);
      this.pagemap = openReadOnly(`/proc/${this.pid}/pagemap`);
      for (const m of mappings) this.register(m);
      // Another agent that started at the same time: its ranges refused ours (EBUSY).
      if (this.busy > 0) this.refuseIfTracked([this.targetFd]);
    } catch (e) {
      this.stop();
      throw e;
    } finally {
      this.startHoldMs = performance.now() - t;
    }
  }

  /**
   * Throws AlreadyTrackedError when another forecopy tracker (not one of `ours`) is open in the
   * process: two would each write-protect and re-arm the other's pages, and the second's
   * registrations are refused, so that it would see no writes at all.
   */
  private refuseIfTracked(ours: number[]): void {
    const other = forecopyUffds(this.pid).filter((fd) => !ours.includes(fd));
    if (other.length > 0) throw new AlreadyTrackedError(this.pid, other);
  }

  /** Registrations refused with EBUSY (a range another userfaultfd has). */
  private busy = 0;

  collect(mappings: readonly ProcMapping[]): CollectResult {
    const added: ProcMapping[] = [];
    const written: DirtyRange[] = [];
    let scanMs = 0;
    /** Scans; false when the range is no longer (wholly) registered: it was replaced meanwhile. */
    const timedScan = (start: number, end: number): boolean => {
      const t = performance.now();
      try {
        this.scan(start, end, written);
        return true;
      } catch (e) {
        // EPERM: the range now touches memory not registered for async WP : the
        // process unmapped and mapped again there since we last looked.
        if (e instanceof KernelError && e.code === 'EPERM') return false;
        throw e;
      } finally {
        scanMs += performance.now() - t;
      }
    };
    const current = new Map<number, ProcMapping>();
    for (const m of mappings) current.set(m.start, m);
    for (const [start, r] of this.refused) {
      const m = current.get(start);
      if (!m || m.end !== r.end) this.refused.delete(start);
    }
    for (const m of mappings) {
      const r = this.registered.get(m.start);
      if (r && r.end === m.end) {
        if (timedScan(m.start, m.end)) continue;
        // Replaced under the same addresses: track it afresh, and all of it counts as written.
        this.registered.delete(m.start);
        this.register(m, m.start);
        added.push(m);
        continue;
      }
      if (this.refused.has(m.start)) continue;
      if (r) {
        // Same start, other end (grown or shrunk in place): collect what was written in the
        // part we tracked before the range is registered again in its new shape.
        timedScan(m.start, Math.min(r.end, m.end));
        this.registered.delete(m.start);
        this.register(m, Math.min(r.end, m.end));
      } else {
        // A range not seen before: register it; its pages count as written (the caller's job).
        this.register(m, m.start);
      }
      added.push(m);
    }
    for (const start of [...this.registered.keys()]) if (!current.has(start)) this.registered.delete(start);
    return { written, added, unregistrable: [...this.refused.values()], scanMs };
  }

  stop(frozen?: FrozenProcess | null): void {
    const t = performance.now();
    try {
      this.removeTracking(frozen);
    } finally {
      this.stopHoldMs = performance.now() - t;
    }
  }

  private removeTracking(frozen?: FrozenProcess | null): void {
    if (this.uffd >= 0) {
      for (const r of this.registered.values()) {
        // From a process that runs, the protection is lifted a few MiB at a time, with a pause
        // between: lifted at once, it held a heartbeat up for longer than the call took (64 MiB:
        // 10-17 ms; 256 MiB: 38-68 ms, from calls of 10-14 ms). In 4 MiB steps 1 ms apart the
        // longest gap was 3.5 ms (64 MiB) and 3-6 ms (256 MiB), for 0.6 ms of the agent's time
        // per MiB; the unregister that follows, on nothing protected, 1-3 ms.
        if (!frozen) this.unprotect(r);
        const range = Buffer.alloc(16);
        range.writeBigUInt64LE(BigInt(r.start), 0);
        range.writeBigUInt64LE(BigInt(r.end - r.start), 8);
        try {
          ioctl('UFFDIO_UNREGISTER', this.uffd, UFFDIO_UNREGISTER, range);
        } catch {
          // the range vanished: nothing to undo
        }
      }
      this.registered.clear();
      close(this.uffd);
      this.uffd = -1;
    }
    if (this.pagemap >= 0) {
      close(this.pagemap);
      this.pagemap = -1;
    }
    this.closeInTarget(frozen);
  }

  /** Lifts the write protection of [r.start, r.end), UNPROTECT_CHUNK at a time, 1 ms apart; stops at the first refusal. */
  private unprotect(r: ProcMapping): void {
    for (let at = r.start; at < r.end; at += UNPROTECT_CHUNK) {
      if (at > r.start) sleepSync(1);
      try {
        this.writeProtect(at, Math.min(at + UNPROTECT_CHUNK, r.end), false);
      } catch {
        return; // the range changed meanwhile: the unregister lifts the rest
      }
    }
  }

  /** Also stop()'s last step, frozen or not. Our duplicate keeps the userfaultfd (and the tracking) alive until stop(). */
  closeInTarget(frozen?: FrozenProcess | null): void {
    if (this.targetFd < 0) return;
    const fd = this.targetFd;
    this.targetFd = -1;
    if (fs.existsSync(`/proc/${this.pid}`)) {
      // close(fd) in the target: the userfaultfd is released with its last descriptor.
      injectSyscall(this.pid, SYS.close, [BigInt(fd)], frozen ? { frozen } : {});
    }
  }

  /** Registers [m.start, m.end) for WP and write-protects [wpFrom, m.end). */
  private register(m: ProcMapping, wpFrom = m.start): void {
    const reg = Buffer.alloc(32);
    reg.writeBigUInt64LE(BigInt(m.start), 0);
    reg.writeBigUInt64LE(BigInt(m.end - m.start), 8);
    reg.writeBigUInt64LE(UFFDIO_REGISTER_MODE_WP, 16);
    try {
      ioctl('UFFDIO_REGISTER', this.uffd, UFFDIO_REGISTER, reg);
    } catch (e) {
      if (e instanceof KernelError && e.code === 'ESRCH') throw e;
      if (e instanceof KernelError && e.code === 'EBUSY') this.busy++;
      this.refused.set(m.start, m);
      return;
    }
    this.registered.set(m.start, m);
    if (wpFrom >= m.end) return;
    try {
      this.writeProtect(wpFrom, m.end, true);
    } catch {
      // Fall back on a scan that write-protects everything present (PM_SCAN_WP_MATCHING).
      this.scan(wpFrom, m.end, []);
    }
  }

  /** UFFDIO_WRITEPROTECT over [start, end): protects, or (`protect` false) lifts the protection. */
  private writeProtect(start: number, end: number, protect: boolean): void {
    const wp = Buffer.alloc(24);
    wp.writeBigUInt64LE(BigInt(start), 0);
    wp.writeBigUInt64LE(BigInt(end - start), 8);
    wp.writeBigUInt64LE(protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0n, 16);
    ioctl('UFFDIO_WRITEPROTECT', this.uffd, UFFDIO_WRITEPROTECT, wp);
  }

  /** PAGEMAP_SCAN over [start, end): appends written ranges and re-protects them atomically. */
  private scan(start: number, end: number, out: DirtyRange[]): void {
    const a = this.scanArg;
    const vecAddr = koffi.address(this.vec);
    let from = start;
    while (from < end) {
      a.writeBigUInt64LE(96n, 0); // size
      a.writeBigUInt64LE(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, 8);
      a.writeBigUInt64LE(BigInt(from), 16);
      a.writeBigUInt64LE(BigInt(end), 24);
      a.writeBigUInt64LE(0n, 32); // walk_end (out)
      a.writeBigUInt64LE(vecAddr, 40); // vec: this.vec, VEC_REGIONS page_regions of 24 bytes
      a.writeBigUInt64LE(BigInt(VEC_REGIONS), 48);
      a.writeBigUInt64LE(0n, 56); // max_pages: no limit
      a.writeBigUInt64LE(0n, 64); // category_inverted
      a.writeBigUInt64LE(PAGE_IS_WRITTEN, 72); // category_mask
      a.writeBigUInt64LE(0n, 80); // category_anyof_mask
      a.writeBigUInt64LE(PAGE_IS_WRITTEN, 88); // return_mask
      let n: number;
      try {
        n = ioctl('PAGEMAP_SCAN', this.pagemap, PAGEMAP_SCAN, a);
      } catch (e) {
        // The range vanished between reading maps and scanning: nothing of it to send.
        if (e instanceof KernelError && (e.code === 'ENOENT' || e.code === 'EINVAL')) return;
        throw e;
      }
      for (let i = 0; i < n; i++) {
        const s = Number(this.vec.readBigUInt64LE(i * 24));
        const e = Number(this.vec.readBigUInt64LE(i * 24 + 8));
        const last = out[out.length - 1];
        if (last && last.end === s) last.end = e;
        else out.push({ start: s, end: e });
      }
      const walkEnd = Number(a.readBigUInt64LE(32));
      if (walkEnd <= from) break;
      from = walkEnd;
    }
  }
}

/** Whether this kernel offers PAGEMAP_SCAN (a scan of our own memory answers, not ENOTTY). */
export function pagemapScanSupported(): boolean {
  let fd = -1;
  try {
    fd = openReadOnly('/proc/self/pagemap');
    const a = Buffer.alloc(96);
    const vec = Buffer.alloc(24 * 4);
    a.writeBigUInt64LE(96n, 0);
    const start = BigInt(koffi.address(vec)) & ~4095n;
    a.writeBigUInt64LE(start, 16);
    a.writeBigUInt64LE(start + 4096n, 24);
    a.writeBigUInt64LE(koffi.address(vec), 40);
    a.writeBigUInt64LE(4n, 48);
    a.writeBigUInt64LE(PAGE_IS_WRITTEN, 88);
    ioctl('PAGEMAP_SCAN', fd, PAGEMAP_SCAN, a);
    return true;
  } catch {
    return false;
  } finally {
    if (fd >= 0) close(fd);
  }
}
