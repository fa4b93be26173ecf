import { describe, expect, it } from 'vitest';
import {
  MarkovPolicy,
  ModelBuilder,
  PageBitmap,
  PrecopyDriver,
  XEN_DEFAULT_STOP_RULES,
  createPolicy,
  type MarkovPolicyStatus,
} from '../src/index.js';
import { plantedTrace } from './synthetic.js';

const base = { totalPages: 64 * 256, states: 256, hotPerRegion: 40, seed: 11 };

function build(samples: PageBitmap[], totalPages: number) {
  const b = new ModelBuilder(totalPages, { states: 256 });
  for (const s of samples) b.observe(s);
  return b.build();
}

// Dwell 1: the hot spot moves every sample, so the forecast chain walks the cycle 10 -> 20 -> 30 -> 40.
const { samples, planted } = plantedTrace({ ...base, dwell: 1, cycle: [10, 20, 30, 40], samples: 200, noise: 3 });
const model = build(samples, planted.totalPages);
const hot = (r: number) => planted.hotPages.get(r)!;
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);

describe('MarkovPolicy: the data filter', () => {
  it('withholds exactly the LWWS of the forecast chain for floor(sendtime / duration) steps', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50 });
    p.observeSample(samples[0], 0); // current state: region 10
    const unsynced = new PageBitmap(planted.totalPages);
    unsynced.setRange(3000, 6000); // regions 46..93: no hot pages
    for (const r of [10, 20, 30, 40]) for (const x of hot(r)) unsynced.set(x);
    const n = unsynced.count(); // 3000 + 4 x 40
    expect(n).toBe(3160);
    // sendtime = 3160 / 20,000 pages/s = 158 ms: 3 steps of 50 ms: 20, 30, 40.
    let held = p.holdBack(unsynced, { round: 1, pageRate: 20_000, nowMs: 0 });
    expect([...held]).toEqual(sorted([...hot(20), ...hot(30), ...hot(40)]));
    // 3160 pages at 31,600 pages/s: exactly 100 ms: 2 steps (the loop runs while sendtime >= duration).
    held = p.holdBack(unsynced, { round: 1, pageRate: 31_600, nowMs: 0 });
    expect([...held]).toEqual(sorted([...hot(20), ...hot(30)]));
    // Four steps and more come back to 10 and then repeat: the whole cycle.
    held = p.holdBack(unsynced, { round: 1, pageRate: 1000, nowMs: 0 });
    expect([...held]).toEqual(sorted([...hot(10), ...hot(20), ...hot(30), ...hot(40)]));
    // Less than one step of send time: nothing.
    expect(p.holdBack(unsynced, { round: 1, pageRate: 1e9, nowMs: 0 }).count()).toBe(0);
    // Only unsynchronized pages are held back.
    const few = PageBitmap.fromIndices(planted.totalPages, [hot(20)[0], hot(30)[0], 5]);
    expect([...p.holdBack(few, { round: 2, pageRate: 1, nowMs: 0 })]).toEqual([hot(20)[0], hot(30)[0]]);
  });

  it('uses initialPageRate while the link is unmeasured, and starts from the most frequent state before any sample', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, initialPageRate: 20_000 });
    expect(p.currentState()).toBe(model.mostFrequentState());
    const unsynced = PageBitmap.full(planted.totalPages); // 16,384 pages / 20,000 = 819 ms: the whole cycle
    expect(p.holdBack(unsynced, { round: 1, pageRate: 0, nowMs: 0 }).count()).toBe(160);
    const unknown = new MarkovPolicy(model, { intervalMs: 50 });
    expect(unknown.holdBack(unsynced, { round: 1, pageRate: 0, nowMs: 0 }).count()).toBe(0);
  });

  it('the driver sends the held pages in the next round when they were not written', () => {
    const p = createPolicy('markov', { model, intervalMs: 50, initialPageRate: 20_000 });
    p.observeSample!(samples[3], 150); // region 40: the chain is 10, 20, 30, 40
    const d = new PrecopyDriver(planted.totalPages, { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 1 }, p);
    const r1 = d.firstRound({ pageRate: 0, nowMs: 0 });
    const held = [...r1.held];
    expect(held).toEqual(sorted([10, 20, 30, 40].flatMap(hot)));
    for (const x of held) expect(r1.send.has(x)).toBe(false);
    // The forecast was wrong: nothing was written. Round 2 sends exactly the held pages (1.6 ms: no step).
    const dec = d.endRound(
      { pagesSent: r1.send.count(), pagesSkipped: 0, dirtied: new PageBitmap(planted.totalPages), durationMs: 800, pageRate: 20_000 },
      { pageRate: 20_000, nowMs: 800 },
    );
    expect(dec.kind).toBe('round');
    if (dec.kind === 'round') {
      expect(dec.plan.held.count()).toBe(0);
      expect([...dec.plan.send]).toEqual(held);
    }
    expect(d.records[0].pagesFiltered).toBe(held.length);
    const st = p.status!() as MarkovPolicyStatus;
    expect(st.perRoundForecastMs).toHaveLength(2);
    expect(st.perRoundHeldPages).toEqual([160, 0]);
    expect(st.model).toMatchObject({ states: 256, observedStates: 4, transitions: 4 });
    expect(st.fallback).toBeNull();
  });
});

