import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  SOURCE_BIN,
  leftovers,
  untilTracked,
  migrateArgs,
  mwCheck,
  rootSkipReason,
  runSource,
  start,
  startDest,
  startMw,
  type MwHandle,
} from '../src/procs.js';

/**
 * Auto-converge: a process that writes faster than a paced link carries (mw over 8 MiB of random
 * pages, its write rate bound to the CPU it gets by --spin, behind 50 Mbit/s) is slowed down by a
 * CPU quota (a cgroup of its own), or by a ptrace duty cycle, until what remains fits the
 * downtime limit, and runs at full speed again afterwards, whatever becomes of the agent. (Over
 * loopback; 2 cores shared by the workload and both agents. This machine has the cgroup v1 cpu
 * controller.)
 */
const skip =
  rootSkipReason() ??
  (fs.existsSync('/sys/fs/cgroup/cpu/cgroup.procs') || fs.existsSync('/sys/fs/cgroup/cgroup.subtree_control')
    ? null
    : 'no cgroup cpu controller here');
if (skip) console.warn(`auto-converge: skipped: ${skip}`);

const MW = ['--mb', '8', '--pattern', 'random', '--spin', '25000'];
/** Quicker than QEMU's 20 + 10 (the defaults), for the tests that are not about the defaults. */
const CONVERGE = ['--throttle-initial', '50', '--throttle-increment', '30'];

/** mw's scheduler state letter from /proc (R, S, t for a ptrace-stop, T for a stop). */
function stateOf(pid: number): string {
  return /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
}

/** The throttle cgroups made for `pid` (other runs on this machine may have their own). */
function throttleCgroups(pid: number): string[] {
  return ['/sys/fs/cgroup/cpu', '/sys/fs/cgroup/unified', '/sys/fs/cgroup'].flatMap((d) => {
    try {
      return fs.readdirSync(d).filter((n) => n === `forecopy-throttle-${pid}`);
    } catch {
      return [];
    }
  });
}

/** The CPUs process `pid` uses, measured over `ms` (1.0 = one CPU all the time; /proc's ticks of 10 ms). */
async function cpuUse(pid: number, ms: number): Promise<number> {
  const ticks = () => {
    const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
  };
  const a = ticks();
  const t = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  return (ticks() - a) / 100 / ((performance.now() - t) / 1000);
}

/** mw's writes per second, measured over `ms` from its own counter. */
async function writeRate(mw: MwHandle, ms = 1000): Promise<number> {
  const count = (l: string) => Number(/writes=(\d+)/.exec(l)![1]);
  const a = count(await mwCheck(mw));
  const t = performance.now();
  await new Promise((r) => setTimeout(r, ms));
  const b = count(await mwCheck(mw));
  return ((b - a) / (performance.now() - t)) * 1000;
}

