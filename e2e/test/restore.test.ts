import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Cleanup, ROOT, WORKLOADS, killPid, leftovers, pidAlive, procState, rootSkipReason, runSource, start, startDest, withOnlyStdio, type DestHandle, type Proc } from '../src/procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from '../src/netns.js';

/**
 * A migration that moves the process: the workload and forecopy-source in one network
 * namespace, forecopy-dest --restore in another (the file system is shared, as on hosts with
 * shared storage or the same container image). At the end exactly one copy runs: the restored
 * one at the destination, or, whenever anything fails, the original at the source.
 * (2 cores on this machine, shared by the workload and both agents.)
 */
const HUSK = path.join(ROOT, 'packages/linux/native/bin/husk');
const skip = rootSkipReason() ?? netnsSupported() ?? (fs.existsSync(HUSK) ? null : 'the husk is not built (pnpm build)');
if (skip) console.warn(`restore: skipped: ${skip}`);

/** Processes whose executable is still the husk: a restore that did not finish, left behind. */
function husks(): number[] {
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

/** The lines of a restored process's stdout file at the destination. */
function destStdout(dest: DestHandle): string[] {
  const dir = fs.readdirSync(dest.imageDir).find((d) => /^[0-9a-f]{32}$/.test(d));
  if (!dir) return [];
  const file = path.join(dest.imageDir, dir, 'stdout.log');
  return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** Sends SIGUSR1 and waits for a new line matching `re` in `lines()`. */
async function askCheck(pid: number, lines: () => string[], re: RegExp): Promise<string> {
  const before = lines().filter((l) => re.test(l)).length;
  process.kill(pid, 'SIGUSR1');
  for (let i = 0; i < 500; i++) {
    const hits = lines().filter((l) => re.test(l));
    if (hits.length > before) return hits[hits.length - 1];
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`pid ${pid} did not answer its check; its output: ${lines().slice(-3).join(' | ')}`);
}

describe.skipIf(skip)('restore at the destination, across two network-namespace hosts', () => {
  let hosts: TwoHosts;
  const c = new Cleanup();
  let psk: string[];
  let stateDir: string;
  beforeAll(() => {
    hosts = makeTwoHosts({ rate: '1gbit' });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-psk-'));
    fs.writeFileSync(path.join(dir, 'key'), randomBytes(32).toString('hex'));
    psk = ['--psk-file', path.join(dir, 'key')];
  });
  afterEach(async () => {
    await c.run();
    for (const pid of husks()) killPid(pid); // a failed test must not leave one behind
  });
  afterAll(() => {
    hosts?.destroy();
    if (psk) fs.rmSync(path.dirname(psk[1]), { recursive: true, force: true });
  });

  /** A workload in the source namespace, with nothing open but its standard streams. */
  async function startWorkload(bin: string, args: string[], ready: RegExp): Promise<Proc> {
    const p = c.proc(start(hosts.exec(hosts.source)[0], [...hosts.exec(hosts.source).slice(1), ...withOnlyStdio(bin, args)]));
    await p.waitFor(ready);
    return p;
  }

  async function restoringDest(extra: string[] = []): Promise<DestHandle> {
    stateDir = c.tmpdir('forecopy-source-state-');
    return startDest(c, ['--once', '--restore', '--host', hosts.destAddr, ...psk, '--log-level', 'info', ...extra], hosts.exec(hosts.dest));
  }

  function migrate(pid: number, dest: DestHandle, extra: string[] = []) {
    return runSource(c, ['migrate', '--pid', String(pid), '--to', `${hosts.destAddr}:${dest.port}`, '--state-dir', stateDir, ...psk, ...extra], hosts.exec(hosts.source));
  }

  /** Migrates `p` with --restore and returns the restored pid, after checking the original is gone. */
  async function moveIt(p: Proc, dest: DestHandle, extra: string[] = []): Promise<number> {
    const run = await migrate(p.pid, dest, extra);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.report!.verified).toBe(true);
    const restoredPid = run.report!.restoredPid as number;
    expect(restoredPid).toBeGreaterThan(0);
    c.defer(() => killPid(restoredPid));
    expect(run.report!.restoreMs).toBeGreaterThan(0);
    expect(await p.exited).toBe(128 + 9); // the original: killed once the copy was restored
    expect(pidAlive(restoredPid)).toBe(true);
    expect(procState(restoredPid)).not.toBe('T'); // released: it runs
    expect(fs.readdirSync(stateDir)).toEqual([]); // the handover finished: nothing to resolve
    return restoredPid;
  }

  for (const [name, args, check] of [
    ['mw', ['--mb', '64', '--threads', '4', '--pattern', 'hotspot', '--write-rate', '20000'], /^mw check ok .*writes=(\d+)/],
    ['churn', ['--threads', '4'], /^churn check ok/],
    ['alloc', ['--mb-per-s', '8'], /^alloc check ok .*mb=(\d+)/],
  ] as const) {
    it(`${name} runs on at the destination: it answers its self-check there and keeps working`, async () => {
      const p = await startWorkload(path.join(WORKLOADS, name), [...args], /ready/);
      const dest = await restoringDest();
      const pid = await moveIt(p, dest);
      expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(path.join(WORKLOADS, name));
      const first = await askCheck(pid, () => destStdout(dest), check);
      await new Promise((r) => setTimeout(r, 500));
      const second = await askCheck(pid, () => destStdout(dest), check);
      const progress = (l: string) => Number(check.exec(l)?.[1] ?? 0);
      if (name !== 'churn') expect(progress(second)).toBeGreaterThan(progress(first));
      expect(await dest.proc.exited).toBe(0);
      expect(leftovers(pid)).toEqual({ uffds: 0, tracerPid: 0 });
    });
  }
});
