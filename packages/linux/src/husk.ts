import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KernelError, RestoreError } from './errors.js';
import { nextWaitStatus, sleepSync } from './freezer.js';
import { PTRACE, PTRACE_EVENT, SYS, WIFSTOPPED, WSTOPSIG, processVmWritev, ptrace, ptraceBuf, ptracePeek } from './libc.js';
import { PageReader } from './page-reader.js';
import { readMaps, type ProcMapping } from './proc-maps.js';
import { ARG_REGS, REG, REGS_BYTES } from './regs.js';

// The process a migrated process is rebuilt in, at the destination. A husk is native/husk.c: a
// static program without libc, linked at HUSK_BASE, that sleeps in pause(). It is started
// detached from this agent (its parent exits at once, so it is nobody's child here: Node's own
// child-process reaper never sees its ptrace stops), seized with ptrace, and from then on runs
// only the system calls injected into it, through the `syscall` instruction of its own loop.
//
//   spawn ─▶ prepare (move its vDSO to the source's address, unmap its stack) ─▶ map / unmap
//   the migrated segments as the layout changes, pages written with process_vm_writev during
//   the rounds ─▶ restore.ts: the rest of the state ─▶ held stopped ─▶ released (SIGCONT)
//
// While it is a husk, PTRACE_O_EXITKILL kills it should this agent die.

export const HUSK_BASE = 0x1f0000000000;
/** A scratch area next to the husk's text, for the arguments of injected calls. */
export const SCRATCH_ADDR = 0x1f0001000000;
export const SCRATCH_BYTES = 1 << 20;
/** Where the vDSO pages wait while they move (so that no move clobbers another). */
const VDSO_PARK = 0x1f0002000000;
const HUSK_END = 0x1f0003000000;

const SIGTRAP = 5;
const SYSCALL_STOP = SIGTRAP | 0x80; // PTRACE_O_TRACESYSGOOD
const PROT_RW = 3n;
const MAP_PRIVATE_ANON = 0x22n;
const MAP_FIXED_NOREPLACE = 0x100000n;
const MAP_GROWSDOWN = 0x100n;
const MREMAP_MAYMOVE_FIXED = 3n;
const VDSO_NAMES = ['[vvar]', '[vvar_vclock]', '[vdso]'];

export function huskBinary(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return path.resolve(here, '../native/bin/husk');
}

/** Runs system calls in one thread of a husk that we hold in a ptrace stop. */
export class HuskThread {
  private readonly regs = Buffer.alloc(REGS_BYTES);

  constructor(
    readonly tid: number,
    /** A `syscall` instruction (0f 05): the husk's own, or one of the restored program's. */
    public syscallAddr: bigint,
    private readonly timeoutMs = 5000,
  ) {}

  /**
   * Points the thread at the husk's `syscall` instruction with rax = nr, lets it run to the
   * system call's entry and on to its exit (PTRACE_SYSCALL twice), and returns rax. The thread
   * is left in the syscall-exit stop: it never executes another instruction of the husk.
   * `onClone` receives the tid of a thread a clone() created.
   */
  call(nr: number, args: Array<bigint | number> = [], onClone?: (tid: number) => void): bigint {
    // regs is ours (216 bytes, struct user_regs_struct); tid is a thread we hold stopped.
    ptraceBuf(PTRACE.GETREGS, this.tid, 0n, this.regs);
    this.regs.writeBigUInt64LE(this.syscallAddr, REG.rip * 8);
    this.regs.writeBigUInt64LE(BigInt(nr), REG.rax * 8);
    this.regs.writeBigInt64LE(-1n, REG.orig_rax * 8);
    args.forEach((a, i) => {
      this.regs.writeBigUInt64LE(BigInt.asUintN(64, BigInt(a)), ARG_REGS[i] * 8);
    });
    ptraceBuf(PTRACE.SETREGS, this.tid, 0n, this.regs);
    for (let stops = 0; stops < 2; ) {
      ptrace(PTRACE.SYSCALL, this.tid, 0n, 0n);
      const status = waitStop(this.tid, this.timeoutMs);
      if (PTRACE_EVENT(status) === PTRACE.EVENT_CLONE) {
        const msg = Buffer.alloc(8);
        ptraceBuf(0x4201 /* PTRACE_GETEVENTMSG */, this.tid, 0n, msg);
        onClone?.(Number(msg.readBigUInt64LE(0)));
        continue;
      }
      if (WSTOPSIG(status) === SYSCALL_STOP) stops++;
      // any other stop (a signal): suppressed by resuming without it
    }
    ptraceBuf(PTRACE.GETREGS, this.tid, 0n, this.regs);
    const rax = this.regs.readBigInt64LE(REG.rax * 8);
    if (rax < 0n && rax > -4096n) throw new KernelError(`injected system call ${nr}`, Number(-rax), `husk thread ${this.tid}`);
    return rax;
  }
}

