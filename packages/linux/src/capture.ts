import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { FrozenProcess } from './freezer.js';
import { readFdTable, fileIdentity } from './fd-table.js';
import { injectSyscall } from './inject.js';
import { PTRACE, SYS, addressOf, ptraceBuf, ptraceRegset, syscall6 } from './libc.js';
import { KernelError } from './errors.js';
import { PageReader } from './page-reader.js';
import { isMigratable, readMaps, type ProcMapping } from './proc-maps.js';
import { readProcStat } from './proc-stat.js';
import type {
  ContentRange,
  FdState,
  MmState,
  PendingSignal,
  ProcessState,
  RestorePreview,
  SigactionState,
  ThreadState,
  VmaState,
} from './process-state.js';
import { REG, REGS_BYTES } from './regs.js';

// Reads everything a restore needs from a process that every thread of is frozen by us
// (ptrace-stopped): /proc for the layout, files and limits; ptrace for registers, FPU state,
// signal masks, rseq and pending signals; and, for what only the process itself can ask the
// kernel (signal handlers, the alternate signal stack, the clear-child-tid address, brk), system
// calls injected into it with a scratch page it is given for the purpose and that is unmapped
// again before the capture returns.

const PAGE = 4096;
const NT_X86_XSTATE = 0x202;
const SIGINFO_BYTES = 128;
const ERESTARTSYS = -512n;
const ERESTARTNOINTR = -513n;
const ERESTARTNOHAND = -514n;
const ERESTART_RESTARTBLOCK = -516n;
const EINTR = -4n;
const NR_RESTART_SYSCALL = 219n;
const PR_GET_TID_ADDRESS = 40;
const PEEKSIGINFO_SHARED = 1;
const PM_PRESENT = 1n << 63n;
const PM_SWAPPED = 1n << 62n;
const PM_FILE = 1n << 61n;
const SIGKILL = 9;
const SIGSTOP = 19;
const RLIMIT_COUNT = 16;

export interface CaptureOptions {
  /** Descriptors the agent installed itself (the dirty tracker's userfaultfd in the process). */
  ignoreFds?: ReadonlySet<number>;
}

export interface CapturedProcess {
  state: ProcessState;
  /** The bytes of `state.contents`, end to end. */
  contents: Buffer;
}

/** Classifies a line of /proc/PID/maps: how a restore rebuilds it. */
export function vmaKind(m: ProcMapping): VmaState['kind'] {
  if (m.path === '[vvar]' || m.path === '[vdso]' || m.path === '[vvar_vclock]') return 'vdso';
  if (m.path === '[vsyscall]') return 'vsyscall';
  if (isMigratable(m)) return 'migrated';
  const file = m.path.startsWith('/');
  if (m.perms[3] === 's') {
    if (m.path.startsWith('/memfd:')) return 'memfd';
    if (!file || m.path.startsWith('/dev/zero')) return 'anon-shared';
    return 'file-shared';
  }
  return file ? 'file-private' : 'anon';
}

/** What the destination checks before the first page (sent in Hello). */
export function previewRestore(pid: number): RestorePreview {
  const maps = readMaps(pid);
  const files = new Map<string, RestorePreview['files'][number]>();
  for (const m of maps) {
    const kind = vmaKind(m);
    if ((kind === 'file-private' || kind === 'file-shared' || (kind === 'migrated' && m.path.startsWith('/'))) && !files.has(m.path)) {
      const st = statMapped(pid, m);
      if (st) files.set(m.path, { ...fileIdentity(m.path, st), writable: kind === 'file-shared' && m.perms[1] === 'w' });
    }
  }
  for (const c of readFdTable(pid)) {
    if (c.ok && c.state.file && !files.has(c.state.path)) {
      files.set(c.state.path, { ...c.state.file, writable: (c.state.flags & 3) !== 0 });
    }
  }
  return {
    exe: readLink(`/proc/${pid}/exe`),
    vmas: maps.map((m) => ({ start: m.start, end: m.end, perms: m.perms, path: m.path })),
    files: [...files.values()],
    vdso: vdsoFingerprint(pid, maps),
  };
}

/**
 * Captures the state of a process frozen by `frozen`. Throws KernelError when a part cannot be
 * read; the process is left as it was (frozen, its scratch page unmapped).
 */
