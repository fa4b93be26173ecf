import { describe, expect, it } from 'vitest';
import { PF_EXITING, hasExited, parseProcStat, readProcStat } from '../src/proc-stat.js';
import { cpuSeconds, runNanoseconds } from '../src/cpu-throttle.js';

// A /proc/PID/stat line (fields 1-9 and a few more) whose command name holds a space and a ')'.
const line = (state: string, flags: number) => `4242 (my prog) x) ${state} 1 4242 4242 0 -1 ${flags} 120 0 0 0 3 1 0 0 20 0 1 0\n`;

describe('parseProcStat', () => {
  it("reads the state and the flags after a command name with spaces and ')'", () => {
    const st = parseProcStat(line('S', 4194560));
    expect(st.state).toBe('S');
    expect(st.flags).toBe(4194560);
    expect(st.field(4)).toBe(1); // ppid
    expect(hasExited(st)).toBe(false);
  });

  it('counts a zombie, a dead process and one in exit (PF_EXITING) as exited', () => {
    expect(hasExited(parseProcStat(line('Z', 0)))).toBe(true);
    expect(hasExited(parseProcStat(line('X', 0)))).toBe(true);
    expect(hasExited(parseProcStat(line('R', 4194560 | PF_EXITING)))).toBe(true);
  });

  it('reads this process as running, not exited', () => {
    const st = readProcStat(process.pid);
    expect(['R', 'S']).toContain(st.state);
    expect(hasExited(st)).toBe(false);
  });
});

describe('runNanoseconds', () => {
  it("counts this process's threads' run time in ns, as stat's ticks count it", () => {
    const a = runNanoseconds(process.pid);
    const ticksBefore = cpuSeconds(process.pid);
    const until = performance.now() + 60;
    while (performance.now() < until) {
      // spin: 60 ms of CPU
    }
    const ran = (runNanoseconds(process.pid) - a) / 1e6;
    expect(ran).toBeGreaterThan(40); // ms; the spin ran on one thread
    expect(ran).toBeLessThan(60 * 4 + 50); // and Node's few other threads
    // stat's ticks (10 ms each) saw about as much.
    expect((cpuSeconds(process.pid) - ticksBefore) * 1000).toBeGreaterThan(ran / 2 - 20);
  });

  it('throws for a process that does not exist', () => {
    expect(() => runNanoseconds(2 ** 22 + 1)).toThrow();
  });
});
