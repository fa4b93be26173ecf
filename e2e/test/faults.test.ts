import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  DEST_BIN,
  expectRunningUnharmed,
  expectUntracked,
  expectVerified,
  leftovers,
  migrateArgs,
  procState,
  rootSkipReason,
  runSource,
  sessionImages,
  start,
  startDest,
  startLocalMigration,
  startMw,
  startWorkload,
  warnIfSkipped,
} from '../src/procs.js';

/**
 * Failures at the worst moments. The outcome must always be one of two: the migration completed
 * verified, or the process runs on at the source, unharmed (its memory passes its own check) and
 * untracked (no userfaultfd, no tracer), with the destination holding no image.
 */
const skip = warnIfSkipped('faults', rootSkipReason());

/** The arguments of an mw of `mb` MiB with a hot spot, written 5,000 times a second. */
const hotMw = (mb: string) => ['--mb', mb, '--pattern', 'hotspot', '--write-rate', '5000'];

describe.skipIf(skip)('faults', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  /** poke maps 64 pages while the destination waits 1 s before answering Hello; the migration's outcome. */
  async function mapWhileHelloIsAnswered(extra: string[]) {
    const poke = await startWorkload(c, 'poke', ['--pages', '256'], [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const dest = await startDest(c, ['--once', '--test-delay-hello-ack', '1000']);
    const src = runSource(c, migrateArgs(poke.pid, dest, [...extra, '--after', 'resume']));
    await dest.proc.waitFor(/migration started/);
    poke.proc.child.stdin!.write('m 64\n');
    await poke.proc.waitFor(/^mapped 0x/);
    return { pid: poke.pid, r: await src };
  }
  /** A migration of 64 MiB at 50 Mbit/s, 1.5 s into its round 1 (which lasts 10 s). */
  async function midRound1(extra: string[] = []) {
    const m = await startLocalMigration(c, {
      mw: hotMw('64'),
      dest: ['--once'],
      migrate: ['--image-only', '--bandwidth', '50mbit', ...extra],
    });
    await new Promise((r) => setTimeout(r, 1500));
    return m;
  }
  const images = (dir: string) => fs.readdirSync(dir).filter((d) => !d.endsWith('.failed.json'));

  it('a mapping made while the destination answers Hello late is announced before its pages', async () => {
    // The sampler runs on while the source waits for HelloAck: it sees the new mapping then,
    // and nothing changes after it, so only the version the Hello carried tells round 1 that
    // the destination has not heard of it yet.
    const { pid, r } = await mapWhileHelloIsAnswered([]);
    expectVerified(r);
    expectUntracked(pid);
  });

  it('a mapping first seen by the scan that opens round 1 is sent in round 1', async () => {
    // No timer scan before round 1 (a 10 s interval): the scan that opens it is the first to
    // see the mapping made while the destination answered Hello, and round 1 must cover it.
    const { r } = await mapWhileHelloIsAnswered(['--interval-ms', '10000']);
    expectVerified(r);
  });

  /** The destination SIGKILLed 1.5 s into round 1: one line, exit 5, the process runs on here unharmed and untracked. */
  async function killDestinationMidRound(extra: string[] = []) {
    const { mw, dest, source } = await midRound1(extra);
    dest.proc.child.kill('SIGKILL');
    const r = await source;
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^forecopy-source: the connection to the destination failed: /);
    expect(r.stderr.split('\n')).toHaveLength(1);
    await expectRunningUnharmed(mw);
  }

  it('the destination killed mid-round', async () => {
    await killDestinationMidRound();
  });

  it('several streams: mappings made and unmapped while round 1 runs, the image verifies', async () => {
    const poke = await startWorkload(c, 'poke', ['--pages', '4096'], [], { stdio: ['pipe', 'pipe', 'pipe'] });
    const dest = await startDest(c, ['--once']);
    // 16 MiB at 50 Mbit/s, uncompressed: round 1 lasts about 2.7 s, on three connections.
    const src = runSource(
      c,
      migrateArgs(poke.pid, dest, ['--streams', '3', '--bandwidth', '50mbit', '--no-compress', '--after', 'resume']),
    );
    await dest.proc.waitFor(/migration started/);
    await new Promise((r) => setTimeout(r, 500));
    const ask = async (cmd: string, answer: RegExp) => {
      const before = poke.proc.lines.length;
      poke.proc.child.stdin!.write(`${cmd}\n`);
      while (!poke.proc.lines.slice(before).some((l) => answer.test(l))) await new Promise((r) => setTimeout(r, 20));
    };
    await ask('m 64', /^mapped 0x/);
    await ask('m 32', /^mapped 0x/);
    await ask('u', /^unmapped/);
    await ask('w 0-100', /^ok/);
    const r = await src;
    expectVerified(r);
    expect(r.report!.streams).toBe(3);
    expect(r.report!.rounds[0].durationMs).toBeGreaterThan(1000); // the mappings changed while round 1 ran
    expect(r.report!.memoryPages).toBeGreaterThanOrEqual(4096 + 64); // the mapping left is in the image
    expectUntracked(poke.pid);
  });

  it('the destination killed mid-round with several streams open: the process runs on here, untracked', async () => {
    await killDestinationMidRound(['--streams', '3']);
  });

  it('the destination dies during stop-and-copy, while the process is frozen', async () => {
    const { mw, dest, source } = await startLocalMigration(c, {
      mw: hotMw('16'),
      dest: ['--once', '--test-die-at-stop-and-copy'],
      migrate: ['--image-only'],
    });
    const r = await source;
    expect(await dest.proc.exited).toBe(137);
    expect(r.code).toBe(5);
    expect(r.stderr.split('\n')).toHaveLength(1);
    await expectRunningUnharmed(mw); // thawed, untracked
    expect(sessionImages(dest.imageDir)).toHaveLength(0);
  });

  it('the source agent killed while the process is frozen: the kernel thaws it, cleanup untracks it', async () => {
    const { mw, dest, source } = await startLocalMigration(c, {
      mw: hotMw('16'),
      dest: ['--once'],
      migrate: ['--image-only', '--test-die-when-frozen'],
    });
    const r = await source;
    expect(r.code).toBe(128 + 9);
    expect(mw.proc.alive()).toBe(true);
    expect(procState(mw.pid)).not.toBe('t'); // no longer held: its tracer is gone
    expect(leftovers(mw.pid)).toEqual({ uffds: 1, tracerPid: 0 });
    expect((await runSource(c, ['cleanup', '--pid', String(mw.pid)])).code).toBe(0);
    await expectRunningUnharmed(mw);
    expect(await dest.proc.exited).toBe(1);
    expect(images(dest.imageDir)).toHaveLength(0);
  });

  it('the workload exits mid-migration', async () => {
    const { mw, dest, source } = await midRound1();
    process.kill(mw.pid, 'SIGKILL');
    const r = await source;
    expect(r.code).toBe(8);
    expect(r.stderr).toBe(`forecopy-source: process ${mw.pid} exited during the migration`);
    expect(await dest.proc.exited).toBe(1);
    expect(images(dest.imageDir)).toHaveLength(0);
  });

  it('the answer to Commit is lost: the source asks, learns the image is final, and lets the process go', async () => {
    const { mw, dest, source } = await startLocalMigration(c, {
      mw: hotMw('16'),
      dest: ['--once', '--test-drop-committed', '--once-linger-ms', '5000', '--log-level', 'info'],
      migrate: ['--image-only', '--timeout', '2', '--after', 'kill'],
    });
    expectVerified(await source);
    expect(await mw.proc.exited).toBe(128 + 9); // handed over: gone from here
    expect(await dest.proc.exited).toBe(0);
    expect(dest.proc.stderrLines.join('\n')).toMatch(/answered a query/);
    expect(sessionImages(dest.imageDir)).toHaveLength(1);
  });

  it('the destination is gone before the source learns the outcome: in doubt, the process stays (exit 9)', async () => {
    const { mw, dest, source } = await startLocalMigration(c, {
      mw: hotMw('16'),
      // It dies once the image is final, before its answer (a kill from here on reading its log
      // raced the source's Query to the lingering listener, and sometimes lost).
      dest: ['--once', '--test-die-when-committed', '--log-level', 'info'],
      migrate: ['--image-only', '--timeout', '2', '--after', 'kill'],
    });
    const r = await source;
    expect(await dest.proc.exited).toBe(128 + 9);
    expect(sessionImages(dest.imageDir)).toHaveLength(1); // it did make the image final
    expect(r.code).toBe(9);
    expect(r.stderr).toMatch(
      /^forecopy-source: could not learn whether the destination made session [0-9a-f]{32} final; the process was left running here/,
    );
    expect(r.stderr.split('\n')).toHaveLength(1);
    await expectRunningUnharmed(mw);
  });

  it("the destination's disk fills up", async () => {
    const mw = await startMw(c, ['--mb', '32', '--pattern', 'random', '--write-rate', '2000']);
    const dir = c.tmpdir('forecopy-small-disk-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'forecopy-test', dir]);
    c.defer(() => {
      execFileSync('umount', [dir]);
    });
    const destProc = c.proc(start(process.execPath, [DEST_BIN, 'listen', '--port', '0', '--image-dir', dir, '--once']));
    const port = Number((await destProc.waitFor(/listening on .*:(\d+)$/))[1]);
    const r = await runSource(c, migrateArgs(mw.pid, { port }, ['--image-only']));
    expect(r.code).toBe(7);
    expect(r.stderr).toMatch(/^forecopy-source: the destination aborted: the destination's disk is full/);
    expect(await destProc.exited).toBe(1);
    expect(images(dir)).toEqual([]); // partial image discarded
    await expectRunningUnharmed(mw);
  });
});
