import { describe, expect, it } from 'vitest';
import {
  FitMonitor,
  MarkovModel,
  MarkovPolicy,
  ModelBuilder,
  PageBitmap,
  PrecopyDriver,
  RegionMap,
  TpoPolicy,
  XEN_DEFAULT_STOP_RULES,
  createPolicy,
  writeState,
} from '../src/index.js';
import { plantedTrace } from './synthetic.js';

const base = { totalPages: 64 * 256, states: 256, dwell: 5, hotPerRegion: 40, noise: 3, seed: 11 };

function build(samples: PageBitmap[], totalPages: number) {
  const b = new ModelBuilder(totalPages, { states: 256 });
  for (const s of samples) b.observe(s);
  return b.build();
}

describe('regions and states', () => {
  it('takes the hottest region as the state and records the other hot spots', () => {
    const regions = new RegionMap(1024, 64); // 16 pages a region
    const s = new PageBitmap(1024);
    s.setRange(16 * 5, 16 * 5 + 10); // region 5: 10 pages
    s.setRange(16 * 9, 16 * 9 + 6); // region 9: 6 pages (>= half of 10)
    s.set(16 * 20); // region 20: 1 page (noise)
    const ws = writeState(regions.histogram(s))!;
    expect(ws.state).toBe(5);
    expect(ws.others).toEqual([9]);
    expect(writeState(regions.histogram(new PageBitmap(1024)))).toBeNull();
  });

  it('puts pages past the modelled size into the last region', () => {
    const regions = new RegionMap(1000, 10);
    expect(regions.regionOf(999)).toBe(9);
    expect(regions.regionOf(5000)).toBe(9);
    const s = new PageBitmap(1200);
    s.setRange(1100, 1200);
    expect(regions.histogram(s)[9]).toBe(100);
  });
});

describe('MarkovModel', () => {
  const { samples, planted } = plantedTrace({ ...base, cycle: [3, 77, 150], samples: 300 });
  const model = build(samples, planted.totalPages);

  it('finds the planted states and transitions', () => {
    expect(model.observedStates).toBe(3);
    expect(model.mostLikelyNext(3)).toBe(3); // dwell 5: staying is most likely
    // Leaving a state always goes to the next one of the cycle.
    expect(model.transitionProbability(3, 77)).toBeCloseTo(1 / 5, 1);
    expect(model.transitionProbability(77, 150)).toBeCloseTo(1 / 5, 1);
    expect(model.transitionProbability(150, 3)).toBeCloseTo(1 / 5, 1);
    expect(model.transitionProbability(3, 150)).toBe(0);
  });

  it('finds each state LWWS: exactly the planted hot pages', () => {
    for (const reg of planted.cycle) expect([...model.lwws(reg)]).toEqual(planted.hotPages.get(reg));
  });

  it('round-trips through bytes and rejects a damaged file', () => {
    const bytes = model.toBytes();
    const back = MarkovModel.fromBytes(bytes);
    expect(back.observedStates).toBe(3);
    expect([...back.lwws(77)]).toEqual([...model.lwws(77)]);
    expect(back.transitionProbability(77, 150)).toBe(model.transitionProbability(77, 150));
    expect(back.trainingLogLik).toEqual(model.trainingLogLik);
    const bad = bytes.slice();
    bad[0] ^= 0xff;
    expect(() => MarkovModel.fromBytes(bad)).toThrow(/bad magic/);
    expect(() => MarkovModel.fromBytes(bytes.slice(0, bytes.length - 3))).toThrow(/truncated|trailing/);
    const v2 = bytes.slice();
    v2[4] = 2;
    expect(() => MarkovModel.fromBytes(v2)).toThrow(/version 2/);
  });
});