export function captureState(frozen: FrozenProcess, opts: CaptureOptions = {}): CapturedProcess {
  const pid = frozen.pid;
  const maps = readMaps(pid); // before the scratch page exists
  const fds: FdState[] = [];
  for (const c of readFdTable(pid, opts.ignoreFds)) {
    if (!c.ok) throw new KernelError('capture', 95 /* EOPNOTSUPP */, `fd ${c.fd}: ${c.what} cannot be migrated`);
    fds.push(c.state);
  }
  const { vmas, contents, bytes } = captureMemory(pid, maps);
  const scratch = new Scratch(frozen);
  try {
    const tids = [pid, ...[...frozen.threads.keys()].filter((t) => t !== pid)];
    const threads = tids.map((tid) => captureThread(frozen, tid, scratch));
    const state: ProcessState = {
      pid,
      comm: readText(`/proc/${pid}/comm`).trim(),
      exe: readLink(`/proc/${pid}/exe`),
      cwd: readLink(`/proc/${pid}/cwd`),
      umask: parseInt(statusField(pid, 'Umask') ?? '22', 8),
      personality: parseInt(readText(`/proc/${pid}/personality`).trim(), 16),
      rlimits: readRlimits(pid),
      creds: readCreds(pid),
      sigactions: captureSigactions(pid, scratch),
      pending: peekSiginfo(pid, PEEKSIGINFO_SHARED),
      mm: captureMm(pid, scratch),
      vmas,
      contents,
      fds,
      threads,
      vdso: vdsoFingerprint(pid, maps),
    };
    return { state, contents: bytes };
  } finally {
    scratch.release();
  }
}

/** A page mapped into the frozen process for the system calls that return data through memory. */
class Scratch {
  readonly addr: bigint;
  private readonly reader: PageReader;

  constructor(readonly frozen: FrozenProcess) {
    // mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) in the process.
    this.addr = injectSyscall(frozen.pid, SYS.mmap, [0n, BigInt(PAGE), 3n, 0x22n, -1n, 0n], { frozen });
    this.reader = new PageReader(frozen.pid);
  }

  call(nr: number, args: bigint[], tid = this.frozen.pid): bigint {
    return injectSyscall(this.frozen.pid, nr, args, { frozen: this.frozen, tid });
  }

  read(): Buffer {
    const buf = Buffer.alloc(PAGE);
    this.reader.readRanges([{ addr: Number(this.addr), pages: 1 }], buf);
    return buf;
  }

  release(): void {
    this.call(SYS.munmap, [this.addr, BigInt(PAGE)]);
  }
}

function captureThread(frozen: FrozenProcess, tid: number, scratch: Scratch): ThreadState {
  const regs = Buffer.alloc(REGS_BYTES);
  ptraceBuf(PTRACE.GETREGS, tid, 0n, regs);
  resumeSyscallAsKernelWould(regs);
  const xbuf = Buffer.alloc(16384);
  const xlen = ptraceRegset(PTRACE.GETREGSET, tid, NT_X86_XSTATE, xbuf);
  const sigmask = Buffer.alloc(8);
  ptraceBuf(PTRACE.GETSIGMASK, tid, 8n, sigmask);
  const rseqBuf = Buffer.alloc(32);
  let rseq: ThreadState['rseq'] = null;
  try {
    ptraceBuf(PTRACE.GET_RSEQ_CONFIGURATION, tid, 32n, rseqBuf);
    const ptr = Number(rseqBuf.readBigUInt64LE(0));
    if (ptr !== 0) rseq = { ptr, len: rseqBuf.readUInt32LE(8), sig: rseqBuf.readUInt32LE(12), flags: rseqBuf.readUInt32LE(16) };
  } catch (e) {
    if (!(e instanceof KernelError && e.code === 'EIO')) throw e; // EIO: kernel without rseq
  }
  // get_robust_list(tid, &head, &len): both pointers are into `rl`, ours.
  const rl = Buffer.alloc(16);
  syscall6('get_robust_list', SYS.get_robust_list, tid, addressOf(rl), addressOf(rl) + 8n);
  // sigaltstack(NULL, scratch) and prctl(PR_GET_TID_ADDRESS, scratch + 64) run in the thread.
  scratch.call(SYS.sigaltstack, [0n, scratch.addr], tid);
  scratch.call(SYS.prctl, [BigInt(PR_GET_TID_ADDRESS), scratch.addr + 64n], tid);
  const s = scratch.read();
  const held = frozen.threads.get(tid) ?? 0;
  const pending = peekSiginfo(tid, 0);
  if (held) pending.push({ sig: held, info: new Uint8Array(0) });
  return {
    tid,
    regs,
    xstate: Buffer.from(xbuf.subarray(0, xlen)),
    sigmask,
    altstack: { sp: Number(s.readBigUInt64LE(0)), flags: s.readInt32LE(8), size: Number(s.readBigUInt64LE(16)) },
    rseq,
    robustList: { head: Number(rl.readBigUInt64LE(0)), len: Number(rl.readBigUInt64LE(8)) },
    clearChildTid: Number(s.readBigUInt64LE(64)),
    comm: readText(`/proc/${frozen.pid}/task/${tid}/comm`).trim(),
    pending,
  };
}

