// What a process is besides its writable memory: every mapping, every thread's registers and
// signal state, the process-wide state (signal handlers, limits, files, mm fields). Captured by
// capture.ts from a frozen process, carried as plain data (numbers, strings, byte arrays: no
// BigInt, so msgpack and JSON both carry it), rebuilt by restore.ts inside a husk.
//
// Addresses are below 2^47 on x86_64, so numbers hold them exactly; 64-bit values that are not
// addresses (signal masks, register files) travel as bytes.

/** One line of /proc/PID/maps at the freeze, and how it is rebuilt. */
export interface VmaState {
  start: number;
  end: number;
  /** /proc/PID/maps permissions, e.g. 'r-xp', 'rw-s'. */
  perms: string;
  offset: number;
  /** The file's path, or '' for anonymous memory, or a [name] such as [stack], [heap], [vdso]. */
  path: string;
  /**
   * How it is rebuilt:
   * - migrated: private writable memory carried by the pre-copy rounds (already in place);
   * - file-private / file-shared: the file mapped again (same path and offset), then `contents`;
   * - anon: private anonymous memory that is not writable (guard pages, read-only data);
   * - anon-shared: MAP_SHARED anonymous memory (incl. /dev/zero), content in `contents`;
   * - memfd: a memfd's mapping, rebuilt as a new memfd of the same name and size;
   * - vdso: [vvar], [vvar_vclock], [vdso] (the destination moves its own there); vsyscall: fixed.
   */
  kind: 'migrated' | 'file-private' | 'file-shared' | 'anon' | 'anon-shared' | 'memfd' | 'vdso' | 'vsyscall';
  growsDown: boolean;
  /** The inode of the mapped file (a memfd's identity: its mappings and descriptors share it). */
  inode: number;
  /** For file mappings: what the destination's file must match; for a memfd, its size. */
  file?: FileIdentity;
}

export interface FileIdentity {
  path: string;
  size: number;
  /** Modification time in nanoseconds since the epoch, as a decimal string. */
  mtimeNs: string;
}

/**
 * Pages of non-migrated mappings whose content is not the file's (written before they were
 * protected, like RELRO; copied-on-write pages of private file mappings; shared anonymous
 * memory). Their bytes lie end to end in the state's payload, in this order.
 */
export interface ContentRange {
  addr: number;
  pages: number;
}

export interface FdState {
  fd: number;
  /**
   * file: a regular file reopened by path; dir: a directory; dev: /dev/null, zero, random,
   * urandom or full; memfd: a memfd that the process also maps (rebuilt with that mapping); stdio: a pipe, terminal or socket on 0, 1 or 2, bound at the destination to what it
   * is told (--stdin, --stdout, --stderr).
   */
  kind: 'file' | 'dir' | 'dev' | 'stdio' | 'memfd';
  path: string;
  /** open(2) flags from /proc/PID/fdinfo (access mode, O_APPEND, O_NONBLOCK, O_CLOEXEC...). */
  flags: number;
  pos: number;
  file?: FileIdentity;
  /** memfd: its inode, the same as one of the process's memfd mappings (that carries its content). */
  inode?: number;
}

export interface SigactionState {
  sig: number;
  /** struct kernel_sigaction as the kernel returns it: handler, flags, restorer, mask (4 x u64). */
  raw: Uint8Array;
}

export interface PendingSignal {
  sig: number;
  /** siginfo_t (128 bytes), or empty when only the number is known. */
  info: Uint8Array;
}

export interface ThreadState {
  tid: number;
  /**
   * struct user_regs_struct (27 x u64), adjusted as the kernel would on the way back to user
   * mode without a handler: a system call interrupted by the freeze is set up to restart.
   */
  regs: Uint8Array;
  /** PTRACE_GETREGSET NT_X86_XSTATE: the FPU and extended state. */
  xstate: Uint8Array;
  /** The blocked signal mask (8 bytes). */
  sigmask: Uint8Array;
  altstack: { sp: number; flags: number; size: number };
  /** PTRACE_GET_RSEQ_CONFIGURATION; null when the thread registered none. */
  rseq: { ptr: number; len: number; sig: number; flags: number } | null;
  robustList: { head: number; len: number };
  /** set_tid_address(): cleared and woken when the thread exits (glibc: &pthread->tid). */
  clearChildTid: number;
  comm: string;
  pending: PendingSignal[];
}

/** The mm fields prctl(PR_SET_MM_MAP) takes. */
export interface MmState {
  startCode: number;
  endCode: number;
  startData: number;
  endData: number;
  startBrk: number;
  brk: number;
  startStack: number;
  argStart: number;
  argEnd: number;
  envStart: number;
  envEnd: number;
  /** /proc/PID/auxv. */
  auxv: Uint8Array;
}

export interface ProcessState {
  pid: number;
  comm: string;
  exe: string;
  cwd: string;
  umask: number;
  personality: number;
  /** prlimit for RLIMIT 0..15: [soft, hard], -1 for RLIM_INFINITY. */
  rlimits: Array<[number, number]>;
  creds: { uid: [number, number, number]; gid: [number, number, number]; groups: number[] };
  sigactions: SigactionState[];
  /** Signals pending for the whole process (shared queue). */
  pending: PendingSignal[];
  mm: MmState;
  vmas: VmaState[];
  contents: ContentRange[];
  fds: FdState[];
  /** The main thread first. */
  threads: ThreadState[];
  /** Fingerprint of the source's vDSO: its size and a SHA-256 of its bytes. */
  vdso: { size: number; sha256: string } | null;
}

