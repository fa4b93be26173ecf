import { describe, expect, it } from 'vitest';
import {
  PageBitmap,
  QEMU_PERIOD_MS,
  QEMU_THROTTLE,
  ThrottleSchedule,
  createPolicy,
  simulate,
  thinWrites,
  type Trace,
} from '../src/index.js';
import { rng } from './synthetic.js';

describe("ThrottleSchedule: QEMU's auto-converge rule", () => {
  it('by default, raises the throttle on every second round that wrote more than half of what it sent', () => {
    const s = new ThrottleSchedule(QEMU_THROTTLE);
    let t = 0;
    const round = (sent: number, dirtied: number) => s.afterRound(sent, dirtied, (t += 100));
    expect(round(100, 60)).toBe(0); // first high round: not yet
    expect(round(100, 60)).toBe(20); // second: initial
    expect(round(100, 50)).toBe(20); // not more than half: no count
    expect(round(100, 51)).toBe(20);
    expect(round(100, 99)).toBe(30); // +increment
    for (let i = 0; i < 30; i++) round(100, 100);
    expect(s.percent).toBe(99); // at most max
  });

  it('counts the high weighings still needed to reach the highest throttle', () => {
    const s = new ThrottleSchedule(QEMU_THROTTLE);
    let t = 0;
    const high = () => s.afterRound(100, 100, (t += 100));
    // 0 -> 20, then 30 ... 90, 99: nine raises, two high weighings each.
    expect(s.weighingsToMax).toBe(18);
    high();
    expect(s.weighingsToMax).toBe(17); // one of the first raise's two is in
    s.afterRound(100, 10, (t += 100)); // a low weighing neither counts nor resets
    expect(s.weighingsToMax).toBe(17);
    let n = 1;
    while (s.weighingsToMax > 0) {
      high();
      n++;
    }
    expect(n).toBe(18);
    expect(s.percent).toBe(99);
  });

  it('knows the rounds to the highest throttle only when each round is weighed', () => {
    expect(new ThrottleSchedule(QEMU_THROTTLE).roundsToMax).toBe(18);
    // Over periods of 1 s a period may hold many rounds (until they are paced): unknown.
    const periods = new ThrottleSchedule({ ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS });
    expect(periods.weighingsToMax).toBe(18);
    expect(periods.roundsToMax).toBeUndefined();
  });

  it("weighs a period of 1 s or more, as QEMU's migration_bitmap_sync: short rounds do not raise it sooner", () => {
    const s = new ThrottleSchedule({ ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS }, 5_000);
    // Rounds of 50 ms, each writing more than it sends. It weighs first at the round that ends
    // more than 1 s after the start (6,050 ms), then more than 1 s after that (7,100 ms).
    for (let i = 1; i <= 41; i++) s.afterRound(10, 100, 5_000 + i * 50);
    expect(s.percent).toBe(0); // at 7,050 ms: one high period, forty-one high rounds
    s.afterRound(10, 100, 7_100);
    expect(s.percent).toBe(20);
    s.afterRound(10, 100, 8_100); // not more than 1 s after 7,100: the same period
    s.afterRound(10, 100, 8_150); // one high period
    expect(s.percent).toBe(20);
    s.afterRound(10, 100, 9_200); // two
    expect(s.percent).toBe(30);
  });

  it('adds up the rounds of a period: a long round that sent much and short ones that wrote a little', () => {
    const s = new ThrottleSchedule({ ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS }, 0);
    const period = (t0: number) => {
      s.afterRound(1_000, 100, t0 + 500); // alone: low
      for (let i = 1; i <= 6; i++) s.afterRound(0, 100, t0 + 500 + i * 100); // 1,100 ms: 700 written of 1,000 sent, high
    };
    period(0);
    period(1_100);
    expect(s.percent).toBe(20);
    // The same rounds each weighed on its own: the long one is low, each short one high.
    const perRound = new ThrottleSchedule(QEMU_THROTTLE, 0);
    perRound.afterRound(1_000, 100, 500);
    for (let i = 1; i <= 6; i++) perRound.afterRound(0, 100, 500 + i * 100);
    expect(perRound.percent).toBe(40); // six high rounds: three rises in 600 ms
  });
});

