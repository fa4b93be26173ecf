import koffi from 'koffi';
import os from 'node:os';

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

export const PTRACE = Object.freeze({
  PEEKTEXT: 1,
  POKETEXT: 4,
  CONT: 7,
  GETREGS: 12,
  SETREGS: 13,
  DETACH: 17,
  SEIZE: 0x4206,
  INTERRUPT: 0x4207,
  EVENT_STOP: 128,
});
export const WALL = 0x40000000;
export const WNOHANG = 1;
export const SYS = Object.freeze({ close: 3, userfaultfd: 323, pidfd_open: 434, pidfd_getfd: 438 });

/** A failed system call, with its errno name (EPERM, ESRCH, ...). */
export class KernelError extends Error {
  readonly code: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
    detail = '',
  ) {
    const name = errnoName(errno);
    super(`${syscall} failed: ${name} (${os.constants.errno ? describe(errno) : errno})${detail ? ': ' + detail : ''}`);
    this.name = 'KernelError';
    this.code = name;
  }
}

function errnoName(n: number): string {
  for (const [k, v] of Object.entries(os.constants.errno)) if (v === n) return k;
  return `errno ${n}`;
}
function describe(n: number): string {
  const texts: Record<string, string> = { EPERM: 'operation not permitted', ESRCH: 'no such process', EINVAL: 'invalid argument', EFAULT: 'bad address', EBUSY: 'busy', ENOMEM: 'out of memory', EACCES: 'permission denied', ENOSYS: 'not implemented by this kernel', ENOTTY: 'not supported by this kernel' };
  return texts[errnoName(n)] ?? `errno ${n}`;
}

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

export function tgkill(tgid: number, tid: number, sig: number): void {
  tgkillRaw(tgid, tid, sig);
}

export function errno(): number {
  return koffi.errno();
}