/** What the destination needs before the first page to know it can restore (sent in Hello). */
export interface RestorePreview {
  exe: string;
  /** Every mapping's range and path (the destination checks its own husk does not stand there). */
  vmas: Array<{ start: number; end: number; perms: string; path: string }>;
  /** Files that must exist at the destination (mappings and descriptors), with their identity. */
  files: Array<FileIdentity & { writable: boolean }>;
  vdso: { size: number; sha256: string } | null;
}

import { StateFormatError } from './errors.js';

// ---- checking what arrived over the wire -------------------------------------------------------

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Uint8Array);

function need(o: Obj, k: string, kind: 'number' | 'string' | 'bytes' | 'array' | 'object' | 'boolean', where: string): unknown {
  const v = o[k];
  const ok =
    kind === 'number'
      ? typeof v === 'number' && Number.isFinite(v)
      : kind === 'string'
        ? typeof v === 'string'
        : kind === 'bytes'
          ? v instanceof Uint8Array
          : kind === 'array'
            ? Array.isArray(v)
            : kind === 'boolean'
              ? typeof v === 'boolean'
              : isObj(v);
  if (!ok) throw new StateFormatError(`${where}.${k} must be ${kind === 'array' || kind === 'object' ? `an ${kind}` : `a ${kind}`}`);
  return v;
}

function fields(o: unknown, where: string, spec: Record<string, Parameters<typeof need>[2]>): Obj {
  if (!isObj(o)) throw new StateFormatError(`${where} must be a map`);
  for (const [k, kind] of Object.entries(spec)) need(o, k, kind, where);
  return o;
}

const VMA_KINDS = new Set(['migrated', 'file-private', 'file-shared', 'anon', 'anon-shared', 'memfd', 'vdso', 'vsyscall']);
const FD_KINDS = new Set(['file', 'dir', 'dev', 'stdio', 'memfd']);

/**
 * Checks the shape of a ProcessState received from a source (every field of the right type,
 * kinds known, register sets of the right size) and returns it typed. Values are checked where
 * a wrong one could make the restore act outside the process (none can: the husk is the
 * process); what they mean is the source's word, covered by the state's hash.
 */
export function parseProcessState(raw: unknown): ProcessState {
  const s = fields(raw, 'state', {
    pid: 'number',
    comm: 'string',
    exe: 'string',
    cwd: 'string',
    umask: 'number',
    personality: 'number',
    rlimits: 'array',
    creds: 'object',
    sigactions: 'array',
    pending: 'array',
    mm: 'object',
    vmas: 'array',
    contents: 'array',
    fds: 'array',
    threads: 'array',
  });
  fields(s.mm, 'state.mm', {
    startCode: 'number',
    endCode: 'number',
    startData: 'number',
    endData: 'number',
    startBrk: 'number',
    brk: 'number',
    startStack: 'number',
    argStart: 'number',
    argEnd: 'number',
    envStart: 'number',
    envEnd: 'number',
    auxv: 'bytes',
  });
  fields(s.creds, 'state.creds', { uid: 'array', gid: 'array', groups: 'array' });
  (s.vmas as unknown[]).forEach((v, i) => {
    const o = fields(v, `state.vmas[${i}]`, {
      start: 'number',
      end: 'number',
      perms: 'string',
      offset: 'number',
      path: 'string',
      kind: 'string',
      growsDown: 'boolean',
    });
    if (!VMA_KINDS.has(o.kind as string)) throw new StateFormatError(`state.vmas[${i}].kind ${String(o.kind)} is unknown`);
  });
  (s.contents as unknown[]).forEach((c, i) => {
    fields(c, `state.contents[${i}]`, { addr: 'number', pages: 'number' });
  });
  (s.fds as unknown[]).forEach((f, i) => {
    const o = fields(f, `state.fds[${i}]`, { fd: 'number', kind: 'string', path: 'string', flags: 'number', pos: 'number' });
    if (!FD_KINDS.has(o.kind as string)) throw new StateFormatError(`state.fds[${i}].kind ${String(o.kind)} is unknown`);
  });
  (s.sigactions as unknown[]).forEach((a, i) => {
    const o = fields(a, `state.sigactions[${i}]`, { sig: 'number', raw: 'bytes' });
    if ((o.raw as Uint8Array).length !== 32) throw new StateFormatError(`state.sigactions[${i}].raw must be 32 bytes`);
  });
  const threads = s.threads as unknown[];
  if (threads.length === 0) throw new StateFormatError('state.threads is empty');
  threads.forEach((t, i) => {
    const o = fields(t, `state.threads[${i}]`, {
      tid: 'number',
      regs: 'bytes',
      xstate: 'bytes',
      sigmask: 'bytes',
      altstack: 'object',
      robustList: 'object',
      clearChildTid: 'number',
      comm: 'string',
      pending: 'array',
    });
    if ((o.regs as Uint8Array).length !== 27 * 8) throw new StateFormatError(`state.threads[${i}].regs must be 216 bytes`);
    if ((o.sigmask as Uint8Array).length !== 8) throw new StateFormatError(`state.threads[${i}].sigmask must be 8 bytes`);
  });
  return s as unknown as ProcessState;
}

/** Checks the shape of a RestorePreview received in a Hello. */
export function parseRestorePreview(raw: unknown): RestorePreview {
  const p = fields(raw, 'restore', { exe: 'string', vmas: 'array', files: 'array' });
  (p.vmas as unknown[]).forEach((v, i) => {
    fields(v, `restore.vmas[${i}]`, { start: 'number', end: 'number', perms: 'string', path: 'string' });
  });
  (p.files as unknown[]).forEach((f, i) => {
    fields(f, `restore.files[${i}]`, { path: 'string', size: 'number', mtimeNs: 'string', writable: 'boolean' });
  });
  if (p.vdso !== null && p.vdso !== undefined) fields(p.vdso, 'restore.vdso', { size: 'number', sha256: 'string' });
  return p as unknown as RestorePreview;
}