describe('ThrottleSchedule.paceMs: rounds long enough for a throttle weighed over periods', () => {
  const FEW = 5; // rounds the cap allows after this one: fewer than the throttle needs, a period each

  it('is 0 when each round is weighed, once the throttle is at its highest, and while the writes are slow', () => {
    expect(new ThrottleSchedule(QEMU_THROTTLE).paceMs(10, FEW)).toBe(0);
    const s = new ThrottleSchedule({ ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS }, 0);
    s.afterRound(1_000, 400, 400); // wrote less than half of what it sent
    expect(s.paceMs(450, FEW)).toBe(0);
    const top = new ThrottleSchedule({ initial: 99, increment: 10, max: 99, periodMs: QEMU_PERIOD_MS }, 0);
    top.afterRound(10, 100, 1_100);
    top.afterRound(10, 100, 2_200);
    expect(top.percent).toBe(99);
    expect(top.paceMs(2_250, FEW)).toBe(0);
  });

  it('while the throttle is rising and the round cap is near, lasts until the round can be weighed', () => {
    const s = new ThrottleSchedule({ ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS }, 0);
    s.afterRound(1_000, 600, 400); // more than half of what it sent, in the period begun at 0
    // From 0% to 99%: eighteen high periods, the one under way and seventeen more (17.55 s).
    // With 20 rounds after this one, a period each, and two to spare, there is time: no pace.
    expect(s.paceMs(450, 20)).toBe(0);
    expect(s.paceMs(450, 19)).toBe(551); // until 1,001 ms: more than a period
    s.afterRound(10, 600, 1_001); // weighed: high
    expect(s.paceMs(1_050, 18)).toBe(952); // the last period decides: until 2,002
    s.afterRound(10, 600, 2_002);
    expect(s.percent).toBe(20); // every second round, as when each round is weighed
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
    // What the throttle took from the process: each round's time at the throttle in force.
    expect(off.throttledMs).toBe(0);
    const roundsAt = on.rounds.filter((r) => !r.final).reduce((n, r, i) => n + (r.durationMs * on.throttles[i]) / 100, 0);
    expect(on.throttledMs).toBeGreaterThanOrEqual(roundsAt); // and the waits for a sample between them
    expect(on.throttledMs).toBeLessThanOrEqual((on.totalMs * QEMU_THROTTLE.max) / 100);
    expect(on.throttledMs).toBeGreaterThan(0);
  });

  it('tells the policy planning a round the throttle that round runs at', () => {
    // QEMU raises the throttle at the sync that ends an iteration, before the next is sent: a
    // policy told the throttle of the round before plans a throttled process's writes ten times
    // too many at 90% -> 99%.
    const inner = createPolicy('precopy');
    const seen = new Map<number, number | undefined>();
    const spy = {
      ...inner,
      name: inner.name,
      holdBack: (unsynced: PageBitmap, ctx: Parameters<typeof inner.holdBack>[1]) => {
        seen.set(ctx.round, ctx.throttlePercent);
        return inner.holdBack(unsynced, ctx);
      },
    };
    const r = simulate(trace, spy, { pageRate: 2000, stopRules: rules, startMs: 0, autoConverge: QEMU_THROTTLE });
    const planned = r.rounds.filter((x) => !x.final).slice(1); // round 1 is planned before any throttle
    expect(new Set(r.throttles).size).toBeGreaterThan(3); // it rose several times
    for (const x of planned) expect(seen.get(x.round)).toBe(r.throttles[x.round - 1]);
  });

  it("weighed over QEMU's periods, paces the rounds so that the throttle rises before the round cap", () => {
    // The writer writes 20,000 pages a second, the link carries 4,000: a round lasts a second at
    // most. Weighed over periods of 1 s, the throttle rises at most every second round; near the
    // round cap the rounds are paced to a period so that it still can, and the rest fits.
    const fast = (policy: string) =>
      simulate(trace, createPolicy(policy as 'precopy'), {
        pageRate: 4000,
        stopRules: { ...rules, downtimeLimitMs: 30 },
        startMs: 0,
        autoConverge: { ...QEMU_THROTTLE, periodMs: QEMU_PERIOD_MS },
      });
    for (const policy of ['precopy', 'xen-skip']) {
      const r = fast(policy);
      expect(r.stopReason).toBe('downtime-limit');
      expect(r.downtimeMs).toBeLessThanOrEqual(30);
      // Paced rounds: a period or more, sending less than half of what the link carried meanwhile.
      const paced = r.rounds.filter((x) => !x.final && x.durationMs > QEMU_PERIOD_MS && x.pagesSent < (4000 * x.durationMs) / 1000 / 2);
      expect(paced.length).toBeGreaterThan(0);
      // Each throttle step took at least two periods of 1 s.
      const steps = new Set(r.throttles).size - 1;
      expect(r.totalMs).toBeGreaterThanOrEqual(steps * 2 * QEMU_PERIOD_MS);
    }
  });
});