/**
 * A thread frozen inside a system call stands at the kernel's restart point: rax holds
 * -ERESTART*, orig_rax the call. The kernel, letting it run on without a handler, would back RIP
 * up over the `syscall` instruction and restore rax, so that the call starts again; a call that
 * would restart through the kernel's restart block (nanosleep, poll with a timeout) starts again
 * from the beginning instead, since that block stays behind in the source's kernel; a thread in
 * restart_syscall itself sees EINTR. orig_rax becomes -1: no system call is in progress.
 */
export function resumeSyscallAsKernelWould(regs: Buffer): void {
  const orig = regs.readBigInt64LE(REG.orig_rax * 8);
  const rax = regs.readBigInt64LE(REG.rax * 8);
  if (orig >= 0n) {
    const restartable = rax === ERESTARTSYS || rax === ERESTARTNOINTR || rax === ERESTARTNOHAND || rax === ERESTART_RESTARTBLOCK;
    if (restartable && orig === NR_RESTART_SYSCALL) regs.writeBigInt64LE(EINTR, REG.rax * 8);
    else if (restartable) {
      regs.writeBigInt64LE(orig, REG.rax * 8);
      regs.writeBigUInt64LE(regs.readBigUInt64LE(REG.rip * 8) - 2n, REG.rip * 8);
    }
  }
  regs.writeBigInt64LE(-1n, REG.orig_rax * 8);
}

function captureSigactions(pid: number, scratch: Scratch): SigactionState[] {
  const caught = BigInt(`0x${statusField(pid, 'SigCgt') ?? '0'}`);
  const ignored = BigInt(`0x${statusField(pid, 'SigIgn') ?? '0'}`);
  const out: SigactionState[] = [];
  for (let sig = 1; sig <= 64; sig++) {
    if (sig === SIGKILL || sig === SIGSTOP) continue;
    if (((caught | ignored) & (1n << BigInt(sig - 1))) === 0n) continue;
    // rt_sigaction(sig, NULL, scratch + 128, 8): the old action into the scratch page.
    scratch.call(SYS.rt_sigaction, [BigInt(sig), 0n, scratch.addr + 128n, 8n]);
    out.push({ sig, raw: Buffer.from(scratch.read().subarray(128, 160)) });
  }
  return out;
}

function captureMm(pid: number, scratch: Scratch): MmState {
  const { field } = readProcStat(pid);
  return {
    startCode: field(26),
    endCode: field(27),
    startStack: field(28),
    startData: field(45),
    endData: field(46),
    startBrk: field(47),
    brk: Number(scratch.call(SYS.brk, [0n])),
    argStart: field(48),
    argEnd: field(49),
    envStart: field(50),
    envEnd: field(51),
    auxv: fs.readFileSync(`/proc/${pid}/auxv`),
  };
}

/** The layout, and the pages of non-migrated mappings that are not their file's. */
function captureMemory(pid: number, maps: ProcMapping[]): { vmas: VmaState[]; contents: ContentRange[]; bytes: Buffer } {
  const vmas: VmaState[] = [];
  const contents: ContentRange[] = [];
  const pagemap = fs.openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    for (const m of maps) {
      const kind = vmaKind(m);
      const vma: VmaState = {
        start: m.start,
        end: m.end,
        perms: m.perms,
        offset: m.offset,
        path: m.path,
        kind,
        growsDown: m.path === '[stack]',
        inode: m.inode,
      };
      if (kind === 'file-private' || kind === 'file-shared' || kind === 'memfd' || (kind === 'migrated' && m.path.startsWith('/'))) {
        const st = statMapped(pid, m);
        if (st) vma.file = fileIdentity(m.path, st);
      }
      vmas.push(vma);
      if (m.perms[0] !== 'r') continue; // unreadable: layout only
      if (kind === 'anon-shared' || kind === 'memfd') contents.push({ addr: m.start, pages: (m.end - m.start) / PAGE });
      else if (kind === 'file-private' || kind === 'anon') contents.push(...privatePages(pagemap, m));
    }
  } finally {
    fs.closeSync(pagemap);
  }
  const pages = contents.reduce((n, c) => n + c.pages, 0);
  const bytes = Buffer.alloc(pages * PAGE);
  const got = new PageReader(pid).readRanges(contents, bytes);
  got.forEach((n, i) => {
    if (n !== contents[i].pages)
      throw new KernelError('capture', 14 /* EFAULT */, `pages at 0x${contents[i].addr.toString(16)} could not be read`);
  });
  return { vmas, contents, bytes };
}

