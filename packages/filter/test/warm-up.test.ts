import { describe, expect, it } from 'vitest';
import { ForecastPolicy, PageBitmap, XEN_DEFAULT_STOP_RULES, warmUpForecast } from '../src/index.js';
import { rng } from './synthetic.js';

/** The pages a forecast policy holds in each of 30 rounds planned over the same history. */
function holds(): number[][] {
  const n = 4096;
  const p = new ForecastPolicy(n, {
    intervalMs: 50,
    initialPageRate: 2000,
    stopRules: { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 },
  });
  const r = rng(7);
  for (let i = 0; i < 80; i++) {
    // A hot spot of 256 pages moving over four zones, four samples in each, and writes anywhere.
    const b = new PageBitmap(n);
    const zone = [3, 9, 14, 2][(i >>> 2) % 4] * 256;
    for (let k = 0; k < 60; k++) b.set(zone + Math.floor(r() * 256));
    for (let k = 0; k < 20; k++) b.set(Math.floor(r() * n));
    p.observeSample(b, i * 50);
  }
  return Array.from({ length: 30 }, (_, i) => [...p.holdBack(PageBitmap.full(n), { round: i + 1, pageRate: 2000, nowMs: i * 1000 })]);
}

describe('warmUpForecast', () => {
  it("runs once, and changes no policy's plans", () => {
    const before = holds();
    expect(before.some((h) => h.length > 0)).toBe(true); // plans that hold something, to compare
    expect(warmUpForecast()).toBeGreaterThan(0);
    expect(warmUpForecast()).toBe(0); // once per process
    expect(holds()).toEqual(before);
  });
});
