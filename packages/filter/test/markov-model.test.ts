import { describe, expect, it } from 'vitest';
import { MarkovModel, ModelBuilder, PageBitmap, RegionMap, SlidingModelBuilder } from '../src/index.js';
import { plantedTrace, rng } from './synthetic.js';

const base = { totalPages: 64 * 256, states: 256, hotPerRegion: 40, noise: 3, seed: 11 };

function build(samples: PageBitmap[], totalPages: number, lwwsThreshold?: number) {
  const b = new ModelBuilder(totalPages, { states: 256, ...(lwwsThreshold ? { lwwsThreshold } : {}) });
  for (const s of samples) b.observe(s);
  return b.build();
}

describe('ModelBuilder on a planted trace', () => {
  it('finds exactly the planted states, and staying as the most likely transition of a dwelling hot spot', () => {
    const { samples, planted } = plantedTrace({ ...base, dwell: 5, cycle: [3, 77, 150], samples: 300 });
    const m = build(samples, planted.totalPages);
    expect(m.observedStates).toBe(3);
    expect([...m.stateDistribution()].flatMap((p, s) => (p > 0 ? [s] : []))).toEqual([3, 77, 150]);
    for (const s of [3, 77, 150]) expect(m.mostLikelyNext(s)).toBe(s);
    // Leaving a state always goes to the next one of the cycle, 1 time in 5.
    expect(m.transitionProbability(3, 77)).toBeCloseTo(1 / 5, 1);
    expect(m.transitionProbability(77, 150)).toBeCloseTo(1 / 5, 1);
    expect(m.transitionProbability(150, 3)).toBeCloseTo(1 / 5, 1);
    expect(m.transitionProbability(3, 150)).toBe(0);
    expect(m.transitionCount).toBe(6);
  });

  it('finds the planted cycle as the most likely transitions when the hot spot moves every sample', () => {
    const { samples, planted } = plantedTrace({ ...base, dwell: 1, cycle: [10, 90, 200], samples: 120 });
    const m = build(samples, planted.totalPages);
    expect(m.mostLikelyNext(10)).toBe(90);
    expect(m.mostLikelyNext(90)).toBe(200);
    expect(m.mostLikelyNext(200)).toBe(10);
    expect(m.forecast(10, 4)).toEqual([90, 200, 10, 90]);
    expect(m.transitionProbability(90, 200)).toBe(1);
  });

  it("finds each state's LWWS: exactly the planted hot pages, none of the noise", () => {
    const { samples, planted } = plantedTrace({ ...base, dwell: 5, cycle: [3, 77, 150], samples: 300, noise: 30 });
    const m = build(samples, planted.totalPages);
    for (const reg of planted.cycle) {
      expect([...m.lwws(reg)]).toEqual(planted.hotPages.get(reg));
      expect(m.lwwsSize(reg)).toBe(40);
      expect([...m.lwwsBitmap(reg)]).toEqual(planted.hotPages.get(reg));
    }
    expect(m.lwws(5).length).toBe(0); // never seen
  });

  it('records the other hot regions with the state, and their frequent pages in its LWWS', () => {
    const regions = new RegionMap(256 * 64, 256); // 64 pages a region
    const b = new ModelBuilder(regions.totalPages, { states: 256, lwwsThreshold: 0.5 });
    for (let i = 0; i < 20; i++) {
      const s = new PageBitmap(regions.totalPages);
      s.setRange(64 * 8, 64 * 8 + 40); // state 8: 40 pages
      s.setRange(64 * 30, 64 * 30 + 25); // region 30, hot with it every time: 25 pages
      if (i % 4 === 0) s.set(64 * 30 + 50); // written in a quarter of the samples: below 0.5
      if (i === 3) s.setRange(64 * 100, 64 * 100 + 30); // hot once: not recorded
      b.observe(s);
    }
    const m = b.build();
    expect(m.hotRegionsOf(8)).toEqual([30]);
    const want = [...Array(40).keys()].map((i) => 64 * 8 + i).concat([...Array(25).keys()].map((i) => 64 * 30 + i));
    expect([...m.lwws(8)]).toEqual(want);
  });

  it('skips samples without writes: no state, and no break in the chain', () => {
    const b = new ModelBuilder(64 * 256);
    const at = (r: number) => PageBitmap.fromIndices(64 * 256, [r * 64, r * 64 + 1]);
    expect(b.observe(at(4))).toBe(4);
    expect(b.observe(new PageBitmap(64 * 256))).toBeNull();
    expect(b.observe(at(9))).toBe(9);
    const m = b.build();
    expect(b.emptySamples).toBe(1);
    expect(m.samples).toBe(2);
    expect(m.transitionProbability(4, 9)).toBe(1);
  });

  it('breaks ties towards the lower state, and keeps a state without successors where it is', () => {
    const b = new ModelBuilder(64 * 256);
    const at = (r: number) => PageBitmap.fromIndices(64 * 256, [r * 64]);
    for (const r of [50, 7, 50, 3, 50, 7, 50, 3, 60]) b.observe(at(r)); // 50 -> 7 twice, 50 -> 3 twice
    const m = b.build();
    expect(m.mostLikelyNext(50)).toBe(3);
    expect(m.mostLikelyNext(60)).toBe(60); // only ever seen last
    expect(m.forecast(60, 3)).toEqual([60, 60, 60]);
    expect(m.mostLikelyNext(200)).toBe(200); // never seen
    expect(m.mostFrequentState()).toBe(50);
  });

  it('rejects S outside 64..1024 and a threshold outside (0, 1]', () => {
    expect(() => new ModelBuilder(1000, { states: 32 })).toThrow(/64 to 1024/);
    expect(() => new ModelBuilder(1000, { states: 2048 })).toThrow(/64 to 1024/);
    expect(() => new ModelBuilder(1000, { lwwsThreshold: 0 })).toThrow(/lwwsThreshold/);
  });
});

