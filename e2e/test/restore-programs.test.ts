import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WORKLOADS, killPid, pidAlive } from '../src/procs.js';
import { RestoreBench, askCheck, destStdout, restoreSkipReason, waitUntil } from '../src/restore.js';

/**
 * Real programs moved mid-work to the other network-namespace host (the file system is shared):
 * each finishes there, and what it wrote equals what an unmigrated run writes. Plus threads
 * blocked in system calls, which must resume as the kernel would have resumed them.
 * (2 cores on this machine, shared by the program, both agents and the reference run.)
 */
const PYTHON = '/usr/bin/python3';
const skip = restoreSkipReason();
if (skip) console.warn(`restore-programs: skipped: ${skip}`);

const MB = 1024 * 1024;

/**
 * `bytes` of base64 lines of random data: slow enough to compress (gzip -9 takes about 8 s for
 * 200 MB here) that the program is still at work when it is migrated.
 */
function writeInput(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    for (let done = 0; done < bytes; ) {
      const text = randomBytes(3 * 256 * 1024)
        .toString('base64')
        .replace(/(.{100})/g, '$1\n');
      const chunk = Buffer.from(text).subarray(0, Math.min(text.length, bytes - done));
      fs.writeSync(fd, chunk);
      done += chunk.length;
    }
  } finally {
    fs.closeSync(fd);
  }
}

