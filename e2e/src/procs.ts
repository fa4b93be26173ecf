import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

/**
 * Shared helpers of the end-to-end tests: start the real workloads and agents as child
 * processes, read what they print, and clean every one of them up by pid.
 */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const SOURCE_BIN = path.join(ROOT, 'packages/source-agent/bin/forecopy-source.mjs');
export const DEST_BIN = path.join(ROOT, 'packages/dest-agent/bin/forecopy-dest.mjs');
export const WORKLOADS = path.join(ROOT, 'workloads/bin');

export const isRoot = process.getuid?.() === 0;

/** Why root-only tests skip here, printed once by each suite that skips. */
export function rootSkipReason(): string | null {
  if (!isRoot)
    return 'not root: tracing another process (ptrace, userfaultfd) and network namespaces need root or CAP_SYS_PTRACE/CAP_NET_ADMIN';
  if (!fs.existsSync(path.join(WORKLOADS, 'mw'))) return `workloads are not built (${WORKLOADS}/mw missing): run pnpm build`;
  return null;
}

/** Passes on why `suite` skips (null: it runs), first warning it as `<suite>: skipped: <reason>`. */
export function warnIfSkipped(suite: string, reason: string | null): string | null {
  if (reason) console.warn(`${suite}: skipped: ${reason}`);
  return reason;
}

/** A child process whose output is collected line by line. */
export class Proc {
  readonly lines: string[] = [];
  readonly stderrLines: string[] = [];
  readonly exited: Promise<number>;
  private waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];

  constructor(readonly child: ChildProcess) {
    const take = (into: string[]) => {
      let buf = '';
      return (chunk: Buffer) => {
        buf += chunk.toString();
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          into.push(line);
          for (const w of [...this.waiters]) {
            const m = line.match(w.re);
            if (m) {
              this.waiters.splice(this.waiters.indexOf(w), 1);
              w.resolve(m);
            }
          }
        }
      };
    };
    child.stdout?.on('data', take(this.lines));
    child.stderr?.on('data', take(this.stderrLines));
    this.exited = new Promise((resolve) => child.on('exit', (code, sig) => resolve(code ?? (sig ? 128 + os.constants.signals[sig] : -1))));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** Resolves with the first stdout/stderr line (past or future) matching `re`. */
  waitFor(re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    for (const l of [...this.lines, ...this.stderrLines]) {
      const m = l.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      // A waiter that matched is gone from `waiters`: its timer must neither outlive it nor, when
      // it fires, remove another waiter (splice(-1, 1) removes the last one: a later waitFor then
      // never resolved, and with no timer left the caller hung; the 8 GiB throughput bench did).
      const w = {
        re,
        resolve: (m: RegExpMatchArray) => {
          clearTimeout(t);
          resolve(m);
        },
      };
      this.waiters.push(w);
      const t = setTimeout(() => {
        const i = this.waiters.indexOf(w);
        if (i < 0) return;
        this.waiters.splice(i, 1);
        reject(
          new Error(
            `timed out waiting for ${re} from pid ${this.pid}; stdout: ${this.lines.slice(-5).join(' | ')}; stderr: ${this.stderrLines.slice(-5).join(' | ')}`,
          ),
        );
      }, timeoutMs);
      void this.exited.then(() => {
        setTimeout(() => {
          clearTimeout(t);
          const i = this.waiters.indexOf(w);
          if (i >= 0) {
            this.waiters.splice(i, 1);
            reject(new Error(`pid ${this.pid} exited before printing ${re}; stderr: ${this.stderrLines.slice(-5).join(' | ')}`));
          }
        }, 50);
      });
    });
  }

  alive(): boolean {
    try {
      process.kill(this.pid, 0);
      return this.child.exitCode === null && this.child.signalCode === null;
    } catch {
      return false;
    }
  }

  /** Ends the process by its pid (SIGKILL after a grace period). */
  async kill(graceMs = 2000): Promise<void> {
    if (!this.alive()) return;
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      return;
    }
    const t = setTimeout(() => {
      try {
        process.kill(this.pid, 'SIGKILL');
      } catch {
        // gone
      }
    }, graceMs);
    await this.exited;
    clearTimeout(t);
  }
}

export function start(cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  return new Proc(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts }));
}

/** Starts `cmd` behind `wrap` (a command that runs the rest, e.g. `ip netns exec NS`), or as it is when `wrap` is empty. */
export function startIn(wrap: string[], cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
  return wrap.length ? start(wrap[0], [...wrap.slice(1), cmd, ...args], opts) : start(cmd, args, opts);
}