/** Waits for `tid` to stop; returns the wait status. */
export function waitStop(tid: number, timeoutMs: number): number {
  const status = nextWaitStatus(tid, timeoutMs, 0.05);
  if (status === null) throw new RestoreError('E_RESTORE_HUSK', `the husk's thread ${tid} did not stop within ${timeoutMs} ms`);
  if (!WIFSTOPPED(status)) throw new RestoreError('E_RESTORE_HUSK', `the husk's thread ${tid} exited (status ${status})`);
  return status;
}

export class Husk {
  readonly main: HuskThread;
  private readonly reader: PageReader;
  private killed = false;

  private constructor(
    readonly pid: number,
    readonly syscallAddr: bigint,
  ) {
    this.main = new HuskThread(pid, syscallAddr);
    this.reader = new PageReader(pid);
  }

  /** Starts a husk and seizes it. Throws RestoreError when it cannot. */
  static spawn(binary = huskBinary()): Husk {
    if (!fs.existsSync(binary)) throw new RestoreError('E_RESTORE_HUSK', `the husk program ${binary} is missing (run pnpm build)`);
    // sh starts the husk in the background and exits: the husk is reparented away from us.
    const out = execFileSync('/bin/sh', ['-c', '"$0" </dev/null >/dev/null 2>&1 & echo $!', binary], { encoding: 'utf8' });
    const pid = Number(out.trim());
    try {
      waitInPause(pid);
      // pid is the husk we just started; it has no other tracer.
      ptrace(PTRACE.SEIZE, pid, 0n, BigInt(PTRACE.O_TRACESYSGOOD | PTRACE.O_TRACECLONE | PTRACE.O_EXITKILL));
      ptrace(PTRACE.INTERRUPT, pid);
      waitStop(pid, 5000);
      const regs = Buffer.alloc(REGS_BYTES);
      ptraceBuf(PTRACE.GETREGS, pid, 0n, regs);
      const at = regs.readBigUInt64LE(REG.rip * 8) - 2n; // it sleeps right after its `syscall`
      if ((ptracePeek(pid, at) & 0xffffn) !== 0x050fn)
        throw new RestoreError('E_RESTORE_HUSK', `the husk ${pid} is not where it should be`);
      const husk = new Husk(pid, at);
      husk.main.call(SYS.mmap, [SCRATCH_ADDR, SCRATCH_BYTES, PROT_RW, MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE, -1, 0]);
      return husk;
    } catch (e) {
      killPid(pid);
      throw e instanceof RestoreError ? e : new RestoreError('E_RESTORE_HUSK', `could not start a husk: ${(e as Error).message}`, e);
    }
  }

  /**
   * Makes room for the source's layout: checks nothing of the source stands where the husk's
   * text and scratch do, moves the husk's vDSO pages to the source's vDSO address (the restored
   * program's libc has that address cached), and unmaps the rest of the husk (its stack).
   */
  prepare(sourceVmas: ReadonlyArray<{ start: number; end: number; path: string }>): void {
    for (const v of sourceVmas) {
      if (v.start < HUSK_END && v.end > HUSK_BASE) {
        throw new RestoreError('E_RESTORE_LAYOUT', `the process has a mapping at 0x${v.start.toString(16)}, where the husk stands`);
      }
    }
    const own = readMaps(this.pid);
    this.moveVdso(own, sourceVmas);
    for (const m of own) {
      const ours = m.start >= HUSK_BASE && m.end <= HUSK_END;
      if (ours || VDSO_NAMES.includes(m.path) || m.path === '[vsyscall]') continue;
      this.main.call(SYS.munmap, [m.start, m.end - m.start]);
    }
  }