describe('MarkovModel bytes', () => {
  const { samples, planted } = plantedTrace({ ...base, dwell: 3, cycle: [3, 77, 150, 255], samples: 200 });
  const model = build(samples, planted.totalPages);

  it('round-trips', () => {
    const back = MarkovModel.fromBytes(model.toBytes());
    expect(back.states).toBe(256);
    expect(back.totalPages).toBe(planted.totalPages);
    expect(back.lwwsThreshold).toBe(model.lwwsThreshold);
    expect([...back.stateCounts]).toEqual([...model.stateCounts]);
    for (const s of planted.cycle) {
      expect([...back.lwws(s)]).toEqual([...model.lwws(s)]);
      expect(back.hotRegionsOf(s)).toEqual(model.hotRegionsOf(s));
      for (const t of planted.cycle) expect(back.transitionProbability(s, t)).toBe(model.transitionProbability(s, t));
    }
    expect(back.toBytes()).toEqual(model.toBytes());
  });

  it('rejects a damaged buffer, another version and a foreign file with a clear error', () => {
    const bytes = model.toBytes();
    const flip = (i: number) => {
      const b = bytes.slice();
      b[i] ^= 0x10;
      return b;
    };
    expect(() => MarkovModel.fromBytes(flip(0))).toThrow(/bad magic/);
    expect(() => MarkovModel.fromBytes(flip(200))).toThrow(/corrupt \(checksum/);
    expect(() => MarkovModel.fromBytes(flip(bytes.length - 1))).toThrow(/corrupt/);
    expect(() => MarkovModel.fromBytes(bytes.slice(0, bytes.length - 8))).toThrow(/corrupt|truncated/);
    expect(() => MarkovModel.fromBytes(bytes.slice(0, 6))).toThrow(/truncated/);
    const v1 = bytes.slice();
    v1[4] = 1;
    expect(() => MarkovModel.fromBytes(v1)).toThrow(/version 1 is not supported/);
    expect(() => MarkovModel.fromBytes(new TextEncoder().encode('{"not":"a model"}   '))).toThrow(/bad magic/);
  });
});

describe('model size for 1 GiB (262,144 pages) at S = 256', () => {
  const total = 262_144;

  it('stays within 2.8 MB on a planted trace of 200 samples', () => {
    const { samples } = plantedTrace({
      totalPages: total,
      states: 256,
      dwell: 10,
      cycle: [1, 50, 99, 150, 200, 250, 17, 33],
      hotPerRegion: 600,
      noise: 200,
      samples: 200,
      seed: 3,
    });
    const b = new ModelBuilder(total, { states: 256 });
    const t0 = performance.now();
    for (const s of samples) b.observe(s);
    const perSample = (performance.now() - t0) / samples.length;
    const m = b.build();
    expect(m.observedStates).toBe(8);
    expect(m.byteSize()).toBeLessThanOrEqual(2.8e6);
    expect(m.toBytes().byteLength).toBeLessThanOrEqual(2.8e6);
    console.log(
      `planted 1 GiB S=256: model ${m.byteSize()} B (file ${m.toBytes().byteLength} B), builder ${b.byteSize()} B, observe ${perSample.toFixed(3)} ms/sample`,
    );
  });

  it('stays bounded when writes are spread thin over all of memory (every state, many hot regions)', () => {
    const r = rng(99);
    const b = new ModelBuilder(total, { states: 256 });
    const trace = Array.from({ length: 200 }, () => {
      const s = new PageBitmap(total);
      for (let k = 0; k < 20_000; k++) s.set(Math.floor(r() * total));
      return s;
    });
    const t0 = performance.now();
    for (const s of trace) b.observe(s);
    const perSample = (performance.now() - t0) / 200;
    const m = b.build();
    expect(m.observedStates).toBeGreaterThan(100);
    // Per state: 1 KiB of region counts; page counts within the budget (16 bytes a page) plus
    // each state's own region; the transitions.
    const counters = 16 * total + 256 * 2048;
    expect(b.byteSize()).toBeLessThanOrEqual(256 * (64 + 1024) + counters + 256 * 64 * 64 + 256 * (64 + 256 * 32) + 2048);
    expect(m.byteSize()).toBeLessThanOrEqual(2.8e6);
    console.log(
      `uniform 1 GiB S=256 (20,000 pages a sample): model ${m.byteSize()} B, builder ${b.byteSize()} B, observe ${perSample.toFixed(3)} ms/sample`,
    );
  });
});

describe('hot regions without a cap (the paper sets none)', () => {
  /** 10 writers, each sweeping its own region: every sample has ten hot regions of equal weight. */
  function tenWriters(samples: number): PageBitmap[] {
    const total = 64 * 256; // S = 256: 64 pages a region
    const out: PageBitmap[] = [];
    for (let i = 0; i < samples; i++) {
      const b = new PageBitmap(total);
      for (let w = 0; w < 10; w++) for (let k = 0; k < 16; k++) b.set((20 + w * 20) * 64 + ((i * 16 + k) % 64));
      out.push(b);
    }
    return out;
  }

  it('records all ten regions of a sweep with the state, and puts their pages in its LWWS', () => {
    const m = build(tenWriters(200), 64 * 256);
    expect(m.observedStates).toBe(1);
    const s = m.mostFrequentState();
    expect(s).toBe(20);
    expect(m.hotRegionsOf(s)).toHaveLength(9);
    // Each page is written in a quarter of the samples (16 of 64 a sample): all 640 pages join.
    expect(m.lwwsSize(s)).toBe(640);
    expect(m.trimmedRegions).toBe(0);
    const back = MarkovModel.fromBytes(m.toBytes());
    expect(back.lwwsSize(s)).toBe(640);
    expect(back.hotRegionsOf(s)).toEqual(m.hotRegionsOf(s));
  });

  it('keeps the LWWS within its budget, the hottest regions first, and says how many it left out', () => {
    const b = new ModelBuilder(64 * 256, { states: 256, lwwsBytesPerPage: 40 / (64 * 256) }); // room for 5 regions of 8 bytes
    for (const x of tenWriters(200)) b.observe(x);
    const m = b.build();
    expect(m.profiles.get(20)!.lwwsRegions).toHaveLength(5);
    expect(m.trimmedRegions).toBe(5);
    expect(m.lwwsSize(20)).toBe(5 * 64);
  });

  it("keeps the builder's page counters within their budget (plus each state's own region)", () => {
    const b = new ModelBuilder(64 * 256, { states: 256, countBytesPerPage: (3 * 128) / (64 * 256) }); // 3 regions of 128 bytes
    for (const x of tenWriters(50)) b.observe(x);
    expect(b.byteSize()).toBeLessThanOrEqual(4 + 256 * 8 + 64 + 1024 + 3 * (64 + 128) + 200);
    expect(b.build().profiles.get(20)!.lwwsRegions.length).toBeLessThanOrEqual(3);
  });
});

describe('SlidingModelBuilder (model --watch)', () => {
  const total = 64 * 256;
  const phase = (cycle: number[], samples: number, skip = 0) => plantedTrace({ ...base, dwell: 5, cycle, samples, skip, seed: 5 }).samples;

  it('builds the same model as one builder while the window holds all the samples', () => {
    const xs = phase([3, 77, 150], 150);
    const one = new ModelBuilder(total, { states: 256 });
    const sliding = new SlidingModelBuilder(total, { states: 256 }, 100);
    for (const x of xs) {
      one.observe(x);
      sliding.observe(x);
    }
    expect(sliding.windowSamples).toBe(150);
    expect(Buffer.from(sliding.build().toBytes()).equals(Buffer.from(one.build().toBytes()))).toBe(true);
  });

  it('forgets what is older than the window: after a phase change only the new states remain', () => {
    const sliding = new SlidingModelBuilder(total, { states: 256 }, 50);
    const xs = [...phase([3, 77, 150], 200), ...phase([10, 90], 120)];
    xs.forEach((x, i) => {
      sliding.observe(x);
      // Every model along the way is whole: no transition from a state that left the window.
      if (i % 3 === 0) expect(() => MarkovModel.fromBytes(sliding.build().toBytes())).not.toThrow();
    });
    const m = sliding.build();
    expect(sliding.windowSamples).toBeLessThanOrEqual(100);
    expect([...m.stateDistribution()].flatMap((p, s) => (p > 0 ? [s] : []))).toEqual([10, 90]);
    expect(m.transitionProbability(10, 90)).toBeGreaterThan(0);
    // No transition from a state that left the window: the model reads back.
    expect(m.transitionProbability(150, 10)).toBe(0);
    expect(MarkovModel.fromBytes(m.toBytes()).observedStates).toBe(2);
  });

  it('counts the transition across the boundary of its two halves', () => {
    const xs = phase([3, 77], 40); // 3 x5, 77 x5, ...: the 20th sample ends a stay in 77
    const sliding = new SlidingModelBuilder(total, { states: 256 }, 20);
    const one = new ModelBuilder(total, { states: 256 });
    for (const x of xs) {
      sliding.observe(x);
      one.observe(x);
    }
    expect(sliding.build().transitionCount).toBe(one.build().transitionCount);
    expect(sliding.build().transitionProbability(77, 3)).toBeCloseTo(one.build().transitionProbability(77, 3), 10);
  });
});