/**
 * The command, run with nothing open but its standard streams: the test runner leaks
 * descriptors into its children, and a process to be restored elsewhere must hold only what a
 * restore can carry (a stray pipe is refused, as it should be).
 */
export function withOnlyStdio(cmd: string, args: string[]): string[] {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${f##*/} is a bash parameter expansion in a shell script, not a JS template
  const closeOthers = 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@"';
  return ['/bin/bash', '-c', closeOthers, 'bash', cmd, ...args];
}

/** Kills a process that is not our child (a restored one) by its pid; never throws. */
export function killPid(pid: number | undefined): void {
  if (!pid) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Whether `pid` exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    return !['Z', 'X'].includes(procState(pid));
  } catch {
    return false;
  }
}

/** Everything started through a Tracker is killed by `cleanup()`, even when the test failed. */
export class Cleanup {
  private procs: Proc[] = [];
  private dirs: string[] = [];
  private fns: Array<() => Promise<void> | void> = [];

  proc(p: Proc): Proc {
    this.procs.push(p);
    return p;
  }

  /** A new directory under `root` (the system's temporary directory by default), removed at clean-up. */
  tmpdir(prefix = 'forecopy-test-', root = os.tmpdir()): string {
    const d = fs.mkdtempSync(path.join(root, prefix));
    this.dirs.push(d);
    return d;
  }

  /** Removes this existing directory at clean-up, as if tmpdir() had made it. */
  adoptDir(dir: string): void {
    this.dirs.push(dir);
  }

  defer(fn: () => Promise<void> | void): void {
    this.fns.push(fn);
  }

  /**
   * For a signal handler, where nothing async runs any more: SIGKILLs every process and removes
   * every directory now (the deferred functions are not run).
   */
  killNow(): void {
    for (const p of this.procs.splice(0)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const d of this.dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  }

  async run(): Promise<void> {
    for (const fn of this.fns.splice(0).reverse()) {
      try {
        await fn();
      } catch {
        // keep cleaning
      }
    }
    await Promise.all(this.procs.splice(0).map((p) => p.kill()));
    for (const d of this.dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  }
}

export interface MwHandle {
  proc: Proc;
  pid: number;
  pages: number;
}

export interface WorkloadHandle {
  proc: Proc;
  pid: number;
  /** The line it printed when it was ready. */
  ready: string;
}

/** Starts workloads/bin/`name` (behind `wrap`) and waits for its `<name> pid=<pid> … ready` line. */
export async function startWorkload(
  c: Cleanup,
  name: string,
  args: string[],
  wrap: string[] = [],
  opts: SpawnOptions = {},
): Promise<WorkloadHandle> {
  const p = c.proc(startIn(wrap, path.join(WORKLOADS, name), args, opts));
  const m = await p.waitFor(new RegExp(`^${name} pid=(\\d+) .*ready`));
  return { proc: p, pid: Number(m[1]), ready: m[0] };
}

export async function startMw(c: Cleanup, args: string[], wrap: string[] = []): Promise<MwHandle> {
  const w = await startWorkload(c, 'mw', args, wrap);
  return { proc: w.proc, pid: w.pid, pages: Number(/ pages=(\d+) ready/.exec(w.ready)![1]) };
}

/** Asks mw to check its own memory (SIGUSR1) and returns its answer line. */
export async function mwCheck(mw: MwHandle): Promise<string> {
  const before = mw.proc.lines.length;
  process.kill(mw.pid, 'SIGUSR1');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const l = mw.proc.lines.slice(before).find((x) => x.startsWith('mw check'));
    if (l) return l;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`mw ${mw.pid} did not answer its check within 10 s (is it frozen?)`);
}

/** Traces left in a process by a migration: userfaultfd descriptors and a tracer. */
export function leftovers(pid: number): { uffds: number; tracerPid: number } {
  let uffds = 0;
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (fs.readlinkSync(`/proc/${pid}/fd/${fd}`).includes('userfaultfd')) uffds++;
    } catch {
      // closed meanwhile
    }
  }
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const tracerPid = Number(/TracerPid:\s*(\d+)/.exec(status)?.[1] ?? -1);
  return { uffds, tracerPid };
}

