import fs from 'node:fs';
import { RestoreError } from './errors.js';
import { isCloexec } from './fd-table.js';
import { type Husk, HuskThread, SCRATCH_ADDR, SCRATCH_BYTES, waitStop, HUSK_BASE } from './husk.js';
import { PTRACE, SYS, addressOf, ptrace, ptraceBuf, ptraceRegset, syscall6 } from './libc.js';
import { KernelError } from './errors.js';
import type { FdState, ProcessState, ThreadState, VmaState } from './process-state.js';
import { readMaps } from './proc-maps.js';
import { readProcStat } from './proc-stat.js';

// Turns a prepared husk, whose migrated segments the rounds have filled, into the migrated
// process: the other mappings, the descriptors, the process-wide state, the threads with their
// registers; then holds it stopped until the handover says it may run. The order matters:
//
//   1. every signal blocked in the husk (nothing may interrupt an injected call)
//   2. mappings that were not migrated: files mapped again, their changed pages written,
//      protections set; memfds made again
//   3. the husk's own text unmapped: from here on the calls go through a `syscall` instruction
//      of the program's own text (each call stops at its exit, so nothing after it runs)
//   4. descriptors, working directory, umask, personality, signal handlers, mm fields with the
//      executable (the kernel changes /proc/PID/exe only once the husk's is unmapped), name
//   5. credentials (after every call that needs root; the threads made next inherit them)
//   6. threads: clone, then per thread robust list, rseq, alternate stack, clear-child-tid,
//      name, pending signals
//   7. the scratch area unmapped; every thread's registers, FPU state and signal mask; limits
//   8. held: SIGSTOP queued, ptrace detached, so the process waits in a group stop that no
//      crash of ours can undo; released by SIGCONT, discarded by SIGKILL

const PAGE = 4096;
const NT_X86_XSTATE = 0x202;
const O_RDONLY = 0;
const O_CLOEXEC = 0o2000000;
const O_CREAT = 0o100;
const O_EXCL = 0o200;
const O_NOCTTY = 0o400;
const O_TRUNC = 0o1000;
const O_WRONLY_APPEND_CREAT = 0o1 | 0o2000 | O_CREAT;
const F_SETFD = 2;
const F_DUPFD_CLOEXEC = 1030;
const PR_SET_NAME = 15;
const PR_SET_DUMPABLE = 4;
const PR_SET_MM = 35;
const PR_SET_MM_MAP = 14;
const CLONE_THREAD_FLAGS = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000; // VM FS FILES SIGHAND THREAD SYSVSEM
const MAP_FIXED = 0x10;
const MAP_PRIVATE = 0x02;
const MAP_SHARED = 0x01;
const MAP_ANON = 0x20;
const SS_DISABLE = 2;
const SI_TKILL = -6;
const SIGSTOP = 19;
const SIGCONT = 18;

/** Where the restored process's standard streams go when they were pipes or terminals. */
export interface StdioBinding {
  stdin: string;
  stdout: string;
  stderr: string;
}

export interface RestoreOptions {
  stdio: StdioBinding;
  /** Called after each step with its name (progress, timings). */
  onStep?: (step: string) => void;
}

/** A restored process, held stopped until `release()`. */
export class RestoredProcess {
  constructor(
    readonly pid: number,
    /** Field 22 of /proc/PID/stat: tells this process from a later one with the same pid. */
    readonly startTime: string,
    /** What could not be restored as it was at the source, one sentence each (logged, in the manifest). */
    readonly notes: readonly string[] = [],
  ) {}

  /** Lets it run (SIGCONT also discards the SIGSTOP it waits on). */
  release(): void {
    process.kill(this.pid, SIGCONT);
  }

