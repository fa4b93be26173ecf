import koffi from 'koffi';
import { KernelError } from './errors.js';

/**
 * The few libc entry points the source agent needs, bound with koffi (pointers are BigInt, about
 * 0.2 µs a call). All of them are called synchronously on the main thread: ptrace requests must
 * come from the thread that attached, so never use koffi's async calls here.
 */
const libc = koffi.load('libc.so.6');

// long ptrace(long request, pid_t pid, void *addr, void *data): addr/data as integers (BigInt).
const ptraceRaw = libc.func('long ptrace(long request, int pid, uintptr_t addr, uintptr_t data)');
const waitpidRaw = libc.func('int waitpid(int pid, _Out_ int *status, int options)');
const syscall3 = libc.func('long syscall(long nr, long a, long b, long c)');
const ioctlRaw = libc.func('int ioctl(int fd, unsigned long request, uintptr_t arg)');
const closeRaw = libc.func('int close(int fd)');
const openRaw = libc.func('int open(const char *path, int flags)');
const pvReadv = libc.func(
  'intptr_t process_vm_readv(int pid, uintptr_t local_iov, unsigned long liovcnt, uintptr_t remote_iov, unsigned long riovcnt, unsigned long flags)',
);
const tgkillRaw = libc.func('int tgkill(int tgid, int tid, int sig)');
const pvWritev = libc.func(
  'intptr_t process_vm_writev(int pid, uintptr_t local_iov, unsigned long liovcnt, uintptr_t remote_iov, unsigned long riovcnt, unsigned long flags)',
);
// syscall(2) is variadic; on x86_64 a call with six integer arguments passes them in the same
// registers as a non-variadic one, and syscall() reads no vector registers.
const syscall6Raw = libc.func('long syscall(long nr, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d, uintptr_t e, uintptr_t f)');

export const PTRACE = Object.freeze({
  PEEKTEXT: 1,
  POKETEXT: 4,
  CONT: 7,
  GETREGS: 12,
  SETREGS: 13,
  DETACH: 17,
  SYSCALL: 24,
  SETOPTIONS: 0x4200,
  GETSIGINFO: 0x4202,
  GETREGSET: 0x4204,
  SETREGSET: 0x4205,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  PEEKSIGINFO: 0x4209,
  GETSIGMASK: 0x420a,
  SETSIGMASK: 0x420b,
  GET_RSEQ_CONFIGURATION: 0x420f,
  EVENT_CLONE: 3,
  EVENT_STOP: 128,
  O_TRACESYSGOOD: 1,
  O_TRACECLONE: 8,
  O_EXITKILL: 0x100000,
});
export const WALL = 0x40000000;
export const WNOHANG = 1;
/** x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl). */
export const SYS = Object.freeze({
  read: 0,
  open: 2,
  close: 3,
  lseek: 8,
  mmap: 9,
  mprotect: 10,
  munmap: 11,
  brk: 12,
  rt_sigaction: 13,
  rt_sigprocmask: 14,
  mremap: 25,
  dup3: 292,
  getpid: 39,
  clone: 56,
  kill: 62,
  fcntl: 72,
  chdir: 80,
  umask: 95,
  setresuid: 117,
  setresgid: 119,
  setgroups: 116,
  rt_sigqueueinfo: 129,
  sigaltstack: 131,
  personality: 135,
  prctl: 157,
  arch_prctl: 158,
  gettid: 186,
  set_tid_address: 218,
  set_robust_list: 273,
  get_robust_list: 274,
  rt_tgsigqueueinfo: 297,
  prlimit64: 302,
  userfaultfd: 323,
  memfd_create: 319,
  rseq: 334,
  pidfd_open: 434,
  pidfd_getfd: 438,
});

function check(name: string, r: number | bigint, detail?: string): number {
  if (Number(r) === -1) throw new KernelError(name, koffi.errno(), detail);
  return Number(r);
}

export function ptrace(req: number, pid: number, addr: bigint = 0n, data: bigint = 0n): number {
  // pid: a thread of the target; addr/data are integers or addresses of buffers we own.
  return check(`ptrace(${req})`, ptraceRaw(req, pid, addr, data), `pid ${pid}`);
}

/** PTRACE_PEEKTEXT: -1 is a valid word, so errno decides. */
export function ptracePeek(pid: number, addr: bigint): bigint {
  koffi.errno(0);
  const r = ptraceRaw(PTRACE.PEEKTEXT, pid, addr, 0n);
  const e = koffi.errno();
  if (Number(r) === -1 && e !== 0) throw new KernelError('ptrace(PEEKTEXT)', e, `pid ${pid}`);
  return BigInt.asUintN(64, BigInt(r));
}

