import { describe, expect, it } from 'vitest';
import { PageBitmap, QEMU_THROTTLE, ThrottleSchedule, createPolicy, simulate, thinWrites, type Trace } from '../src/index.js';
import { rng } from './synthetic.js';

describe("ThrottleSchedule: QEMU's auto-converge rule", () => {
  it('raises the throttle on every second round that wrote more than half of what it sent', () => {
    const s = new ThrottleSchedule(QEMU_THROTTLE);
    expect(s.afterRound(100, 60)).toBe(0); // first high round: not yet
    expect(s.afterRound(100, 60)).toBe(20); // second: initial
    expect(s.afterRound(100, 50)).toBe(20); // not more than half: no count
    expect(s.afterRound(100, 51)).toBe(20);
    expect(s.afterRound(100, 99)).toBe(30); // +increment
    for (let i = 0; i < 30; i++) s.afterRound(100, 100);
    expect(s.percent).toBe(99); // at most max
  });
});

describe('thinWrites: the writes of a throttled process', () => {
  const all = PageBitmap.full(20_000);

  it('keeps about (100 - percent)% of the pages, the same ones every time', () => {
    for (const p of [20, 50, 90, 99]) {
      const kept = thinWrites(all, p, 1234).count();
      expect(kept / 20_000).toBeCloseTo((100 - p) / 100, 1);
      expect(thinWrites(all, p, 1234).count()).toBe(kept);
    }
    expect(thinWrites(all, 0, 5)).toBe(all);
  });

  it('keeps other pages in another sample', () => {
    const a = thinWrites(all, 50, 50);
    const b = thinWrites(all, 50, 100);
    expect(a.clone().and(b).count()).toBeLessThan(a.count());
  });
});

describe('the simulator under auto-converge', () => {
  // 4,096 pages, each 50 ms sample writes 1,000 random pages: far faster than the link below.
  const N = 4096;
  const r = rng(7);
  const samples = Array.from({ length: 400 }, (_, i) => {
    const pages = new PageBitmap(N);
    for (let k = 0; k < 1000; k++) pages.set(Math.floor(r() * N));
    return { atMs: i * 50, pages };
  });
  const trace: Trace = { intervalMs: 50, pageSize: 4096, meta: {}, samples, totalPages: N };
  const rules = { maxRounds: 30, minRemainingPages: 50, maxFactor: Number.POSITIVE_INFINITY, downtimeLimitMs: 300 };
  const run = (autoConverge?: typeof QEMU_THROTTLE) =>
    simulate(trace, createPolicy('precopy'), { pageRate: 2000, stopRules: rules, startMs: 0, ...(autoConverge ? { autoConverge } : {}) });

  it('converges under the downtime limit where the same writer without it does not', () => {
    const off = run();
    const on = run(QEMU_THROTTLE);
    expect(off.throttles.every((t) => t === 0)).toBe(true);
    expect(off.stopReason).toBe('max-rounds');
    expect(off.downtimeMs).toBeGreaterThan(300);
    expect(on.stopReason).toBe('downtime-limit');
    expect(on.downtimeMs).toBeLessThanOrEqual(300);
    expect(Math.max(...on.throttles)).toBeGreaterThan(0);
    for (let i = 1; i < on.throttles.length; i++) expect(on.throttles[i]).toBeGreaterThanOrEqual(on.throttles[i - 1]);
    expect(run(QEMU_THROTTLE)).toEqual(on); // deterministic
  });
});
