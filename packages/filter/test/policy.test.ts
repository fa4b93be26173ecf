import { describe, expect, it } from 'vitest';
import { PageBitmap, PrecopyDriver, PrecopyPolicy, XEN_DEFAULT_STOP_RULES, type Policy } from '../src/index.js';

const ctx = { pageRate: 1000, nowMs: 0 };

function outcome(dirtied: PageBitmap, pagesSent: number) {
  return { pagesSent, pagesSkipped: 0, dirtied, durationMs: 10, pageRate: 1000 };
}

describe('PrecopyDriver', () => {
  it('sends every page in round 1, then what was dirtied', () => {
    const d = new PrecopyDriver(100, XEN_DEFAULT_STOP_RULES, new PrecopyPolicy());
    const r1 = d.firstRound(ctx);
    expect(r1.round).toBe(1);
    expect(r1.send.count()).toBe(100);
    const dirty = PageBitmap.fromIndices(100, [1, 2, 3, ...Array.from({ length: 60 }, (_, i) => 30 + i)]);
    const dec = d.endRound(outcome(dirty, 100), ctx);
    expect(dec.kind).toBe('round');
    if (dec.kind !== 'round') return;
    expect(dec.plan.round).toBe(2);
    expect(dec.plan.send.equals(dirty)).toBe(true);
  });

  it('stops when fewer than minRemainingPages remain, handing back what remains', () => {
    const d = new PrecopyDriver(100, XEN_DEFAULT_STOP_RULES, new PrecopyPolicy());
    d.firstRound(ctx);
    const dirty = PageBitmap.fromIndices(100, [5, 6]);
    const dec = d.endRound(outcome(dirty, 100), ctx);
    expect(dec).toMatchObject({ kind: 'stop', reason: 'min-remaining' });
    if (dec.kind === 'stop') expect([...dec.remaining]).toEqual([5, 6]);
  });

  it('stops at maxRounds and at maxFactor', () => {
    const full = () => PageBitmap.full(100);
    const a = new PrecopyDriver(100, { ...XEN_DEFAULT_STOP_RULES, maxRounds: 2 }, new PrecopyPolicy());
    a.firstRound(ctx);
    expect(a.endRound(outcome(full(), 100), ctx).kind).toBe('round');
    expect(a.endRound(outcome(full(), 100), ctx)).toMatchObject({ kind: 'stop', reason: 'max-rounds' });

    const b = new PrecopyDriver(100, { ...XEN_DEFAULT_STOP_RULES, maxFactor: 2 }, new PrecopyPolicy());
    b.firstRound(ctx);
    expect(b.endRound(outcome(full(), 100), ctx).kind).toBe('round');
    expect(b.endRound(outcome(full(), 100), ctx)).toMatchObject({ kind: 'stop', reason: 'max-factor' });
  });

  it('drops the pages whose mapping vanished, held ones too, and counts 3x of the memory mapped', () => {
    // A policy holding pages 0..59; the mapping of 40..99 vanishes during round 2.
    const first60 = PageBitmap.fromIndices(
      100,
      Array.from({ length: 60 }, (_, i) => i),
    );
    const memory: Array<number | undefined> = [];
    const hold: Policy = {
      name: 'hold',
      holdBack: (u, c) => {
        memory.push(c.memoryPages);
        return u.clone().and(first60);
      },
    };
    const d = new PrecopyDriver(100, { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 1, maxFactor: 3 }, hold);
    expect(d.firstRound(ctx).send.count()).toBe(40);
    const dec = d.endRound(outcome(PageBitmap.full(100), 40), ctx);
    expect(dec.kind).toBe('round');
    const gone = new PageBitmap(100);
    gone.setRange(0, 40);
    const after = d.endRound({ ...outcome(PageBitmap.fromIndices(100, [1, 2]), 40), live: gone }, ctx);
    // Unsynchronized: held 0..59 and dirtied 1, 2, of which only 0..39 are still mapped.
    expect(after.kind).toBe('round');
    if (after.kind === 'round') expect(after.plan.send.count() + after.plan.held.count()).toBe(40);
    // 80 pages sent; 3x of the 40 mapped is 120: two more rounds of 20 reach it.
    expect(d.endRound({ ...outcome(new PageBitmap(100).or(gone), 20), live: gone }, ctx).kind).toBe('round');
    expect(d.endRound({ ...outcome(new PageBitmap(100).or(gone), 20), live: gone }, ctx)).toMatchObject({
      kind: 'stop',
      reason: 'max-factor',
    });
    expect(memory).toEqual([100, 100, 40, 40]); // the policy is told the pages mapped, as the driver counts them
  });

  it('applies the downtime limit at the measured rate (QEMU rule)', () => {
    const d = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 }, new PrecopyPolicy());
    d.firstRound(ctx);
    const dirty = new PageBitmap(10_000);
    dirty.setRange(0, 400); // 400 pages at 1000 pages/s = 400 ms > 300 ms
    expect(d.endRound(outcome(dirty, 10_000), ctx).kind).toBe('round');
    const fewer = new PageBitmap(10_000);
    fewer.setRange(0, 250); // 250 ms <= 300 ms
    expect(d.endRound(outcome(fewer, 400), ctx)).toMatchObject({ kind: 'stop', reason: 'downtime-limit' });
  });

  it('after round 1 stops by the downtime limit only if the rest fits at half its rate, which is not that of written pages', () => {
    const d = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 }, new PrecopyPolicy());
    d.firstRound(ctx);
    const some = new PageBitmap(10_000);
    some.setRange(0, 200); // 200 ms at round 1's rate: would fit, but not at half of it (400 ms)
    expect(d.endRound(outcome(some, 10_000), ctx).kind).toBe('round');
    expect(d.endRound(outcome(some, 200), ctx)).toMatchObject({ kind: 'stop', reason: 'downtime-limit' });

    const small = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 }, new PrecopyPolicy());
    small.firstRound(ctx);
    const few = new PageBitmap(10_000);
    few.setRange(0, 100); // 200 ms at half round 1's rate
    expect(small.endRound(outcome(few, 10_000), ctx)).toMatchObject({ kind: 'stop', reason: 'downtime-limit' });
  });

  it('asks the policy, when the rest first fits the downtime limit, whether to run one more round, and only then', () => {
    const asked: number[] = [];
    const policy: Policy = {
      name: 'extends-once',
      holdBack: (u) => new PageBitmap(u.size),
      extendPastFit: (_u, c) => {
        asked.push(c.round);
        return asked.length === 1;
      },
    };
    const d = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 }, policy);
    d.firstRound(ctx);
    const dirty = new PageBitmap(10_000);
    dirty.setRange(0, 400); // 400 ms: does not fit, the policy is not asked
    expect(d.endRound(outcome(dirty, 10_000), ctx).kind).toBe('round');
    expect(asked).toEqual([]);
    const fewer = new PageBitmap(10_000);
    fewer.setRange(0, 250); // fits: asked about round 3, which it wants
    const next = d.endRound(outcome(fewer, 400), ctx);
    expect(next).toMatchObject({ kind: 'round', plan: { round: 3 } });
    expect(next.kind === 'round' && next.plan.send.count()).toBe(250);
    const few = new PageBitmap(10_000);
    few.setRange(0, 60); // fits again: asked about round 4, which it does not want
    expect(d.endRound(outcome(few, 250), ctx)).toMatchObject({ kind: 'stop', reason: 'downtime-limit' });
    expect(asked).toEqual([3, 4]);
    // Another stop rule is not the policy's to overrule.
    const capped = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, maxRounds: 1, downtimeLimitMs: 300 }, policy);
    capped.firstRound(ctx);
    expect(capped.endRound(outcome(few, 10_000), ctx)).toMatchObject({ kind: 'stop', reason: 'max-rounds' });
    expect(asked).toEqual([3, 4]);
  });

  it('counts the fixed costs of the downtime (freeze, verification, handover) against the limit', () => {
    const d = new PrecopyDriver(10_000, { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 }, new PrecopyPolicy());
    d.firstRound(ctx);
    const dirty = new PageBitmap(10_000);
    dirty.setRange(0, 250); // 250 ms to send: within 300 ms alone, not with 80 ms of fixed costs
    expect(d.endRound({ ...outcome(dirty, 10_000), fixedDowntimeMs: 80 }, ctx).kind).toBe('round');
    expect(d.endRound({ ...outcome(dirty, 250), fixedDowntimeMs: 80 }, ctx).kind).toBe('round');
    const fewer = new PageBitmap(10_000);
    fewer.setRange(0, 200); // 200 + 80 = 280 ms
    expect(d.endRound({ ...outcome(fewer, 250), fixedDowntimeMs: 80 }, ctx)).toMatchObject({ kind: 'stop', reason: 'downtime-limit' });
  });

  it('sends held pages in a later round and counts them as filtered', () => {
    let call = 0;
    const holdFirst: Policy = {
      name: 'hold-first',
      holdBack(u) {
        call++;
        return call === 1 ? PageBitmap.fromIndices(u.size, [7, 8, 9]) : new PageBitmap(u.size);
      },
    };
    const d = new PrecopyDriver(100, { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 1 }, holdFirst);
    const r1 = d.firstRound(ctx);
    expect(r1.send.count()).toBe(97);
    expect(r1.send.has(7)).toBe(false);
    const dec = d.endRound(outcome(PageBitmap.fromIndices(100, [50]), 97), ctx);
    expect(d.records[0].pagesFiltered).toBe(3);
    expect(dec.kind).toBe('round');
    if (dec.kind === 'round') expect([...dec.plan.send]).toEqual([7, 8, 9, 50]);
  });
});

