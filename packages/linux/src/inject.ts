import koffi from 'koffi';
import { PTRACE, WALL, WIFSTOPPED, WNOHANG, WSTOPSIG, ptrace, ptracePeek, tgkill, waitpid } from './libc.js';
import { KernelError } from './errors.js';
import { Freezer, sleepSync, type FrozenProcess } from './freezer.js';
import { ARG_REGS, REG, REGS_BYTES } from './regs.js';

// Runs one system call inside another process: stop one thread, point it at `syscall; int3`
// written over its current instruction, let it run to the trap, read rax, and put back the bytes
// and the registers exactly as they were, orig_rax included, so a system call it was sleeping in
// restarts as if nothing happened.

const SIGTRAP = 5;

export interface InjectOptions {
  /** A process already frozen by us: its threads are in a ptrace-stop and stay traced. */
  frozen?: FrozenProcess;
  /** The thread that runs the call (default: the main thread); needs `frozen` if not the main. */
  tid?: number;
  timeoutMs?: number;
}

/** Returns the system call's result; a negative result throws KernelError with that errno. */
export function injectSyscall(pid: number, nr: number, args: bigint[], opts: InjectOptions = {}): bigint {
  const tid = opts.tid ?? pid; // the main thread's tid is the pid
  // Every thread must be stopped while `syscall; int3` stands in the shared text: another thread
  // running through those bytes would trap and take the process down with SIGTRAP.
  const own = opts.frozen ? null : new Freezer().freeze(pid, opts.timeoutMs ?? 5000);
  const held: number[] = []; // signals that arrived meanwhile, re-raised afterwards
  const saved = Buffer.alloc(REGS_BYTES);
  const regs = Buffer.alloc(REGS_BYTES);
  // saved/regs are ours, 216 bytes = sizeof(struct user_regs_struct) on x86_64.
  ptrace(PTRACE.GETREGS, tid, 0n, koffi.address(saved));
  saved.copy(regs);
  const rip = saved.readBigUInt64LE(REG.rip * 8);
  const word = ptracePeek(tid, rip);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    ptrace(PTRACE.POKETEXT, tid, rip, word);
    ptrace(PTRACE.SETREGS, tid, 0n, koffi.address(saved));
  };
  try {
    // syscall (0f 05); int3 (cc); keep the other five bytes of the word.
    const patched = (word & ~0xffffffn) | 0xcc050fn;
    ptrace(PTRACE.POKETEXT, tid, rip, patched);
    regs.writeBigUInt64LE(BigInt(nr), REG.rax * 8);
    // orig_rax = -1: no system call is in progress, so the kernel does not "restart" anything.
    regs.writeBigInt64LE(-1n, REG.orig_rax * 8);
    args.forEach((a, i) => {
      regs.writeBigUInt64LE(BigInt.asUintN(64, a), ARG_REGS[i] * 8);
    });
    ptrace(PTRACE.SETREGS, tid, 0n, koffi.address(regs));
    ptrace(PTRACE.CONT, tid, 0n, 0n);
    waitForTrap(tid, held, opts.timeoutMs ?? 5000);
    ptrace(PTRACE.GETREGS, tid, 0n, koffi.address(regs));
    const rax = regs.readBigInt64LE(REG.rax * 8);
    restore();
    if (rax < 0n && rax > -4096n) throw new KernelError(`syscall ${nr} in process ${pid}`, Number(-rax));
    return rax;
  } finally {
    try {
      restore();
    } finally {
      own?.thaw();
      for (const sig of held) tgkill(pid, tid, sig);
    }
  }
}

function waitForTrap(tid: number, held: number[], timeoutMs: number): void {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { pid, status } = waitpid(tid, WALL | WNOHANG);
    if (pid === tid) {
      if (!WIFSTOPPED(status)) throw new KernelError('waitpid', 3, `thread ${tid} exited during an injected system call`);
      const sig = WSTOPSIG(status);
      if (sig === SIGTRAP && status >>> 16 === 0) return;
      // Another signal or a stop: hold it (suppress now, re-raise after) and keep going.
      if (status >>> 16 === 0) held.push(sig);
      ptrace(PTRACE.CONT, tid, 0n, 0n);
      continue;
    }
    if (Date.now() > deadline) throw new KernelError('waitpid', 62, `thread ${tid} did not reach the trap within ${timeoutMs} ms`);
    sleepSync(0.2);
  }
}