describe.skipIf(skip)('auto-converge', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  /** A migration behind 50 Mbit/s started in the background, once auto-converge has throttled the process. */
  async function throttledMigration(mw: MwHandle, dest: { port: number }, extra: string[]) {
    const args = [...migrateArgs(mw.pid, dest), '--after', 'resume', '--bandwidth', '50mbit', ...extra, ...CONVERGE, '--log-level', 'info'];
    const src = c.proc(start(process.execPath, [SOURCE_BIN, ...args]));
    await src.waitFor(/auto-converge: throttled the process/, 60_000);
    return src;
  }

  /** A migration of `mw` with forecast behind 50 Mbit/s, the throttle rising quickly: its report, once verified. */
  async function forecastMigration(mw: MwHandle) {
    const dest = await startDest(c, ['--once']);
    const extra = ['--after', 'resume', '--bandwidth', '50mbit', '--policy', 'forecast', '--model-seconds', '2', ...CONVERGE];
    const run = await runSource(c, migrateArgs(mw.pid, dest, extra));
    expect(run.code, run.stderr).toBe(0);
    expect(run.report!.verified).toBe(true);
    return run.report!;
  }

  it('with the defaults, throttles a fast writer until its downtime fits the limit, which old Xen rules without it miss, and lifts the throttle after', async () => {
    const mw = await startMw(c, MW);
    const before = await writeRate(mw);
    let dest = await startDest(c, ['--once']);
    const slow = await runSource(c, migrateArgs(mw.pid, dest, ['--after', 'resume', '--bandwidth', '50mbit']));
    expect(slow.stderr).toBe('');
    expect(slow.code).toBe(0);
    const r = slow.report!;
    // The throttle brings the rest within the limit; where it bites hard enough (in CI, beside
    // other test files, the throttled writer ran slower than its quota), the last round leaves
    // under 50 pages, and the rule checked first, min-remaining, says so: within the limit too.
    expect(['downtime-limit', 'min-remaining']).toContain(r.stopReason);
    // The behaviour: the driver stopped once the rest was forecast to fit the limit. What the
    // freeze then takes is measured on 2 shared cores: alone it stays under the limit (164-254 ms
    // with two busy loops beside it), but in CI, beside other test files, it once took 313 ms. The
    // report must then say so, and the comparison with old Xen's rules below still holds.
    const iterative = r.rounds.filter((x: any) => !x.final);
    expect(iterative[iterative.length - 1].expectedDowntimeMs).toBeLessThanOrEqual(300);
    expect(r.downtimeLimitMet).toBe(r.downtimeMs <= 300);
    if (!r.downtimeLimitMet) expect(r.downtimeOverMs).toBeCloseTo(r.downtimeMs - 300, 6);
    const throttles = r.rounds.filter((x: any) => !x.final).map((x: any) => x.throttlePercent);
    expect(throttles[0]).toBe(0);
    expect(Math.max(...throttles)).toBeGreaterThanOrEqual(80);
    for (let i = 1; i < throttles.length; i++) expect(throttles[i]).toBeGreaterThanOrEqual(throttles[i - 1]); // it only rises
    expect(r.autoConverge).toEqual({
      throttle: expect.stringMatching(/^cgroup-v[12]$/),
      maxPercent: Math.max(...throttles),
      baselineCpus: expect.any(Number),
      throttledMs: expect.any(Number),
    });
    // What the throttle took from the process: at least each round's time at the throttle in
    // force while it ran (it was also in force between rounds), at most the whole migration at
    // the highest.
    const inRounds = iterative.reduce((n: number, x: any) => n + (x.durationMs * x.throttlePercent) / 100, 0);
    expect(r.autoConverge.throttledMs).toBeGreaterThanOrEqual(inRounds * 0.999);
    expect(r.autoConverge.throttledMs).toBeLessThanOrEqual((r.totalMs * r.autoConverge.maxPercent) / 100);
    expect(r.downtimeLimitMs).toBe(300);
    for (const x of r.rounds.filter((y: any) => !y.final)) {
      expect(x.dirtyRate).toBeGreaterThanOrEqual(0);
      expect(x.bandwidthBps).toBeGreaterThan(0);
      expect(x.expectedDowntimeMs).toBeGreaterThanOrEqual(0);
      expect(x.processCpus).toBeGreaterThanOrEqual(0);
    }
    // The CPU the writer used in each round: the quota holds it to the throttle's share of its
    // baseline (over half a second or more: the quota's period is 100 ms); unthrottled, it used
    // more than twice what it used at 80% or more.
    const capped = iterative.filter((x: any) => x.throttlePercent > 0 && x.durationMs >= 500);
    expect(capped.length).toBeGreaterThan(0);
    for (const x of capped) expect(x.processCpus).toBeLessThan(r.autoConverge.baselineCpus * (1 - x.throttlePercent / 100) * 1.3 + 0.02);
    const high = capped.filter((x: any) => x.throttlePercent >= 80);
    expect(high.length).toBeGreaterThan(0);
    for (const x of high) expect(iterative[0].processCpus).toBeGreaterThan(2 * x.processCpus);
    // Full speed again, and nothing left: no cgroup, no tracking.
    expect(throttleCgroups(mw.pid)).toEqual([]);
    expect(await writeRate(mw)).toBeGreaterThan(before * 0.6);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });

    // The same process under old Xen's rules without auto-converge: stopped after 3x its memory,
    // with nearly all of it in the stop-and-copy round.
    dest = await startDest(c, ['--once']);
    const xen = await runSource(
      c,
      migrateArgs(mw.pid, dest, ['--after', 'resume', '--bandwidth', '50mbit', '--stop-rule', 'xen', '--auto-converge', 'off']),
    );
    expect(xen.code).toBe(0);
    expect(xen.report!.downtimeMs).toBeGreaterThan(300);
    expect(xen.report!.downtimeMs).toBeGreaterThan(r.downtimeMs * 2);
    expect(xen.report!.rounds.every((x: any) => (x.throttlePercent ?? 0) === 0)).toBe(true);
  });

  it("weighed over QEMU's periods, a round shorter than a period lasts until it ends, and the link is measured over the sending alone", async () => {
    const mw = await startMw(c, MW);
    const dest = await startDest(c, ['--once']);
    // 200 Mbit/s: a round of these 8 MiB takes about 0.4 s. A 20 ms limit needs the throttle, and
    // 8 rounds at most are fewer periods than it needs to reach 99% (50, 80, 99: five or more).
    const extra = [
      '--after',
      'resume',
      '--bandwidth',
      '200mbit',
      '--downtime-limit-ms',
      '20',
      '--throttle-period-ms',
      '1000',
      '--max-rounds',
      '8',
      ...CONVERGE,
    ];
    const run = await runSource(c, [...migrateArgs(mw.pid, dest, extra), '--log-level', 'info']);
    expect(run.code, run.stderr).toBe(0);
    const r = run.report!;
    expect(r.verified).toBe(true);
    const iterative = r.rounds.filter((x: any) => !x.final);
    const carried = (x: any) => (200e6 / 8 / 4096) * (x.durationMs / 1000); // pages the link carries in the round's time
    const paced = iterative.filter((x: any) => x.durationMs >= 900 && x.pagesSent < 0.5 * carried(x));
    expect(paced.length).toBeGreaterThan(0); // rounds that sent for a fraction of the time they lasted
    expect(run.stdout + run.stderr).toMatch(/auto-converge: the round lasts until its throttle period ends/);
    // The link rate is the sending's (pacing at 200 Mbit/s), not the pages over the paced time.
    for (const x of paced) expect(x.bandwidthBps).toBeGreaterThan(150e6); // over the paced time: under 100 Mbit/s
    const throttles = iterative.map((x: any) => x.throttlePercent);
    expect(Math.max(...throttles)).toBeGreaterThanOrEqual(80);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });

  it('tells the forecast policy planning each round the throttle that round runs at', async () => {
    // QEMU raises the throttle at the bitmap sync that ends an iteration, before the next is sent:
    // a policy told the throttle of the round before counts a throttled process's writes for a
    // share of the time it no longer runs (at 90% -> 99%, ten times too many).
    const mw = await startMw(c, MW);
    const r = await forecastMigration(mw);
    const ran = r.rounds.filter((x: any) => !x.final).map((x: any) => x.throttlePercent);
    expect(new Set(ran).size).toBeGreaterThan(1); // it rose while rounds ran
    // Round 1 is planned before any throttle; each later one for the throttle it then ran at.
    expect(r.policyStatus.perRoundThrottlePercent).toEqual(ran);
    // And for the share of the time the process would run: the writer computes, and the quota
    // slows it by its share, as measured (RoundContext.ranShare): about 100% less the throttle.
    const shares: number[] = r.policyStatus.perRoundRunningShare;
    expect(shares).toHaveLength(ran.length);
    for (const [i, share] of shares.entries()) {
      expect(share).toBeGreaterThan(0);
      expect(share).toBeLessThanOrEqual(1);
      if (ran[i] >= 50) expect(share).toBeLessThan(2 * (1 - ran[i] / 100) + 0.02);
    }
    // Beside each, the pace the writes showed where they could tell (a share of full speed), and
    // null where not: before any throttle, or before ten samples at one, or from a count that
    // cannot tell (in a run here, null in every round: two short rounds at 50% and at 80%, then
    // 99%, at which 40 samples are 0.4 of one of the process's own).
    const writes: Array<number | null> = r.policyStatus.perRoundWriteShare;
    expect(writes).toHaveLength(ran.length);
    expect(writes[0]).toBeNull();
    for (const w of writes) {
      if (w === null) continue;
      expect(w).toBeGreaterThan(0);
      expect(w).toBeLessThanOrEqual(1);
    }
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });

  it("measures the CPU a process uses unthrottled over the modelling window too, not only over a filter's first rounds", async () => {
    // A paced writer using a few percent of a CPU. forecast's first rounds hold everything back
    // and last a few ms each: measured over them alone, its CPU was a tick of 10 ms or none, and
    // the baseline of the quota came out at the floor (0.01 CPU) or at several times what it
    // uses (0.189 CPU for 0.070 once, in a test of the old code).
    // What it uses is measured while the migration tracks it, in the modelling window (2 s from
    // the attach): tracking costs the process CPU of its own (its first write to a page after
    // each scan faults), on one machine 0.08 CPU untracked against 0.32 tracked.
    const mw = await startMw(c, ['--mb', '8', '--pattern', 'random', '--write-rate', '20000', '--spin', '2000']);
    const migration = forecastMigration(mw);
    // Measured once tracking has started (the process holds the tracker's userfaultfd), not a
    // fixed time after the agent starts: the agent compiles forecast's code before it attaches.
    await untilTracked(mw.pid, 10_000);
    expect(leftovers(mw.pid).uffds).toBe(1);
    await new Promise((r) => setTimeout(r, 100));
    const used = await cpuUse(mw.pid, 1200);
    const r = await migration;
    expect(r.autoConverge.throttle).toMatch(/^cgroup-v[12]$/);
    expect(used).toBeGreaterThan(0.02); // what the test measured: a tick of CPU is 0.005 CPU over 2 s
    expect(r.autoConverge.baselineCpus).toBeGreaterThan(used / 2);
    expect(r.autoConverge.baselineCpus).toBeLessThan(used * 2);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });

  it('a throttle left by a killed agent is lifted by cleanup', async () => {
    const mw = await startMw(c, MW);
    const before = await writeRate(mw);
    const dest = await startDest(c, ['--once']);
    const src = await throttledMigration(mw, dest, []);
    src.child.kill('SIGKILL');
    await src.exited;
    expect(throttleCgroups(mw.pid)).toEqual([`forecopy-throttle-${mw.pid}`]); // the throttle outlives the agent
    expect(await writeRate(mw)).toBeLessThan(before * 0.7);
    const clean = await runSource(c, ['cleanup', '--pid', String(mw.pid)]);
    expect(clean.code).toBe(0);
    expect(clean.stdout).toMatch(
      new RegExp(
        `^moved process ${mw.pid} out of the CPU throttle .*forecopy-throttle-${mw.pid} and removed it; pid ${mw.pid}: removed 1 userfaultfd left by forecopy`,
      ),
    );
    expect(throttleCgroups(mw.pid)).toEqual([]);
    expect(await writeRate(mw)).toBeGreaterThan(before * 0.6);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });

  it('where no cgroup is used, a ptrace duty cycle throttles; a killed agent leaves the process running, untraced', async () => {
    const mw = await startMw(c, MW);
    const before = await writeRate(mw);
    let dest = await startDest(c, ['--once']);
    const run = await runSource(
      c,
      migrateArgs(mw.pid, dest, ['--after', 'resume', '--bandwidth', '50mbit', '--throttle-by', 'ptrace', ...CONVERGE]),
    );
    expect(run.code).toBe(0);
    const r = run.report!;
    const { heldIntoFreezeMs, ...ac } = r.autoConverge;
    expect(ac).toEqual({
      throttle: 'ptrace',
      maxPercent: expect.any(Number),
      baselineCpus: expect.any(Number),
      throttledMs: expect.any(Number),
    });
    expect(ac.throttledMs).toBeGreaterThan(0);
    // At the stop decision the duty cycle either held the process (that hold became the freeze)
    // or let it run (then the freeze stopped it): a hold lasts at most ~1 s at 99%.
    if (heldIntoFreezeMs !== undefined) expect(heldIntoFreezeMs).toBeGreaterThanOrEqual(0);
    if (heldIntoFreezeMs !== undefined) expect(heldIntoFreezeMs).toBeLessThan(1500);
    expect(r.autoConverge.maxPercent).toBeGreaterThanOrEqual(50);
    const dirty = r.rounds.filter((x: any) => !x.final).map((x: any) => x.pagesDirtied);
    expect(Math.min(...dirty.slice(-2))).toBeLessThan(dirty[0] * 0.8); // the throttle slowed its writes
    expect(throttleCgroups(mw.pid)).toEqual([]);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await writeRate(mw)).toBeGreaterThan(before * 0.6);

    // The agent killed while the duty cycle runs: the kernel detaches, the process runs on.
    dest = await startDest(c, ['--once']);
    const src = await throttledMigration(mw, dest, ['--throttle-by', 'ptrace']);
    await new Promise((r) => setTimeout(r, 300)); // within a stop phase or between: either must end well
    src.child.kill('SIGKILL');
    await src.exited;
    await new Promise((r) => setTimeout(r, 200));
    expect(stateOf(mw.pid)).toMatch(/^[RS]$/);
    expect(await writeRate(mw)).toBeGreaterThan(before * 0.6);
    const clean = await runSource(c, ['cleanup', '--pid', String(mw.pid)]);
    expect(clean.code).toBe(0);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });
});