describe('MarkovPolicy: maintenance', () => {
  // The same process, 200 samples further on (same seed, so the same hot pages; fresh noise).
  const later = plantedTrace({ ...base, dwell: 1, cycle: [10, 20, 30, 40], samples: 200, noise: 3, skip: 200 }).samples;
  const changed = plantedTrace({ ...base, dwell: 1, cycle: [100, 200, 120, 220], samples: 60, noise: 3, seed: 5 });

  it('raises no false alarm on 200 more samples of the same pattern', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50 });
    later.forEach((s, i) => {
      p.observeSample(s, i * 50);
    });
    const st = p.status();
    expect(st.fitWindowsTested).toBe(9);
    expect(st.fallback).toBeNull();
    expect(st.enabled).toBe(true);
  });

  it('disables the filter when the write pattern changes and no rebuild is allowed, and says when', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, rebuild: false });
    p.holdBack(PageBitmap.full(planted.totalPages), { round: 3, pageRate: 20_000, nowMs: 0 });
    later.slice(0, 30).forEach((s, i) => {
      p.observeSample(s, i * 50);
    });
    expect(p.enabled).toBe(true);
    changed.samples.forEach((s, i) => {
      p.observeSample(s, 1500 + i * 50);
    });
    expect(p.enabled).toBe(false);
    const st = p.status();
    // Windows are 20 transitions (21 states): the second one ends with the 11th changed sample.
    expect(st.fallback).toMatchObject({ action: 'disabled', round: 3, atMs: 1500 + 10 * 50 });
    expect(st.fallback!.statistic).toBeGreaterThan(st.fallback!.threshold);
    expect(st.fallback!.threshold).toBeCloseTo(3.09, 2);
    expect(p.holdBack(PageBitmap.full(planted.totalPages), { round: 4, pageRate: 1000, nowMs: 0 }).count()).toBe(0);
  });

  it('rebuilds from the recent samples, filters with the new pattern, and disables after a second change', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, rebuild: true, rebuildSamples: 20 });
    changed.samples.slice(0, 21).forEach((s, i) => {
      p.observeSample(s, i * 50);
    }); // one window: 21 states
    const st = p.status();
    expect(st.fallback).toMatchObject({ action: 'rebuilt', atMs: 20 * 50 });
    expect(p.enabled).toBe(true);
    const m = p.currentModel;
    expect(m.observedStates).toBe(4);
    expect([...m.lwws(200)]).toEqual(changed.planted.hotPages.get(200));
    // Filters with the new model: the current state is 100 (sample 20), the chain 200, 120, 220.
    const held = p.holdBack(PageBitmap.full(planted.totalPages), { round: 2, pageRate: 100_000, nowMs: 0 }); // 163 ms: 3 steps
    expect([...held]).toEqual(sorted([200, 120, 220].flatMap((r) => changed.planted.hotPages.get(r)!)));
    // It keeps fitting the new pattern...
    changed.samples.slice(21).forEach((s, i) => {
      p.observeSample(s, 1050 + i * 50);
    });
    expect(p.status().fallbacks).toHaveLength(1);
    // ...and a second change, with the one rebuild used, disables the filter.
    samples.slice(0, 40).forEach((s, i) => {
      p.observeSample(s, 5000 + i * 50);
    });
    expect(p.status().fallbacks.map((e) => e.action)).toEqual(['rebuilt', 'disabled']);
    expect(p.enabled).toBe(false);
  });

  it('disables instead when too few samples are at hand to rebuild', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, rebuild: true, rebuildSamples: 40 });
    changed.samples.slice(0, 21).forEach((s, i) => {
      p.observeSample(s, i * 50);
    });
    expect(p.status().fallback).toMatchObject({ action: 'disabled' });
  });

  it('measures holdBack on 1 GiB at S = 256', () => {
    const total = 262_144;
    const { samples: big } = plantedTrace({
      totalPages: total,
      states: 256,
      dwell: 1,
      cycle: [1, 50, 99, 150, 200, 250, 17, 33],
      hotPerRegion: 600,
      noise: 200,
      samples: 200,
      seed: 3,
    });
    const p = new MarkovPolicy(build(big, total), { intervalMs: 50 });
    p.observeSample(big[0], 0);
    for (let round = 1; round <= 5; round++) p.holdBack(PageBitmap.full(total), { round, pageRate: 15_000, nowMs: 0 });
    const st = p.status();
    expect(st.perRoundHeldPages[4]).toBe(8 * 600);
    console.log(`holdBack 1 GiB S=256, 8-state chain: ${st.perRoundForecastMs.join(', ')} ms per round`);
  });
});
