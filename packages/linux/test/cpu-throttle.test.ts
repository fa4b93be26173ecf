import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { PtraceDutyCycle } from '../src/index.js';

/** The ptrace duty cycle on a real process (a busy loop this test starts). */
const skip = process.getuid?.() !== 0 ? 'not root (ptrace of another process)' : null;
if (skip) console.warn(`cpu-throttle: skipped: ${skip}`);

const procs: ChildProcess[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});

/** A process that spins: R when it runs, t in a ptrace-stop. */
function spinner(): number {
  const child = spawn('/bin/sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
  procs.push(child);
  return child.pid!;
}

const stateOf = (pid: number) => /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1];
const tracerOf = (pid: number) => Number(/^TracerPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(skip)('PtraceDutyCycle', () => {
  it('hands a hold in force over to the freeze: the process stays stopped, and the cycle ends', async () => {
    const pid = spinner();
    const dc = new PtraceDutyCycle(pid);
    const before = performance.now();
    dc.set(50); // the stop phase begins now: held 10 ms, then 10 ms of running, and so on
    expect(stateOf(pid)).toBe('t');
    const hold = dc.handOver();
    expect(hold).not.toBeNull();
    expect(hold!.frozen.pid).toBe(pid);
    expect(hold!.sinceMs).toBeGreaterThanOrEqual(before);
    expect(hold!.sinceMs).toBeLessThanOrEqual(performance.now());
    await sleep(100); // five cycles: none runs
    expect(stateOf(pid)).toBe('t');
    // still traced by this agent: by one of its threads (vitest may run the test in a worker)
    expect(fs.existsSync(`/proc/${process.pid}/task/${tracerOf(pid)}`)).toBe(true);
    hold!.frozen.thaw();
    await sleep(20);
    expect(stateOf(pid)).toBe('R');
    expect(tracerOf(pid)).toBe(0);
    expect(dc.handOver()).toBeNull(); // ended: nothing more to hand over
  });

  it('hands nothing over once removed, and leaves the process running', async () => {
    const pid = spinner();
    const dc = new PtraceDutyCycle(pid);
    dc.set(50);
    dc.remove();
    expect(dc.handOver()).toBeNull();
    await sleep(50);
    expect(stateOf(pid)).toBe('R');
    expect(tracerOf(pid)).toBe(0);
  });

  it('hands nothing over when it holds nothing (at 0% there is no stop phase)', async () => {
    const pid = spinner();
    const dc = new PtraceDutyCycle(pid);
    dc.set(0); // no stop phase at all: the process only runs
    expect(dc.handOver()).toBeNull();
    await sleep(20);
    expect(stateOf(pid)).toBe('R');
    expect(tracerOf(pid)).toBe(0);
  });
});