const sha = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe.skipIf(skip)('real programs restored at the destination finish their work there', () => {
  let b: RestoreBench;
  let input: string;
  beforeAll(() => {
    b = new RestoreBench();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-programs-')); // kept for all the tests
    input = path.join(dir, 'input.txt');
    writeInput(input, 200 * MB);
  }, 120_000);
  afterEach(() => b.cleanup());
  afterAll(() => {
    fs.rmSync(path.dirname(input), { recursive: true, force: true });
    b?.destroy();
  });

  /** Runs `shell` (which writes `out`) migrated after `afterMs`; returns when the restored copy exited. */
  async function runMigrated(shell: string, out: string, afterMs: number): Promise<void> {
    const p = b.startWorkload('/bin/sh', ['-c', `exec ${shell}`]);
    await new Promise((r) => setTimeout(r, afterMs));
    expect(fs.statSync(out).size).toBeGreaterThan(0); // mid-stream: it has started writing
    const dest = await b.restoringDest();
    const pid = await b.moveIt(p, dest);
    await waitUntil(`the restored ${shell.split(' ')[0]} (pid ${pid}) to finish`, () => !pidAlive(pid), 180_000);
  }

  for (const [tool, args, unpack] of [
    ['gzip', '-9 -c', 'gzip -dc'],
    ['bzip2', '-9 -c', 'bzip2 -dc'],
  ] as const) {
    it(`${tool} ${args} of 200 MB finishes at the destination, its output equal to an unmigrated run's`, async () => {
      const dir = path.dirname(input);
      const out = path.join(dir, `migrated.${tool}`);
      await runMigrated(`${tool} ${args} ${input} > ${out}`, out, 1500);
      const ref = path.join(dir, `reference.${tool}`);
      execFileSync('/bin/sh', ['-c', `${tool} ${args} ${input} > ${ref}`]);
      expect(sha(out)).toBe(sha(ref));
      const back = path.join(dir, `back.${tool}`);
      execFileSync('/bin/sh', ['-c', `${unpack} ${out} > ${back}`]);
      expect(sha(back)).toBe(sha(input));
      for (const f of [out, ref, back]) fs.rmSync(f, { force: true });
    }, 300_000);
  }

  it.skipIf(!fs.existsSync(PYTHON))(
    'a python3 script finishes at the destination and writes the result an unmigrated run writes',
    async () => {
      const dir = path.dirname(input);
      const script = path.join(dir, 'work.py');
      fs.writeFileSync(
        script,
        [
          'import hashlib, sys',
          'out, n = sys.argv[1], int(sys.argv[2])',
          'xs = list(range(1_000_000))',
          "open(out + '.started', 'w').write('started')",
          'h, acc = hashlib.sha256(), 0',
          'for i in range(n):',
          '    j = (i * 7919) % len(xs)',
          '    xs[j] = (xs[j] * 31 + i) % 1_000_003',
          '    acc = (acc + xs[j]) % (1 << 61)',
          '    if i % 100_000 == 0: h.update(str(acc).encode())',
          "open(out + '.tmp', 'w').write(f'{acc} {h.hexdigest()}\\n')",
          "import os; os.rename(out + '.tmp', out)",
          '',
        ].join('\n'),
      );
      // About 7 s of work here (2.4 s for 8 million: the copy restored after 1.5 s could finish
      // before the handover was checked, and the check that it runs found it gone).
      const n = 24_000_000;
      const out = path.join(dir, 'migrated.result');
      await runMigrated(`${PYTHON} ${script} ${out} ${n}`, `${out}.started`, 1500);
      const ref = path.join(dir, 'reference.result');
      execFileSync(PYTHON, [script, ref, String(n)]);
      expect(fs.readFileSync(out, 'utf8')).toBe(fs.readFileSync(ref, 'utf8'));
    },
    300_000,
  );

  it.skipIf(!fs.existsSync(PYTHON))('shared anonymous memory and a memfd mapping keep their content and stay shared', async () => {
    const dir = b.c.tmpdir('forecopy-shared-');
    const script = path.join(dir, 'shared.py');
    // An anonymous MAP_SHARED region and a memfd mapped twice (its descriptor closed: a memfd
    // descriptor would be refused); SIGUSR1 prints a digest of both and whether the two memfd
    // mappings still show each other's writes.
    fs.writeFileSync(
      script,
      [
        'import hashlib, mmap, os, signal, time',
        'anon = mmap.mmap(-1, 1 << 20)',
        "fd = os.memfd_create('forecopy-test')",
        'os.ftruncate(fd, 1 << 20)',
        'm1 = mmap.mmap(fd, 1 << 20)',
        'm2 = mmap.mmap(fd, 1 << 20)',
        'os.close(fd)',
        'for i in range(0, 1 << 20, 4096):',
        '    anon[i:i + 8] = i.to_bytes(8, "little"); m1[i + 8:i + 16] = (i * 3).to_bytes(8, "little")',
        'want = hashlib.sha256(anon[:] + m1[:]).hexdigest()',
        'def check(*_):',
        '    m1[0:4] = b"ping"',
        '    shared = m2[0:4] == b"ping"',
        '    m1[0:4] = bytes(4)',
        '    got = hashlib.sha256(anon[:] + m1[:]).hexdigest()',
        "    print('shared check', 'ok' if got == want and shared else 'FAIL', flush=True)",
        'signal.signal(signal.SIGUSR1, check)',
        "print('ready', flush=True)",
        'while True: time.sleep(0.05)',
        '',
      ].join('\n'),
    );
    const p = b.startWorkload(PYTHON, [script]);
    await p.waitFor(/^ready/);
    expect(await askCheck(p.pid, () => p.lines, /^shared check/)).toBe('shared check ok');
    const dest = await b.restoringDest();
    const pid = await b.moveIt(p, dest);
    expect(await askCheck(pid, () => destStdout(dest), /^shared check/)).toBe('shared check ok');
    const maps = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
    expect(maps).toMatch(/rw-s .*\/memfd:forecopy-test \(deleted\)/);
  });

  it.skipIf(!fs.existsSync(PYTHON))(
    'a signal pending (blocked) at the freeze is still pending after restore, and delivered once unblocked',
    async () => {
      const p = b.startWorkload(PYTHON, [
        '-c',
        [
          'import signal, time',
          "signal.signal(signal.SIGUSR2, lambda *_: print('usr2 delivered', flush=True))",
          'def unblock(*_):',
          '    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})',
          'signal.signal(signal.SIGUSR1, unblock)',
          'signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})',
          "print('ready', flush=True)",
          'while True: time.sleep(0.05)',
        ].join('\n'),
      ]);
      await p.waitFor(/^ready/);
      process.kill(p.pid, 'SIGUSR2'); // blocked: it stays pending
      const pendingUsr2 = (pid: number) =>
        (BigInt(`0x${/^ShdPnd:\s+(\w+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]}`) & (1n << 11n)) !== 0n;
      await waitUntil('SIGUSR2 to be pending', () => pendingUsr2(p.pid), 5000);
      const dest = await b.restoringDest();
      const pid = await b.moveIt(p, dest);
      expect(pendingUsr2(pid)).toBe(true);
      expect(destStdout(dest)).not.toContain('usr2 delivered');
      process.kill(pid, 'SIGUSR1');
      await waitUntil('SIGUSR2 delivered after restore', () => destStdout(dest).includes('usr2 delivered'), 5000);
    },
  );

  it('threads blocked in nanosleep, a futex wait and a read from a pipe on stdin resume after restore', async () => {
    const stdin = path.join(b.c.tmpdir('forecopy-stdin-'), 'stdin.txt');
    fs.writeFileSync(stdin, 'world\n');
    // stdin is a pipe (a FIFO) whose writer, this test, stays at the source: the reader sits in
    // read() when the process is frozen.
    const fifo = path.join(path.dirname(stdin), 'fifo');
    execFileSync('mkfifo', [fifo]);
    const p = b.startWorkload('/bin/sh', ['-c', `exec ${path.join(WORKLOADS, 'waiters')} < ${fifo}`]);
    const writer = fs.openSync(fifo, 'w');
    b.c.defer(() => fs.closeSync(writer));
    fs.writeSync(writer, 'hello\n');
    const pid = Number((await p.waitFor(/^waiters pid (\d+)/))[1]);
    await p.waitFor(/^ready/);
    await new Promise((r) => setTimeout(r, 400)); // a check asks that every thread made progress
    const before = await askCheck(pid, () => p.lines, /^waiters check/);
    expect(before).toMatch(/^waiters check ok .*last=hello/);
    const dest = await b.restoringDest(['--stdin', stdin]);
    const run = await b.migrate(pid, dest);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const restored = run.report!.restoredPid as number;
    b.c.defer(() => killPid(restored));
    // The first check after the restore: every blocked thread came back and made progress; the
    // reader's read() started again on the new standard input and read what it holds.
    await new Promise((r) => setTimeout(r, 400));
    const first = await askCheck(restored, () => destStdout(dest), /^waiters check/);
    expect(first).toMatch(/^waiters check ok .*lines=2 eof=1 last=world$/);
    await new Promise((r) => setTimeout(r, 400));
    expect(await askCheck(restored, () => destStdout(dest), /^waiters check/)).toMatch(/^waiters check ok /);
  });
});