describe('MarkovPolicy (the data filter)', () => {
  // Dwell 1: the hot spot moves every sample, so the forecast chain walks the cycle.
  const { samples, planted } = plantedTrace({ ...base, dwell: 1, cycle: [10, 20, 30, 40], samples: 200, noise: 0 });
  const model = build(samples, planted.totalPages);
  const hot = (r: number) => planted.hotPages.get(r)!;

  it('withholds exactly the LWWS of the forecast chain', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50 });
    p.observeSample(samples[0], 0); // current state: region 10
    const unsynced = PageBitmap.full(planted.totalPages);
    // 3000 pages at 20,000 pages/s = 150 ms = 3 steps: 20, 30, 40.
    const all = new PageBitmap(planted.totalPages);
    all.setRange(0, 3000);
    for (const r of [20, 30, 40]) for (const x of hot(r)) all.set(x);
    const held = p.holdBack(all, { round: 1, pageRate: 20000, nowMs: 0 });
    expect([...held]).toEqual([...hot(20), ...hot(30), ...hot(40)].sort((a, b) => a - b));
    // Less than one step of send time: nothing is held back (paper: while sendtime >= duration).
    expect(p.holdBack(unsynced, { round: 1, pageRate: 1e9, nowMs: 0 }).count()).toBe(0);
  });

  it('re-adds the held pages in the next round when they were not written', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50 });
    p.observeSample(samples[0], 0);
    const d = new PrecopyDriver(planted.totalPages, { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 1 }, p);
    const r1 = d.firstRound({ pageRate: 20000, nowMs: 0 });
    expect(r1.held.count()).toBeGreaterThan(0);
    const held = [...r1.held];
    for (const x of held) expect(r1.send.has(x)).toBe(false);
    const dec = d.endRound({ pagesSent: r1.send.count(), pagesSkipped: 0, dirtied: new PageBitmap(planted.totalPages), durationMs: 800, pageRate: 1e9 }, { pageRate: 1e9, nowMs: 800 });
    expect(dec.kind).toBe('round');
    if (dec.kind === 'round') {
      expect(dec.plan.held.count()).toBe(0);
      expect([...dec.plan.send]).toEqual(held);
    }
    expect(d.records[0].pagesFiltered).toBe(held.length);
  });

  it('falls back when the write pattern changes, and not before', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, rebuild: false });
    for (let i = 0; i < 200; i++) p.observeSample(samples[i % samples.length], i * 50);
    expect(p.enabled).toBe(true);
    expect(p.events).toHaveLength(0);
    const other = plantedTrace({ ...base, dwell: 1, cycle: [100, 200, 120, 220], samples: 40, noise: 0, seed: 5 }).samples;
    for (let i = 0; i < other.length && p.enabled; i++) p.observeSample(other[i], 10_000 + i * 50);
    expect(p.enabled).toBe(false);
    expect(p.events[0]).toMatchObject({ action: 'disabled' });
    expect(p.holdBack(PageBitmap.full(planted.totalPages), { round: 2, pageRate: 1000, nowMs: 0 }).count()).toBe(0);
    expect((p.status() as any).fallback[0].action).toBe('disabled');
  });

  it('rebuilds from the new pattern when asked to, and filters again', () => {
    const p = new MarkovPolicy(model, { intervalMs: 50, rebuild: true, rebuildSamples: 30 });
    const other = plantedTrace({ ...base, dwell: 1, cycle: [100, 200, 120, 220], samples: 80, noise: 0, seed: 5 });
    for (let i = 0; i < other.samples.length; i++) p.observeSample(other.samples[i], i * 50);
    expect(p.events.map((e) => e.action)).toEqual(['disabled', 'rebuilt']);
    expect(p.enabled).toBe(true);
    expect(p.currentModel.observedStates).toBe(4);
    expect([...p.currentModel.lwws(200)]).toEqual(other.planted.hotPages.get(200));
  });

  it('keeps the model small for 1 GiB at S = 256 and reports its costs', () => {
    const total = 262_144;
    const { samples: big } = plantedTrace({ totalPages: total, states: 256, dwell: 10, cycle: [1, 50, 99, 150, 200, 250, 17, 33], hotPerRegion: 600, noise: 200, samples: 200, seed: 3 });
    const b = new ModelBuilder(total, { states: 256 });
    const t0 = performance.now();
    for (const s of big) b.observe(s);
    const perSample = (performance.now() - t0) / big.length;
    const m = b.build();
    expect(m.byteSize()).toBeLessThanOrEqual(2.8e6);
    const p = new MarkovPolicy(m, { intervalMs: 50 });
    p.observeSample(big[0], 0);
    p.holdBack(PageBitmap.full(total), { round: 1, pageRate: 15_000, nowMs: 0 });
    console.log(`model 1 GiB S=256: ${m.byteSize()} bytes, builder ${b.byteSize()} bytes, observe ${perSample.toFixed(3)} ms/sample, holdBack ${(p.status() as any).forecastMsTotal.toFixed(3)} ms (2 cores, shared)`);
  });
});

describe('baseline policies', () => {
  it('tpo holds back a page written in 2 of the last 3 rounds, and releases it once it cools', () => {
    const t = new TpoPolicy(100);
    const rec = { round: 1, pagesPlanned: 0, pagesSent: 0, pagesFiltered: 0, pagesDirtied: 0, durationMs: 1 };
    t.observeRound(rec, PageBitmap.fromIndices(100, [5, 6]));
    expect([...t.holdBack(PageBitmap.full(100))]).toEqual([]);
    t.observeRound(rec, PageBitmap.fromIndices(100, [5]));
    expect([...t.holdBack(PageBitmap.full(100))]).toEqual([5]);
    t.observeRound(rec, new PageBitmap(100));
    t.observeRound(rec, new PageBitmap(100));
    expect([...t.holdBack(PageBitmap.full(100))]).toEqual([]);
  });

  it('xen-skip holds nothing back but asks the sender to skip redirtied pages', () => {
    const x = createPolicy('xen-skip');
    expect(x.skipRedirtied).toBe(true);
    expect(x.holdBack(PageBitmap.full(10), { round: 1, pageRate: 1, nowMs: 0 }).count()).toBe(0);
    expect(createPolicy('precopy').skipRedirtied).toBeFalsy();
    expect(() => createPolicy('markov')).toThrow(/needs a model/);
  });

  it('the fit monitor accepts the training pattern', () => {
    const { samples } = plantedTrace({ ...base, dwell: 3, cycle: [1, 2, 3], samples: 120 });
    const m = build(samples, base.totalPages);
    const f = new FitMonitor(m);
    let verdicts = 0;
    for (const s of samples) {
      const v = f.observe(m.stateOf(s)!);
      if (v) {
        verdicts++;
        expect(v.fits).toBe(true);
      }
    }
    expect(verdicts).toBeGreaterThan(50);
  });
});