export interface WaitResult {
  pid: number;
  status: number;
}

export function waitpid(pid: number, options: number): WaitResult {
  const st = [0];
  const r = check('waitpid', waitpidRaw(pid, st, options), `pid ${pid}`);
  return { pid: r, status: st[0] };
}

export const WIFSTOPPED = (s: number) => (s & 0xff) === 0x7f;
export const WSTOPSIG = (s: number) => (s >> 8) & 0xff;
export const WIFEXITED = (s: number) => (s & 0x7f) === 0;
export const WIFSIGNALED = (s: number) => ((s & 0x7f) + 1) >> 1 > 0 && !WIFSTOPPED(s) && !WIFEXITED(s);
export const PTRACE_EVENT = (s: number) => s >>> 16;

export function sys(name: string, nr: number, a: number | bigint, b: number | bigint = 0, c: number | bigint = 0): number {
  return check(name, syscall3(nr, a, b, c));
}

export function ioctl(name: string, fd: number, req: number, arg: Buffer): number {
  // arg: a buffer we own that outlives the call; its size matches the ioctl's struct.
  return check(name, ioctlRaw(fd, req, koffi.address(arg)));
}

export function close(fd: number): void {
  closeRaw(fd);
}

export function openReadOnly(path: string): number {
  return check(`open(${path})`, openRaw(path, 0 /* O_RDONLY */ | 0x80000 /* O_CLOEXEC */));
}

/**
 * process_vm_readv: gathers `riovcnt` remote iovecs (an array of {u64 base, u64 len} we built in
 * `remote`) into one local buffer. Returns bytes read (may be short), or throws.
 */
export function processVmReadv(pid: number, local: Buffer, localLen: number, remote: Buffer, riovcnt: number): number {
  // One local iovec {address of `local`, localLen}; `local` is ours and at least localLen bytes.
  const liov = Buffer.alloc(16);
  liov.writeBigUInt64LE(koffi.address(local), 0);
  liov.writeBigUInt64LE(BigInt(localLen), 8);
  const r = pvReadv(pid, koffi.address(liov), 1, koffi.address(remote), riovcnt, 0);
  return check('process_vm_readv', r, `pid ${pid}`);
}

/** process_vm_writev of one local buffer to one remote address range. Returns bytes written. */
export function processVmWritev(pid: number, local: Buffer, remoteAddr: number | bigint): number {
  // Both iovecs are ours: {address of `local`, its length} and {remoteAddr, the same length}.
  const iov = Buffer.alloc(32);
  iov.writeBigUInt64LE(koffi.address(local), 0);
  iov.writeBigUInt64LE(BigInt(local.length), 8);
  iov.writeBigUInt64LE(BigInt(remoteAddr), 16);
  iov.writeBigUInt64LE(BigInt(local.length), 24);
  const r = pvWritev(pid, koffi.address(iov), 1, koffi.address(iov) + 16n, 1, 0);
  return check('process_vm_writev', r, `pid ${pid}`);
}

/** A system call of this process with up to six integer arguments; -1 throws with errno. */
export function syscall6(name: string, nr: number, ...args: Array<number | bigint>): bigint {
  const a = [0, 1, 2, 3, 4, 5].map((i) => BigInt.asUintN(64, BigInt(args[i] ?? 0)));
  const r = syscall6Raw(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  check(name, r);
  return BigInt(r);
}

/** ptrace with a buffer we own as `data` (GETREGS, GETSIGMASK, GET_RSEQ_CONFIGURATION...). */
export function ptraceBuf(req: number, tid: number, addr: bigint, data: Buffer): number {
  // data is ours and at least as large as the request's structure (the caller sized it).
  return ptrace(req, tid, addr, koffi.address(data));
}

/** PTRACE_GETREGSET/SETREGSET: `buf` is the register set; returns the length the kernel used. */
export function ptraceRegset(req: number, tid: number, noteType: number, buf: Buffer): number {
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(koffi.address(buf), 0);
  iov.writeBigUInt64LE(BigInt(buf.length), 8);
  // iov is ours and points at buf, which outlives the call.
  ptrace(req, tid, BigInt(noteType), koffi.address(iov));
  return Number(iov.readBigUInt64LE(8));
}

/** The address of a buffer we own (for system calls that take a pointer into this process). */
export function addressOf(buf: Buffer): bigint {
  return koffi.address(buf);
}

export function tgkill(tgid: number, tid: number, sig: number): void {
  tgkillRaw(tgid, tid, sig);
}

export function errno(): number {
  return koffi.errno();
}
