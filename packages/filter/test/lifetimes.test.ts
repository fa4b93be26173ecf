import { describe, expect, it } from 'vitest';
import { ForecastPolicy, MappingLifetimes, PageBitmap, XEN_DEFAULT_STOP_RULES, createPolicy, simulate, type Trace } from '../src/index.js';

/**
 * A churning allocator: pages 0..999 mapped from the start (0..99 written every sample); from
 * sample 10 on, every 10 samples a mapping of 500 pages is born (written when it appears) and
 * unmapped `life` samples later.
 */
function churn(samples: number, life: number): Trace {
  const births: number[] = [];
  for (let b = 10; b < samples; b += 10) births.push(b);
  const total = 1000 + 500 * births.length;
  const out = [];
  for (let k = 1; k <= samples; k++) {
    const written = Array.from({ length: 100 }, (_, i) => i);
    const died: Array<[number, number]> = [];
    let size = 1000;
    births.forEach((b, j) => {
      const start = 1000 + 500 * j;
      if (b <= k) size = start + 500;
      if (b === k) for (let p = start; p < start + 500; p++) written.push(p);
      if (b + life === k) died.push([start, start + 500]);
    });
    out.push({ atMs: k * 50, pages: PageBitmap.fromIndices(size, written), ...(died.length ? { died } : {}) });
  }
  return { intervalMs: 50, pageSize: 4096, meta: {}, samples: out, totalPages: total };
}

/** Feeds a lifetimes model the live sets of a trace's first `upTo` samples, as the simulator does. */
function watch(trace: Trace, upTo: number): MappingLifetimes {
  const m = new MappingLifetimes();
  const live = new PageBitmap(trace.totalPages);
  let space = 0;
  for (const s of trace.samples.slice(0, upTo)) {
    live.setRange(space, s.pages.size); // a mapping that appears
    space = Math.max(space, s.pages.size);
    for (const [a, b] of s.died ?? []) live.clearRange(a, b);
    m.observe(live);
  }
  return m;
}

describe('MappingLifetimes', () => {
  it('learns that mappings live 30 samples: a young one is gone within 30 more, not within 10', () => {
    const m = watch(churn(200, 30), 200);
    expect(m.counts.ended).toBeGreaterThan(0);
    // Every lifetime seen is 30: at age 5, gone within 25 or more, not within 20 or fewer.
    expect(m.goneWithin(5, 30)).toBeCloseTo(1, 6);
    expect(m.goneWithin(5, 20)).toBe(0);
    // The pages mapped from the start have no known birth and are never held.
    const all = PageBitmap.full(1000 + 500 * 19);
    const out = new PageBitmap(all.size);
    m.addLikelyGone(all, 30, 0.5, out);
    expect(out.countRange(0, 1000)).toBe(0);
    // The mappings alive at sample 200 were born at 180 and 190 (the one of 170 ended at 200).
    expect([...out.runs()]).toEqual([[1000 + 500 * 17, 1000 + 500 * 19]]);
  });

  it('forecasts nothing gone for a process that only grows, or before any mapping ended', () => {
    const grows = watch(churn(200, 10_000), 200);
    expect(grows.counts.ended).toBe(0);
    expect(grows.goneWithin(5, 1000)).toBe(0);
    const early = watch(churn(35, 30), 35); // the first mapping ends at sample 40
    expect(early.counts.ended).toBe(0);
    const out = new PageBitmap(20_000);
    expect(early.addLikelyGone(PageBitmap.full(20_000), 1000, 0.5, out)).toBe(0);
    expect(out.isEmpty()).toBe(true);
  });

  it('counts a mapping partly unmapped as that many pages ended, and keeps the rest', () => {
    const m = new MappingLifetimes();
    const live = new PageBitmap(100);
    live.setRange(0, 10);
    m.observe(live);
    live.setRange(10, 60); // born at the second sample
    m.observe(live);
    live.clearRange(10, 30); // 20 of its 50 pages unmapped
    m.observe(live);
    expect(m.counts).toEqual({ ended: 20, alive: 30, runs: 1 });
  });
});

describe('forecast with mapping lifetimes (simulated)', () => {
  /** forecast without the live sets: it cannot learn how long mappings live. */
  class Blind extends ForecastPolicy {
    observeSample(sample: PageBitmap, atMs?: number): void {
      super.observeSample(sample, atMs);
    }
  }
  const rules = { ...XEN_DEFAULT_STOP_RULES };
  const opts = { pageRate: 2000, stopRules: rules, startMs: 5000, warmupFromMs: -1 };

  it('holds the pages of young mappings that will be unmapped before it ends, and sends fewer', () => {
    const trace = churn(400, 30);
    const make = (P: typeof ForecastPolicy) => new P(trace.totalPages, { intervalMs: 50, initialPageRate: 2000, stopRules: rules });
    const seeing = make(ForecastPolicy);
    const withLives = simulate(trace, seeing, opts);
    const blind = simulate(trace, make(Blind), opts);
    const pre = simulate(trace, createPolicy('precopy'), opts);
    expect(seeing.lifetimes.counts.ended).toBeGreaterThan(0);
    expect(withLives.pagesSent).toBeLessThan(blind.pagesSent);
    expect(withLives.pagesSent).toBeLessThan(pre.pagesSent);
    expect(withLives.downtimeMs).toBeLessThanOrEqual(blind.downtimeMs);
    expect(withLives.downtimeMs).toBeLessThanOrEqual(pre.downtimeMs);
  });

  it('changes nothing for a process whose mappings never end', () => {
    const trace = churn(400, 10_000);
    const make = (P: typeof ForecastPolicy) => new P(trace.totalPages, { intervalMs: 50, initialPageRate: 2000, stopRules: rules });
    const a = simulate(trace, make(ForecastPolicy), opts);
    const b = simulate(trace, make(Blind), opts);
    expect(a.pagesSent).toBe(b.pagesSent);
    expect(a.downtimeMs).toBe(b.downtimeMs);
    expect(a.rounds.map((r) => r.pagesSent)).toEqual(b.rounds.map((r) => r.pagesSent));
  });
});
