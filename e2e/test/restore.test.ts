import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WORKLOADS, leftovers, startDest } from '../src/procs.js';
import { HUSK, RestoreBench, askCheck, destStdout, restoreSkipReason, sessionDir } from '../src/restore.js';

/**
 * A migration that moves the process: the workload and forecopy-source in one network
 * namespace, forecopy-dest --restore in another. At the end the restored copy runs at the
 * destination and the original is gone. (2 cores on this machine, shared by the workload and
 * both agents.)
 */
const skip = restoreSkipReason();
if (skip) console.warn(`restore: skipped: ${skip}`);

describe.skipIf(skip)('restore at the destination, across two network-namespace hosts', () => {
  let b: RestoreBench;
  beforeAll(() => {
    b = new RestoreBench();
  });
  afterEach(() => b.cleanup());
  afterAll(() => b?.destroy());

  for (const [name, args, check] of [
    ['mw', ['--mb', '64', '--threads', '4', '--pattern', 'hotspot', '--write-rate', '20000'], /^mw check ok .*writes=(\d+)/],
    ['churn', ['--threads', '4'], /^churn check ok/],
    ['alloc', ['--mb-per-s', '8'], /^alloc check ok .*mb=(\d+)/],
  ] as const) {
    it(`${name} runs on at the destination: it answers its self-check there and keeps working`, async () => {
      const p = b.startWorkload(path.join(WORKLOADS, name), [...args]);
      await p.waitFor(/ready/);
      const dest = await b.restoringDest();
      const pid = await b.moveIt(p, dest);
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

  it('a destination that may not set the executable link still runs the process, and says what differs', async () => {
    const p = b.startWorkload(path.join(WORKLOADS, 'mw'), ['--mb', '16', '--pattern', 'hotspot', '--write-rate', '5000']);
    await p.waitFor(/ready/);
    b.stateDir = b.c.tmpdir('forecopy-source-state-');
    // Neither CAP_SYS_ADMIN nor CAP_CHECKPOINT_RESTORE: prctl(PR_SET_MM_MAP) may not change /proc/PID/exe.
    const noCaps = ['setpriv', '--bounding-set', '-sys_admin,-checkpoint_restore'];
    const dest = await startDest(
      b.c,
      ['--once', '--restore', '--host', b.hosts.destAddr, ...b.psk, '--log-level', 'info'],
      [...b.hosts.exec(b.hosts.dest), ...noCaps],
    );
    const pid = await b.moveIt(p, dest);
    expect(await askCheck(pid, () => destStdout(dest), /^mw check/)).toMatch(/^mw check ok/);
    expect(fs.readlinkSync(`/proc/${pid}/exe`)).toBe(HUSK);
    const manifest = JSON.parse(fs.readFileSync(path.join(sessionDir(dest)!, 'manifest.json'), 'utf8'));
    expect(manifest.restoreNotes).toEqual([
      expect.stringMatching(/^\/proc\/PID\/exe names the husk, not .*\/mw: this host does not let it change/),
    ]);
    expect(dest.proc.stderrLines.some((l) => l.includes('restored, but: /proc/PID/exe names the husk'))).toBe(true);
  });
});