  private moveVdso(own: ProcMapping[], sourceVmas: ReadonlyArray<{ start: number; end: number; path: string }>): void {
    const mine = VDSO_NAMES.map((n) => own.find((m) => m.path === n)).filter((m): m is ProcMapping => !!m);
    const theirs = VDSO_NAMES.map((n) => sourceVmas.find((m) => m.path === n)).filter((m) => !!m);
    if (theirs.length === 0) {
      for (const m of mine) this.main.call(SYS.munmap, [m.start, m.end - m.start]);
      return;
    }
    const shape = (l: ReadonlyArray<{ start: number; end: number; path: string }>) =>
      l.map((m) => `${m.path}:${m.end - m.start}:${m.start - l[0].start}`).join(' ');
    if (shape(mine) !== shape(theirs)) {
      throw new RestoreError(
        'E_RESTORE_KERNEL',
        `the vDSO differs between the hosts (source ${shape(theirs)}, here ${shape(mine)}): both must run the same kernel`,
      );
    }
    // Park every part first, then move each to its place: no move lands on a part not yet moved.
    let park = VDSO_PARK;
    const parked = mine.map((m) => {
      const len = m.end - m.start;
      this.main.call(SYS.mremap, [m.start, len, len, MREMAP_MAYMOVE_FIXED, park]);
      const at = park;
      park += len;
      return { at, len };
    });
    parked.forEach((p, i) => {
      this.main.call(SYS.mremap, [p.at, p.len, p.len, MREMAP_MAYMOVE_FIXED, theirs[i]!.start]);
    });
  }

  /** Maps a migrated segment as private anonymous read-write memory (the rounds fill it). */
  mapSegment(start: number, bytes: number, growsDown: boolean): void {
    const flags = MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE | (growsDown ? MAP_GROWSDOWN : 0n);
    const got = this.main.call(SYS.mmap, [start, bytes, PROT_RW, flags, -1, 0]);
    if (Number(got) !== start) throw new RestoreError('E_RESTORE_LAYOUT', `the husk could not map 0x${start.toString(16)}`);
  }

  unmapSegment(start: number, bytes: number): void {
    this.main.call(SYS.munmap, [start, bytes]);
  }

  /** Writes `data` at `addr` in the husk (the range must be mapped writable). */
  write(addr: number, data: Buffer): void {
    let done = 0;
    while (done < data.length) {
      let n: number;
      try {
        n = processVmWritev(this.pid, data.subarray(done), addr + done);
      } catch (e) {
        // Say where: the kernel's error names only the process.
        throw new RestoreError(
          'E_RESTORE_MEMORY',
          `could not write the husk's memory at 0x${(addr + done).toString(16)} (${data.length - done} bytes): ${(e as Error).message}`,
          e,
        );
      }
      if (n <= 0) throw new RestoreError('E_RESTORE_MEMORY', `could not write the husk's memory at 0x${(addr + done).toString(16)}`);
      done += n;
    }
  }

  /** Reads `pages` pages at `addr` into `out`. */
  read(addr: number, pages: number, out: Buffer): void {
    const got = this.reader.readRanges([{ addr, pages }], out);
    if (got[0] !== pages) throw new RestoreError('E_RESTORE_MEMORY', `could not read the husk's memory at 0x${addr.toString(16)}`);
  }

  /** Writes `data` into the scratch area at `offset` and returns its address in the husk. */
  scratch(offset: number, data: Buffer): number {
    if (offset + data.length > SCRATCH_BYTES) throw new RangeError('scratch overflow');
    this.write(SCRATCH_ADDR + offset, data);
    return SCRATCH_ADDR + offset;
  }

  /** Ends the husk (or the process it became, while it is held); never throws. */
  kill(): void {
    if (this.killed) return;
    this.killed = true;
    killPid(this.pid);
  }
}

function killPid(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

/** Waits until the freshly started husk sleeps in pause() (34), so that we seize the husk itself. */
function waitInPause(pid: number): void {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      if (fs.readFileSync(`/proc/${pid}/syscall`, 'utf8').startsWith('34 ')) return;
    } catch {
      // not there yet, or no permission: keep trying until the deadline
    }
    if (Date.now() > deadline) throw new RestoreError('E_RESTORE_HUSK', `the husk ${pid} did not start within 5 s`);
    sleepSync(1);
  }
}