/** Waits until an agent tracks `pid` (it holds the tracker's userfaultfd), for at most `timeoutMs`; callers check the count after. */
export async function untilTracked(pid: number, timeoutMs: number): Promise<void> {
  for (const until = Date.now() + timeoutMs; Date.now() < until && leftovers(pid).uffds === 0; ) {
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** /proc/PID/stat state letter: R, S, T (stopped), t (traced), Z ... */
export function procState(pid: number): string {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
}

export interface DestHandle {
  proc: Proc;
  port: number;
  imageDir: string;
}

export async function startDest(
  c: Cleanup,
  extra: string[] = [],
  wrap: string[] = [],
  imageDir = c.tmpdir('forecopy-images-'),
): Promise<DestHandle> {
  const args = [DEST_BIN, 'listen', '--port', '0', '--image-dir', imageDir, ...extra];
  const p = c.proc(startIn(wrap, process.execPath, args));
  const m = await p.waitFor(/listening on .*:(\d+)$/);
  return { proc: p, port: Number(m[1]), imageDir };
}

export interface SourceRun {
  code: number;
  stdout: string;
  stderr: string;
  report?: Record<string, any>;
}

/**
 * The arguments of `forecopy-source migrate`: the process `pid` to `dest`'s port at `host`
 * (loopback unless said), then `extra`.
 */
export function migrateArgs(pid: number, dest: { port: number }, extra: string[] = [], host = '127.0.0.1'): string[] {
  return ['migrate', '--pid', String(pid), '--to', `${host}:${dest.port}`, ...extra];
}

/** Runs `forecopy-source` to completion. */
export async function runSource(c: Cleanup, args: string[], wrap: string[] = [], opts: SpawnOptions = {}): Promise<SourceRun> {
  const dir = c.tmpdir('forecopy-report-');
  // An agent run as another user (opts.uid) must be able to write its report there.
  if (opts.uid !== undefined) fs.chmodSync(dir, 0o777);
  const reportFile = path.join(dir, 'report.json');
  const full = [SOURCE_BIN, ...args, ...(args[0] === 'migrate' ? ['--report', reportFile] : [])];
  const p = c.proc(startIn(wrap, process.execPath, full, opts));
  const code = await p.exited;
  const report = fs.existsSync(reportFile) ? JSON.parse(fs.readFileSync(reportFile, 'utf8')) : undefined;
  return { code, stdout: p.lines.join('\n'), stderr: p.stderrLines.join('\n'), report };
}

/** Asks a workload to check its own memory (SIGUSR1) and returns its answer line matching `re`. */
export async function selfCheck(p: Proc, pid: number, re: RegExp): Promise<string> {
  const before = p.lines.length;
  process.kill(pid, 'SIGUSR1');
  for (let i = 0; i < 500; i++) {
    const l = p.lines.slice(before).find((x) => re.test(x));
    if (l) return l;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`pid ${pid} did not answer its self-check`);
}

export interface LocalMigration {
  mw: MwHandle;
  dest: DestHandle;
  /** The source agent's run: settles when it exits. */
  source: Promise<SourceRun>;
}

/**
 * A migration on loopback, started in this order: mw with the arguments `mw`, a destination with
 * `dest`, then `forecopy-source migrate` of mw to it with `migrate` (spawned with `spawn`). The
 * caller awaits `source` when it has done what it does while the migration runs.
 */
export async function startLocalMigration(
  c: Cleanup,
  args: { mw: string[]; dest: string[]; migrate: string[]; spawn?: SpawnOptions },
): Promise<LocalMigration> {
  const mw = await startMw(c, args.mw);
  const dest = await startDest(c, args.dest);
  return { mw, dest, source: runSource(c, migrateArgs(mw.pid, dest, args.migrate), [], args.spawn) };
}

/** The session images a destination keeps: the directories named by a session id. */
export function sessionImages(imageDir: string): string[] {
  return fs.readdirSync(imageDir).filter((d) => /^[0-9a-f]{32}$/.test(d));
}

/** The source agent exited 0 without a word on stderr, its report saying verified; returns the report. */
export function expectVerified(run: SourceRun): Record<string, any> {
  expect(run.stderr).toBe('');
  expect(run.code).toBe(0);
  expect(run.report!.verified).toBe(true);
  return run.report!;
}

/** Nothing of a migration is left in process `pid`: no userfaultfd, no tracer. */
export function expectUntracked(pid: number): void {
  expect(leftovers(pid)).toEqual({ uffds: 0, tracerPid: 0 });
}

/** mw's memory passes its own check, and nothing of a migration is left in it. */
export async function expectMwIntact(mw: MwHandle): Promise<void> {
  expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  expectUntracked(mw.pid);
}

/** mw runs on where it was (alive, neither stopped nor traced), unharmed and untracked. */
export async function expectRunningUnharmed(mw: MwHandle): Promise<void> {
  expect(mw.proc.alive()).toBe(true);
  expect(['R', 'S']).toContain(procState(mw.pid));
  await expectMwIntact(mw);
}
