import { describe, expect, it } from 'vitest';
import { pooledShare, type ThrottleLevel } from '../src/migration/auto-converge.js';

/** A process's run time `ns` (ns) read at `at` (ms). */
const mark = (at: number, ns: number) => ({ at, ns });

describe('pooledShare (the share auto-converge measured, RoundContext.ranShare)', () => {
  it('measures the throttle in force alone once it has lasted long enough', () => {
    // baseline 0.5 CPU; under 50% the process used 0.25 CPU for 400 ms: its share, 0.5, at 50%
    const levels: ThrottleLevel[] = [
      { from: mark(0, 0), percent: 20 },
      { from: mark(1000, 400e6), percent: 50 },
    ];
    expect(pooledShare(levels, mark(1400, 500e6), 0.5)).toEqual({ share: 0.5, atPercent: 50 });
  });

  it('pools throttles too short to tell, at their average weighed by time', () => {
    // Five throttles of 50 ms each (20..60%), the last 10 ms old: none alone is long enough. A
    // process that ran at full speed (0.5 CPU, its baseline) through all of them measures 1 over
    // the 210 ms back to the 20% one, at 100 - (80 + 70 + 60 + 50) * 50 / 210 - 40 * 10 / 210.
    const levels: ThrottleLevel[] = [20, 30, 40, 50, 60].map((percent, i) => ({
      from: mark(i * 50, i * 50 * 0.5e6),
      percent,
    }));
    const now = mark(210, 210 * 0.5e6);
    const m = pooledShare(levels, now, 0.5);
    expect(m?.share).toBeCloseTo(1, 9);
    expect(m?.atPercent).toBeCloseTo(100 - (260 * 50 + 40 * 10) / 210, 9);
    // The same time, the process slowed by each throttle's share: it measures the average share.
    let ns = 0;
    const slowed: ThrottleLevel[] = [20, 30, 40, 50, 60].map((percent, i) => {
      const l = { from: mark(i * 50, ns), percent };
      ns += 50 * 0.5e6 * (1 - percent / 100);
      return l;
    });
    const s = pooledShare(slowed, mark(210, ns - 40 * 0.5e6 * 0.4), 0.5);
    expect(s?.share).toBeCloseTo(1 - (s?.atPercent ?? 0) / 100, 9);
  });

  it('is undefined until enough time has passed since the first throttle, and never above 1 nor below 1%', () => {
    const levels: ThrottleLevel[] = [
      { from: mark(0, 0), percent: 20 },
      { from: mark(100, 50e6), percent: 30 },
    ];
    expect(pooledShare(levels, mark(150, 75e6), 0.5)).toBeUndefined();
    expect(pooledShare([], mark(150, 75e6), 0.5)).toBeUndefined();
    expect(pooledShare(levels, mark(300, 300e6), 0.5)?.share).toBe(1);
    expect(pooledShare(levels, mark(300, 50e6), 0.5)?.share).toBe(0.01);
  });

  it('asks two duty cycles of the highest throttle it pools', () => {
    // at 99% a duty cycle is 10 ms of running and 990 ms held: 2 s to tell
    const levels: ThrottleLevel[] = [
      { from: mark(0, 0), percent: 90 },
      { from: mark(1500, 75e6), percent: 99 },
    ];
    expect(pooledShare(levels, mark(1900, 80e6), 0.5)).toBeUndefined();
    expect(pooledShare(levels, mark(2000, 80e6), 0.5)?.atPercent).toBeCloseTo(100 - (10 * 1500 + 1 * 500) / 2000, 9);
  });
});
