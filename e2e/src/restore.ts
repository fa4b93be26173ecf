import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import {
  Cleanup,
  ROOT,
  killPid,
  pidAlive,
  procState,
  rootSkipReason,
  runSource,
  start,
  startDest,
  withOnlyStdio,
  type DestHandle,
  type Proc,
  type SourceRun,
} from './procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from './netns.js';

// What the restore tests share: two network-namespace hosts (the workload and forecopy-source in
// one, forecopy-dest --restore in the other; the file system is shared, as on hosts with shared
// storage or the same container image), and ways to look at a restored process.

export const HUSK = path.join(ROOT, 'packages/linux/native/bin/husk');

export function restoreSkipReason(): string | null {
  return rootSkipReason() ?? netnsSupported() ?? (fs.existsSync(HUSK) ? null : 'the husk is not built (pnpm build)');
}

/** Processes whose executable is still the husk: a restore that did not finish, left behind. */
export function husks(): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readlinkSync(`/proc/${d}/exe`) === HUSK) out.push(Number(d));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

/** Running (not stopped, not zombie) processes whose executable is `exe`. */
export function runningWithExe(exe: string): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (fs.readlinkSync(`/proc/${d}/exe`) === exe && !['T', 't', 'Z', 'X'].includes(procState(Number(d)))) out.push(Number(d));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

/** The session directory of the one migration a destination took. */
export function sessionDir(dest: DestHandle): string | null {
  const dir = fs.readdirSync(dest.imageDir).find((d) => /^[0-9a-f]{32}$/.test(d));
  return dir ? path.join(dest.imageDir, dir) : null;
}

/** The lines of a restored process's stdout file at the destination. */
export function destStdout(dest: DestHandle): string[] {
  const dir = sessionDir(dest);
  const file = dir && path.join(dir, 'stdout.log');
  return file && fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** Sends SIGUSR1 and waits for a new line matching `re` in `lines()`. */
export async function askCheck(pid: number, lines: () => string[], re: RegExp): Promise<string> {
  const before = lines().filter((l) => re.test(l)).length;
  process.kill(pid, 'SIGUSR1');
  for (let i = 0; i < 500; i++) {
    const hits = lines().filter((l) => re.test(l));
    if (hits.length > before) return hits[hits.length - 1];
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`pid ${pid} did not answer its check; its output: ${lines().slice(-3).join(' | ')}`);
}

export async function waitUntil(what: string, f: () => boolean, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Two hosts and what a test started on them; `cleanup()` after each test, `destroy()` at the end. */
export class RestoreBench {
  readonly c = new Cleanup();
  readonly hosts: TwoHosts;
  readonly psk: string[];
  stateDir = '';

  constructor(rate = '1gbit') {
    this.hosts = makeTwoHosts({ rate });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-psk-'));
    fs.writeFileSync(path.join(dir, 'key'), randomBytes(32).toString('hex'));
    this.psk = ['--psk-file', path.join(dir, 'key')];
  }

  async cleanup(): Promise<void> {
    await this.c.run();
    for (const pid of husks()) killPid(pid); // a failed test must not leave one behind
  }

  destroy(): void {
    this.hosts.destroy();
    fs.rmSync(path.dirname(this.psk[1]), { recursive: true, force: true });
  }

  /** A program in the source namespace, with nothing open but its standard streams. */
  startWorkload(cmd: string, args: string[], opts: { stdin?: 'pipe' | 'ignore' } = {}): Proc {
    const wrap = this.hosts.exec(this.hosts.source);
    return this.c.proc(
      start(wrap[0], [...wrap.slice(1), ...withOnlyStdio(cmd, args)], { stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'] }),
    );
  }

  async restoringDest(extra: string[] = []): Promise<DestHandle> {
    this.stateDir = this.c.tmpdir('forecopy-source-state-');
    return startDest(
      this.c,
      ['--once', '--restore', '--host', this.hosts.destAddr, ...this.psk, '--log-level', 'info', ...extra],
      this.hosts.exec(this.hosts.dest),
    );
  }

  migrate(pid: number, dest: DestHandle, extra: string[] = []): Promise<SourceRun> {
    const to = `${this.hosts.destAddr}:${dest.port}`;
    return runSource(
      this.c,
      ['migrate', '--pid', String(pid), '--to', to, '--state-dir', this.stateDir, ...this.psk, ...extra],
      this.hosts.exec(this.hosts.source),
    );
  }

  resolve(sessionId: string, dest: DestHandle): Promise<SourceRun> {
    const to = `${this.hosts.destAddr}:${dest.port}`;
    return runSource(
      this.c,
      ['resolve', '--session', sessionId, '--to', to, '--state-dir', this.stateDir, ...this.psk, '--timeout', '10'],
      this.hosts.exec(this.hosts.source),
    );
  }

  /** Migrates `p` and returns the restored pid, after checking the handover finished cleanly. */
  async moveIt(p: Proc, dest: DestHandle, extra: string[] = []): Promise<number> {
    const run = await this.migrate(p.pid, dest, extra);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.report!.verified).toBe(true);
    const restoredPid = run.report!.restoredPid as number;
    expect(restoredPid).toBeGreaterThan(0);
    this.c.defer(() => killPid(restoredPid));
    expect(run.report!.restoreMs).toBeGreaterThan(0);
    expect(await p.exited).toBe(128 + 9); // the original: killed once the copy was restored
    expect(pidAlive(restoredPid)).toBe(true);
    expect(procState(restoredPid)).not.toBe('T'); // released: it runs
    expect(fs.readdirSync(this.stateDir)).toEqual([]); // the handover finished: nothing to resolve
    return restoredPid;
  }
}