/** Pages of a private mapping that are anonymous (copied on write, or never from a file). */
function privatePages(pagemap: number, m: ProcMapping): ContentRange[] {
  const pages = (m.end - m.start) / PAGE;
  const buf = Buffer.alloc(pages * 8);
  fs.readSync(pagemap, buf, 0, buf.length, (m.start / PAGE) * 8);
  const out: ContentRange[] = [];
  for (let i = 0; i < pages; i++) {
    const e = buf.readBigUInt64LE(i * 8);
    const anon = ((e & PM_PRESENT) !== 0n && (e & PM_FILE) === 0n) || (e & PM_SWAPPED) !== 0n;
    if (!anon) continue;
    const addr = m.start + i * PAGE;
    const last = out[out.length - 1];
    if (last && last.addr + last.pages * PAGE === addr) last.pages++;
    else out.push({ addr, pages: 1 });
  }
  return out;
}

function peekSiginfo(tid: number, flags: number): PendingSignal[] {
  const args = Buffer.alloc(16);
  const out: PendingSignal[] = [];
  const buf = Buffer.alloc(32 * SIGINFO_BYTES);
  for (let off = 0; ; ) {
    args.writeBigUInt64LE(BigInt(off), 0);
    args.writeUInt32LE(flags, 8);
    args.writeInt32LE(32, 12);
    // struct ptrace_peeksiginfo_args {u64 off; u32 flags; s32 nr} in `args`, results in `buf`.
    const n = ptraceBuf(PTRACE.PEEKSIGINFO, tid, addressOf(args), buf);
    for (let i = 0; i < n; i++) {
      const info = Buffer.from(buf.subarray(i * SIGINFO_BYTES, (i + 1) * SIGINFO_BYTES));
      out.push({ sig: info.readInt32LE(0), info });
    }
    if (n < 32) return out;
    off += n;
  }
}

function readRlimits(pid: number): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const buf = Buffer.alloc(16);
  for (let r = 0; r < RLIMIT_COUNT; r++) {
    // prlimit64(pid, r, NULL, &old): `buf` is ours, struct rlimit64 = 2 x u64.
    syscall6('prlimit64', SYS.prlimit64, pid, r, 0, addressOf(buf));
    const lim = (off: number) => {
      const v = buf.readBigUInt64LE(off);
      return v === 0xffffffffffffffffn ? -1 : Number(v);
    };
    out.push([lim(0), lim(8)]);
  }
  return out;
}

function readCreds(pid: number): ProcessState['creds'] {
  const ids = (name: string) => (statusField(pid, name) ?? '0 0 0 0').split(/\s+/).map(Number);
  const uid = ids('Uid');
  const gid = ids('Gid');
  const groups = (statusField(pid, 'Groups') ?? '').split(/\s+/).filter(Boolean).map(Number);
  return { uid: [uid[0], uid[1], uid[2]], gid: [gid[0], gid[1], gid[2]], groups };
}

/** Size and SHA-256 of a process's vDSO: two hosts whose vDSOs differ run different kernels. */
export function vdsoFingerprint(pid: number, maps: ProcMapping[] = readMaps(pid)): ProcessState['vdso'] {
  const v = maps.find((m) => m.path === '[vdso]');
  if (!v) return null;
  const pages = (v.end - v.start) / PAGE;
  const buf = Buffer.alloc(pages * PAGE);
  new PageReader(pid).readRanges([{ addr: v.start, pages }], buf);
  return { size: buf.length, sha256: createHash('sha256').update(buf).digest('hex') };
}

/** The file a mapping maps, by its own inode (map_files), not by a path that may have moved. */
function statMapped(pid: number, m: ProcMapping): fs.BigIntStats | null {
  try {
    return fs.statSync(`/proc/${pid}/map_files/${m.start.toString(16)}-${m.end.toString(16)}`, { bigint: true });
  } catch {
    try {
      return fs.statSync(m.path, { bigint: true });
    } catch {
      return null;
    }
  }
}

function statusField(pid: number, name: string): string | undefined {
  const m = new RegExp(`^${name}:\\s+(.*)$`, 'm').exec(readText(`/proc/${pid}/status`));
  return m?.[1].trim();
}

function readText(file: string): string {
  return fs.readFileSync(file, 'utf8');
}

function readLink(file: string): string {
  try {
    return fs.readlinkSync(file);
  } catch {
    return '';
  }
}