describe('PageBitmap', () => {
  it('sets each page of a list and counts those already set', () => {
    const b = PageBitmap.fromIndices(64, [1, 2, 40]);
    expect(b.setEach([2, 3, 40, 41, 3])).toBe(3); // 2 and 40 were set; 3 the second time
    expect([...b]).toEqual([1, 2, 3, 40, 41]);
  });

  it('keeps bits past size clear and counts ranges', () => {
    const b = PageBitmap.full(37);
    expect(b.count()).toBe(37);
    expect(b.countRange(30, 40)).toBe(7);
    const c = b.resized(70);
    expect(c.count()).toBe(37);
    c.setRange(60, 70);
    expect(c.count()).toBe(47);
    expect(c.runs()).toEqual([
      [0, 37],
      [60, 70],
    ]);
    expect(c.runs(20)).toEqual([
      [0, 20],
      [20, 37],
      [60, 70],
    ]);
  });

  it('sets and clears a range as setting and clearing page by page do, across word edges', () => {
    for (const [a, b] of [
      [0, 0],
      [3, 5],
      [30, 34],
      [31, 97],
      [0, 130],
      [64, 96],
      [32, 64],
      [0, 32],
      [97, 130],
    ]) {
      const fast = PageBitmap.full(130);
      const slow = PageBitmap.full(130);
      fast.clearRange(a, b);
      for (let p = a; p < b; p++) slow.clear(p);
      expect(fast.runs(), `[${a}, ${b})`).toEqual(slow.runs());
      expect(fast.count()).toBe(130 - (b - a));
      const set = new PageBitmap(130);
      set.setRange(a, b);
      expect(set.runs(), `set [${a}, ${b})`).toEqual(a < b ? [[a, b]] : []);
      expect(set.count()).toBe(b - a);
    }
    expect(() => PageBitmap.full(10).clearRange(5, 11)).toThrow(RangeError);
    expect(() => new PageBitmap(10).setRange(-1, 3)).toThrow(RangeError);
  });

  it('does set algebra word by word', () => {
    const a = PageBitmap.fromIndices(100, [1, 33, 64, 99]);
    const b = PageBitmap.fromIndices(100, [33, 99, 5]);
    expect(a.intersectCount(b)).toBe(2);
    expect([...a.clone().andNot(b)]).toEqual([1, 64]);
    expect([...a.clone().or(b)]).toEqual([1, 5, 33, 64, 99]);
    expect([...a.clone().and(b)]).toEqual([33, 99]);
    expect(() => a.set(100)).toThrow(RangeError);
  });
});
