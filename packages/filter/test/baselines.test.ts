import { describe, expect, it } from 'vitest';
import { PageBitmap, POLICY_NAMES, PrecopyDriver, TpoPolicy, XEN_DEFAULT_STOP_RULES, createPolicy, type PolicyName } from '../src/index.js';

const rec = { round: 1, pagesPlanned: 0, pagesSent: 0, pagesFiltered: 0, pagesDirtied: 0, durationMs: 1 };
const full = () => PageBitmap.full(100);

describe('TpoPolicy', () => {
  it('holds back a page written in 2 of the last 3 rounds, and releases it after one clean round', () => {
    const t = new TpoPolicy(100);
    expect([...t.holdBack(full())]).toEqual([]);
    t.observeRound(rec, PageBitmap.fromIndices(100, [5, 6, 7]));
    expect([...t.holdBack(full())]).toEqual([]); // once is chance
    t.observeRound(rec, PageBitmap.fromIndices(100, [5, 8]));
    expect([...t.holdBack(full())]).toEqual([5]); // 2 of 3
    t.observeRound(rec, PageBitmap.fromIndices(100, [6]));
    expect([...t.holdBack(full())]).toEqual([6]); // 6: rounds 1 and 3; 5 was clean in round 3: released
    expect([...t.holdBack(PageBitmap.fromIndices(100, [1, 2]))]).toEqual([]); // only unsynchronized pages
  });

  it('through the driver: a page written every round waits for stop-and-copy, and goes out once it stops', () => {
    const d = new PrecopyDriver(100, { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 1 }, createPolicy('tpo', { totalPages: 100 }));
    let plan = d.firstRound({ pageRate: 1000, nowMs: 0 });
    const sends: boolean[] = [];
    for (let round = 1; round <= 5; round++) {
      const dirtied = PageBitmap.fromIndices(100, round <= 3 ? [9, 50] : [50]); // 9 stops being written after round 3
      const dec = d.endRound(
        { pagesSent: plan.send.count(), pagesSkipped: 0, dirtied, durationMs: 10, pageRate: 1000 },
        { pageRate: 1000, nowMs: round * 10 },
      );
      if (dec.kind !== 'round') throw new Error('stopped early');
      plan = dec.plan;
      sends.push(plan.send.has(9));
      expect(plan.held.has(50)).toBe(round >= 2);
    }
    // Planned rounds 2..6: page 9 sent in round 2 (one write), held in 3 and 4, sent in 5 (clean in round 4).
    expect(sends).toEqual([true, false, false, true, false]);
  });

  it('takes k of h as options and rejects impossible ones', () => {
    const t = createPolicy('tpo', { totalPages: 10, tpo: { history: 4, minWrites: 3 } }) as TpoPolicy;
    expect(t.opts).toEqual({ history: 4, minWrites: 3 });
    expect(() => new TpoPolicy(10, { history: 2, minWrites: 3 })).toThrow(/minWrites/);
  });
});

describe('xen-skip and the policy factory', () => {
  it('xen-skip holds nothing back but asks the sender to skip redirtied pages', () => {
    const x = createPolicy('xen-skip');
    expect(x.name).toBe('xen-skip');
    expect(x.skipRedirtied).toBe(true);
    expect(x.holdBack(full(), { round: 1, pageRate: 1, nowMs: 0 }).count()).toBe(0);
    expect(createPolicy('precopy').skipRedirtied).toBeFalsy();
  });

  it('knows every policy by name and needs a model for markov', () => {
    expect([...POLICY_NAMES]).toEqual(['precopy', 'xen-skip', 'tpo', 'markov', 'forecast']);
    for (const n of POLICY_NAMES.filter((x) => x !== 'markov')) expect(createPolicy(n, { totalPages: 10 }).name).toBe(n);
    expect(() => createPolicy('markov')).toThrow(/needs a model/);
    expect(() => createPolicy('nope' as PolicyName)).toThrow(/unknown policy/);
  });
});
