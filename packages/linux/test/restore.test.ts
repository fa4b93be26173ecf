import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Freezer,
  Husk,
  PageReader,
  captureState,
  findBlockers,
  huskBinary,
  restoreProcess,
  type FrozenProcess,
  type RestoredProcess,
} from '../src/index.js';

// Restore without a network: a process on this host is frozen, captured and rebuilt in a husk on
// the same host, its migrated memory copied across with process_vm_readv/writev; the original is
// killed and the copy must run on as if nothing happened.

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../workloads/bin');
const skip =
  process.getuid?.() !== 0
    ? 'not root (ptrace of another process)'
    : !fs.existsSync(`${BIN}/mw`) || !fs.existsSync(huskBinary())
      ? 'workloads or husk not built (pnpm build)'
      : null;

if (skip) console.warn(`restore (linux): skipped: ${skip}`);

const started: ChildProcess[] = [];
const pids: number[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const p of started.splice(0)) p.kill('SIGKILL');
  for (const pid of pids.splice(0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Starts a workload with nothing open but its standard streams (the test runner leaks some). */
function startWorkload(args: string[], stdin: 'pipe' | 'ignore' = 'ignore'): Promise<ChildProcess> {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${f##*/} is a bash parameter expansion in a shell script, not a JS template
  const closeOthers = 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@"';
  const p = spawn('/bin/bash', ['-c', closeOthers, 'bash', `${BIN}/${args[0]}`, ...args.slice(1)], { stdio: [stdin, 'pipe', 'inherit'] });
  started.push(p);
  return new Promise((resolve, reject) => {
    let out = '';
    p.stdout!.on('data', (d) => {
      out += d;
      if (/ready/.test(out)) resolve(p);
    });
    p.once('exit', (c) => reject(new Error(`${args[0]} exited ${c}: ${out}`)));
  });
}

/** Freezes `pid`, rebuilds it in a husk, kills the original, releases the copy. */
function cloneHere(pid: number, stdoutFile: string): { restored: RestoredProcess; frozen: FrozenProcess } {
  const frozen = new Freezer().freeze(pid);
  const { state, contents } = captureState(frozen);
  const husk = Husk.spawn();
  pids.push(husk.pid);
  husk.prepare(state.vmas);
  const reader = new PageReader(pid);
  for (const v of state.vmas.filter((x) => x.kind === 'migrated')) {
    const pages = (v.end - v.start) / 4096;
    husk.mapSegment(v.start, v.end - v.start, v.growsDown);
    const buf = Buffer.alloc(pages * 4096);
    reader.readRanges([{ addr: v.start, pages }], buf);
    husk.write(v.start, buf);
  }
  const restored = restoreProcess(husk, state, contents, { stdio: { stdin: '/dev/null', stdout: stdoutFile, stderr: stdoutFile } });
  frozen.kill();
  restored.release();
  return { restored, frozen };
}

async function waitFor(what: string, f: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!f()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe.skipIf(skip)('restore in a husk on this host', () => {
  it('a multi-threaded mw runs on in the husk: its self-check passes and it keeps writing', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-restore-'));
    dirs.push(dir);
    const p = await startWorkload(['mw', '--mb', '16', '--threads', '4', '--pattern', 'hotspot', '--write-rate', '20000']);
    const out = path.join(dir, 'stdout.log');
    const { restored } = cloneHere(p.pid!, out);
    pids.push(restored.pid);
    await waitFor(
      'the original to be gone',
      () => !fs.existsSync(`/proc/${p.pid}`) || fs.readFileSync(`/proc/${p.pid}/stat`, 'utf8').includes(') Z'),
    );
    const check = async (n: number) => {
      process.kill(restored.pid, 'SIGUSR1');
      await waitFor(`check ${n}`, () =>
        fs.existsSync(out)
          ? fs
              .readFileSync(out, 'utf8')
              .split('\n')
              .filter((l) => l.startsWith('mw check')).length >= n
          : false,
      );
      const line = fs
        .readFileSync(out, 'utf8')
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('mw check'))[n - 1];
      expect(line).toMatch(/^mw check ok /);
      return Number(/writes=(\d+)/.exec(line)![1]);
    };
    const w1 = await check(1);
    await new Promise((r) => setTimeout(r, 300));
    const w2 = await check(2);
    expect(w2).toBeGreaterThan(w1);
    expect(fs.readdirSync(`/proc/${restored.pid}/task`).length).toBe(4 + 1);
    expect(fs.readlinkSync(`/proc/${restored.pid}/exe`)).toBe(`${BIN}/mw`);
  });

  it("a write where the husk has nothing mapped names the address, the length and the kernel's error", () => {
    const husk = Husk.spawn();
    pids.push(husk.pid);
    const at = 0x3a0000000000; // far from the husk's own text (0x1f0000000000) and from any mapping
    husk.mapSegment(at, 4096, false);
    husk.write(at, Buffer.alloc(4096, 1)); // mapped: written
    let err: (Error & { code?: string }) | undefined;
    try {
      husk.write(at + 4096, Buffer.alloc(8192, 1));
    } catch (e) {
      err = e as Error & { code?: string };
    }
    expect(err?.code).toBe('E_RESTORE_MEMORY');
    expect(err?.message).toBe(
      `could not write the husk's memory at 0x3a0000001000 (8192 bytes): process_vm_writev failed: EFAULT (bad address): pid ${husk.pid}`,
    );
  });

  it('names what cannot move: a pipe that is not a standard stream', async () => {
    const p = await startWorkload(['mw', '--mb', '4']);
    expect(findBlockers(p.pid!).map((b) => b.message)).toEqual([]);
    const q = spawn('/bin/sh', ['-c', 'exec 5</dev/zero 7<>/dev/null; sleep 30 | cat'], { stdio: 'ignore' });
    started.push(q);
    await new Promise((r) => setTimeout(r, 200));
    const blockers = findBlockers(q.pid!).map((b) => b.message);
    expect(blockers.some((m) => m.startsWith('child process'))).toBe(true);
  });
});