  discard(): void {
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Rebuilds `state` in `husk`. On failure the husk is killed and a RestoreError thrown. */
export function restoreProcess(husk: Husk, state: ProcessState, contents: Buffer, opts: RestoreOptions): RestoredProcess {
  const step = (name: string) => opts.onStep?.(name);
  try {
    const allBlocked = Buffer.alloc(8, 0xff);
    ptraceBuf(PTRACE.SETSIGMASK, husk.pid, 8n, allBlocked);
    const memfds = restoreMappings(husk, state, contents);
    // From here on the calls go through a `syscall` of the program's own text: the husk's is
    // unmapped, which also lets the executable link change (setMm).
    husk.main.syscallAddr = findSyscallGadget(husk, state.vmas);
    for (const m of readMaps(husk.pid)) {
      if (m.start >= HUSK_BASE && m.end <= SCRATCH_ADDR) husk.main.call(SYS.munmap, [m.start, m.end - m.start]);
    }
    step('mappings');
    const notes: string[] = [];
    restoreFds(husk, state.fds, opts.stdio, memfds);
    restoreProcessWide(husk, state, notes);
    step('process');
    restoreCreds(husk, state.creds); // after every call that needs privileges, before the threads (they inherit them)
    const threads = restoreThreads(husk, state);
    step('threads');
    husk.main.call(SYS.munmap, [SCRATCH_ADDR, SCRATCH_BYTES]);
    threads.forEach((t, i) => {
      setRegisters(t.tid, state.threads[i]);
    });
    restoreRlimits(husk.pid, state.rlimits, notes);
    step('registers');
    const startTime = startTimeOf(husk.pid);
    hold(
      husk.pid,
      threads.map((t) => t.tid),
    );
    step('held');
    return new RestoredProcess(husk.pid, startTime, notes);
  } catch (e) {
    husk.kill();
    if (e instanceof RestoreError) throw e;
    throw new RestoreError('E_RESTORE_STATE', `could not restore the process: ${(e as Error).message}`, e);
  }
}

/**
 * Returns the memfds made, by inode, still open in the husk at numbers above every descriptor of
 * `fds` (restoreFds gives them their own numbers).
 */
function restoreMappings(husk: Husk, s: ProcessState, contents: Buffer): Map<number, number> {
  const { vmas, contents: ranges } = s;
  const memfdBase = Math.max(64, ...s.fds.map((f) => f.fd + 1));
  // Where each content range's bytes start in `contents`.
  const offsets: number[] = [];
  let pos = 0;
  for (const r of ranges) {
    offsets.push(pos);
    pos += r.pages * PAGE;
  }
  const memfds = new Map<number, number>(); // inode -> the husk's descriptor of the new memfd
  for (const v of vmas) {
    const len = v.end - v.start;
    const inside = ranges.map((r, i) => ({ r, off: offsets[i] })).filter(({ r }) => r.addr >= v.start && r.addr < v.end);
    const prot = protOf(v.perms);
    const needWrite = inside.length > 0;
    switch (v.kind) {
      case 'migrated':
        if (v.perms !== 'rw-p') husk.main.call(SYS.mprotect, [v.start, len, prot]);
        continue;
      case 'vdso':
      case 'vsyscall':
        continue;
      case 'file-private':
      case 'file-shared': {
        checkFile(v);
        const shared = v.kind === 'file-shared';
        const writable = shared && v.perms[1] === 'w';
        const fd = openInHusk(husk, v.path, writable ? 2 : O_RDONLY);
        const mapProt = needWrite && !shared ? prot | 3 : prot;
        husk.main.call(SYS.mmap, [v.start, len, mapProt, (shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED, fd, v.offset]);
        husk.main.call(SYS.close, [fd]);
        break;
      }
      case 'anon':
        husk.main.call(SYS.mmap, [v.start, len, needWrite ? prot | 3 : prot, MAP_PRIVATE | MAP_ANON | MAP_FIXED, -1, 0]);
        break;
      case 'anon-shared':
        husk.main.call(SYS.mmap, [v.start, len, prot | 3, MAP_SHARED | MAP_ANON | MAP_FIXED, -1, 0]);
        break;
      case 'memfd': {
        let fd = memfds.get(v.inode);
        if (fd === undefined) {
          const name = v.path.replace(/^\/memfd:/, '').replace(/ \(deleted\)$/, '');
          const made = Number(husk.main.call(SYS.memfd_create, [husk.scratch(0, Buffer.from(`${name}\0`)), 1 /* MFD_CLOEXEC */]));
          // Out of the way of the descriptors restoreFds will set (it closes the rest).
          fd = Number(husk.main.call(SYS.fcntl, [made, F_DUPFD_CLOEXEC, memfdBase]));
          husk.main.call(SYS.close, [made]);
          husk.main.call(77 /* ftruncate */, [fd, Math.max(v.file?.size ?? 0, v.offset + len)]);
          memfds.set(v.inode, fd);
        }
        husk.main.call(SYS.mmap, [v.start, len, prot | 3, MAP_SHARED | MAP_FIXED, fd, v.offset]);
        break;
      }
    }
    for (const { r, off } of inside) husk.write(r.addr, contents.subarray(off, off + r.pages * PAGE));
    const mapped = v.kind === 'anon-shared' || v.kind === 'memfd' || needWrite;
    if (mapped && (prot & 3) !== 3) husk.main.call(SYS.mprotect, [v.start, len, prot]);
  }
  return memfds;
}

function protOf(perms: string): number {
  return (perms[0] === 'r' ? 1 : 0) | (perms[1] === 'w' ? 2 : 0) | (perms[2] === 'x' ? 4 : 0);
}

/** A mapped file must be the same file here: same size and modification time. */
function checkFile(v: VmaState): void {
  if (!v.file) return;
  checkIdentity(v.file.path, v.file.size, v.file.mtimeNs);
}

export function checkIdentity(path: string, size: number, mtimeNs: string): void {
  let st: fs.BigIntStats;
  try {
    st = fs.statSync(path, { bigint: true });
  } catch {
    throw new RestoreError('E_RESTORE_FILE', `${path} does not exist here`);
  }
  if (Number(st.size) !== size || st.mtimeNs.toString() !== mtimeNs) {
    throw new RestoreError('E_RESTORE_FILE', `${path} differs here (size ${st.size} against ${size}, or another modification time)`);
  }
}

function openInHusk(husk: Husk, path: string, flags: number, mode = 0o644): number {
  const at = husk.scratch(0, Buffer.from(`${path}\0`));
  try {
    return Number(husk.main.call(SYS.open, [at, flags | O_CLOEXEC, mode]));
  } catch (e) {
    throw new RestoreError('E_RESTORE_FILE', `cannot open ${path} here: ${(e as Error).message}`, e);
  }
}

function restoreFds(husk: Husk, fds: readonly FdState[], stdio: StdioBinding, memfds: Map<number, number>): void {
  const made = new Set(memfds.values());
  for (const name of fs.readdirSync(`/proc/${husk.pid}/fd`)) if (!made.has(Number(name))) husk.main.call(SYS.close, [Number(name)]);
  for (const f of fds) {
    if (f.kind === 'memfd') {
      const fd = memfds.get(f.inode ?? -1);
      if (fd === undefined) throw new RestoreError('E_RESTORE_STATE', `fd ${f.fd}: a memfd with no mapping to rebuild it from`);
      husk.main.call(SYS.dup3, [fd, f.fd, isCloexec(f.flags) ? O_CLOEXEC : 0]);
      husk.main.call(SYS.lseek, [f.fd, f.pos, 0]);
      continue;
    }
    let path = f.path;
    let flags = f.flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOCTTY | O_CLOEXEC);
    if (f.kind === 'stdio') {
      path = f.fd === 0 ? stdio.stdin : f.fd === 1 ? stdio.stdout : stdio.stderr;
      flags = f.fd === 0 ? O_RDONLY : O_WRONLY_APPEND_CREAT;
    } else if (f.kind === 'file' && f.file && (f.flags & 3) === 0) {
      checkIdentity(f.path, f.file.size, f.file.mtimeNs);
    }
    const tmp = openInHusk(husk, path, flags);
    if (tmp === f.fd) husk.main.call(SYS.fcntl, [f.fd, F_SETFD, isCloexec(f.flags) ? 1 : 0]);
    else {
      husk.main.call(SYS.dup3, [tmp, f.fd, isCloexec(f.flags) ? O_CLOEXEC : 0]);
      husk.main.call(SYS.close, [tmp]);
    }
    if (f.kind === 'file' || f.kind === 'dir') husk.main.call(SYS.lseek, [f.fd, f.pos, 0]);
  }
  for (const fd of made) husk.main.call(SYS.close, [fd]);
}

function restoreProcessWide(husk: Husk, s: ProcessState, notes: string[]): void {
  const call = (nr: number, args: Array<number | bigint>) => husk.main.call(nr, args);
  call(SYS.chdir, [husk.scratch(0, Buffer.from(`${s.cwd}\0`))]);
  call(SYS.umask, [s.umask]);
  call(SYS.personality, [s.personality]);
  for (const a of s.sigactions) call(SYS.rt_sigaction, [a.sig, husk.scratch(0, Buffer.from(a.raw)), 0, 8]);
  const exeFd = openInHusk(husk, s.exe, O_RDONLY);
  if (!setMm(husk, s, exeFd))
    notes.push(`/proc/PID/exe names the husk, not ${s.exe}: this host does not let it change (no CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)`);
  call(SYS.close, [exeFd]);
  call(SYS.prctl, [PR_SET_NAME, husk.scratch(0, Buffer.from(`${s.comm}\0`))]);
}

/** A `syscall` instruction (bytes 0f 05) in an executable mapping of the restored program. */
function findSyscallGadget(husk: Husk, vmas: readonly VmaState[]): bigint {
  const buf = Buffer.alloc(16 * PAGE);
  for (const v of vmas) {
    if (v.perms[0] !== 'r' || v.perms[2] !== 'x' || v.kind === 'vdso' || v.kind === 'vsyscall') continue;
    for (let at = v.start; at < v.end; at += buf.length) {
      const pages = Math.min(16, (v.end - at) / PAGE);
      husk.read(at, pages, buf);
      const i = buf.subarray(0, pages * PAGE).indexOf(Buffer.from([0x0f, 0x05]));
      if (i >= 0 && i + 1 < pages * PAGE) return BigInt(at + i);
    }
  }
  throw new RestoreError('E_RESTORE_STATE', 'the program has no system call instruction in its text to finish the restore with');
}

/**
 * prctl(PR_SET_MM, PR_SET_MM_MAP): brk, the stack, arg and env ranges, auxv, and with `exeFd`
 * the executable (/proc/PID/exe). The kernel changes the executable only once the old one (the
 * husk) is no longer mapped, and the call needs CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN (not
 * CAP_SYS_RESOURCE, which containers often lack): it comes after the husk's text is gone. Where
 * the executable cannot be changed the rest is still set, /proc/PID/exe names the husk, and it
 * returns false.
 */
function setMm(husk: Husk, s: ProcessState, exeFd: number): boolean {
  const m = s.mm;
  const auxvAt = husk.scratch(4096, Buffer.from(m.auxv));
  const map = Buffer.alloc(104);
  [
    m.startCode,
    m.endCode,
    m.startData,
    m.endData,
    m.startBrk,
    m.brk,
    m.startStack,
    m.argStart,
    m.argEnd,
    m.envStart,
    m.envEnd,
    auxvAt,
  ].forEach((v, i) => {
    map.writeBigUInt64LE(BigInt(v), i * 8);
  });
  map.writeUInt32LE(m.auxv.length, 96);
  map.writeInt32LE(exeFd, 100);
  try {
    husk.main.call(SYS.prctl, [PR_SET_MM, PR_SET_MM_MAP, husk.scratch(0, map), map.length, 0]);
    return true;
  } catch (e) {
    if (!(e instanceof KernelError && (e.code === 'EPERM' || e.code === 'EINVAL' || e.code === 'EBUSY'))) throw e;
    map.writeInt32LE(-1, 100);
    husk.main.call(SYS.prctl, [PR_SET_MM, PR_SET_MM_MAP, husk.scratch(0, map), map.length, 0]);
    return false;
  }
}

function restoreCreds(husk: Husk, c: ProcessState['creds']): void {
  if (c.uid.every((u) => u === 0) && c.gid.every((g) => g === 0)) return;
  const groups = Buffer.alloc(Math.max(4, c.groups.length * 4));
  c.groups.forEach((g, i) => {
    groups.writeUInt32LE(g, i * 4);
  });
  husk.main.call(SYS.setgroups, [c.groups.length, husk.scratch(0, groups)]);
  husk.main.call(SYS.setresgid, c.gid);
  husk.main.call(SYS.setresuid, c.uid);
  husk.main.call(SYS.prctl, [PR_SET_DUMPABLE, 1]);
}

/** Creates the other threads (clone from the main one) and sets each thread's kernel state. */
function restoreThreads(husk: Husk, s: ProcessState): HuskThread[] {
  const threads: HuskThread[] = [husk.main];
  for (let i = 1; i < s.threads.length; i++) {
    let tid = 0;
    husk.main.call(SYS.clone, [CLONE_THREAD_FLAGS, 0, 0, 0, 0], (t) => (tid = t));
    if (!tid) throw new RestoreError('E_RESTORE_STATE', 'clone() made no thread');
    waitStop(tid, 5000); // its first stop, as a thread we trace (PTRACE_O_TRACECLONE)
    threads.push(new HuskThread(tid, husk.main.syscallAddr));
  }
  threads.forEach((t, i) => {
    restoreThread(husk, t, s.threads[i], s.pid);
  });
  for (const p of s.pending) {
    husk.main.call(SYS.rt_sigqueueinfo, [husk.pid, p.sig, husk.scratch(0, siginfoOf(p.sig, p.info, husk.pid))]);
  }
  return threads;
}

function restoreThread(husk: Husk, t: HuskThread, s: ThreadState, oldPid: number): void {
  if (s.robustList.head) t.call(SYS.set_robust_list, [s.robustList.head, s.robustList.len]);
  if (s.rseq) t.call(SYS.rseq, [s.rseq.ptr, s.rseq.len, 0, s.rseq.sig]);
  if (!(s.altstack.flags & SS_DISABLE)) {
    const ss = Buffer.alloc(24);
    ss.writeBigUInt64LE(BigInt(s.altstack.sp), 0);
    ss.writeInt32LE(s.altstack.flags & ~1 /* SS_ONSTACK is a state, not a setting */, 8);
    ss.writeBigUInt64LE(BigInt(s.altstack.size), 16);
    t.call(SYS.sigaltstack, [husk.scratch(0, ss), 0]);
  }
  t.call(SYS.set_tid_address, [s.clearChildTid]);
  // glibc keeps the thread's id at its clear-child-tid address (&pthread->tid), and uses it for
  // raise() and pthread_kill(): the thread has a new id here, so write it there.
  if (s.clearChildTid) {
    const cur = Buffer.alloc(PAGE);
    const page = Math.floor(s.clearChildTid / PAGE) * PAGE; // (not &: addresses pass 32 bits)
    husk.read(page, 1, cur);
    if (cur.readInt32LE(s.clearChildTid - page) === s.tid) {
      const id = Buffer.alloc(4);
      id.writeInt32LE(t.tid, 0);
      husk.write(s.clearChildTid, id);
    }
  }
  t.call(SYS.prctl, [PR_SET_NAME, husk.scratch(0, Buffer.from(`${s.comm}\0`))]);
  for (const p of s.pending) {
    t.call(SYS.rt_tgsigqueueinfo, [husk.pid, t.tid, p.sig, husk.scratch(0, siginfoOf(p.sig, p.info, oldPid))]);
  }
}

/** The siginfo a pending signal is queued with: the source's, or one like tgkill's. */
function siginfoOf(sig: number, info: Uint8Array, pid: number): Buffer {
  if (info.length === 128) return Buffer.from(info);
  const b = Buffer.alloc(128);
  b.writeInt32LE(sig, 0);
  b.writeInt32LE(SI_TKILL, 8);
  b.writeInt32LE(pid, 16);
  return b;
}

function setRegisters(tid: number, s: ThreadState): void {
  // Each buffer is the thread's own captured set, of the size the source's kernel gave it.
  ptraceBuf(PTRACE.SETREGS, tid, 0n, Buffer.from(s.regs));
  try {
    ptraceRegset(PTRACE.SETREGSET, tid, NT_X86_XSTATE, Buffer.from(s.xstate));
  } catch (e) {
    throw new RestoreError('E_RESTORE_KERNEL', `the FPU state of thread ${s.tid} does not fit this CPU: ${(e as Error).message}`, e);
  }
  ptraceBuf(PTRACE.SETSIGMASK, tid, 8n, Buffer.from(s.sigmask));
}

function restoreRlimits(pid: number, rlimits: ProcessState['rlimits'], notes: string[]): void {
  const buf = Buffer.alloc(16);
  rlimits.forEach(([soft, hard], r) => {
    buf.writeBigUInt64LE(soft < 0 ? 0xffffffffffffffffn : BigInt(soft), 0);
    buf.writeBigUInt64LE(hard < 0 ? 0xffffffffffffffffn : BigInt(hard), 8);
    try {
      // prlimit64(pid, r, &new, NULL): `buf` is ours, struct rlimit64.
      syscall6('prlimit64', SYS.prlimit64, pid, r, addressOf(buf), 0);
    } catch (e) {
      if (!(e instanceof KernelError && e.code === 'EPERM')) throw e;
      // A hard limit above the one here: raising it needs CAP_SYS_RESOURCE, which this host lacks.
      notes.push(
        `resource limit ${r} could not be raised to ${soft < 0 ? 'unlimited' : soft}/${hard < 0 ? 'unlimited' : hard}: it keeps this host's`,
      );
    }
  });
}

/**
 * Queues SIGSTOP and lets go of every thread: the process stops in a group stop before it runs
 * a single instruction, and stays stopped whatever becomes of this agent.
 */
function hold(pid: number, tids: number[]): void {
  process.kill(pid, SIGSTOP);
  for (const tid of tids) {
    ptrace(PTRACE.SETOPTIONS, tid, 0n, 0n); // no EXITKILL from here on
    ptrace(PTRACE.DETACH, tid, 0n, 0n);
  }
}

/** Field 22 of /proc/PID/stat, the start time in clock ticks after boot. */
export function startTimeOf(pid: number): string {
  return String(readProcStat(pid).field(22));
}
