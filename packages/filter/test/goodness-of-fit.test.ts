import { describe, expect, it } from 'vitest';
import { FitMonitor, MarkovModel, RegionMap, normalQuantile, normalUpperTail } from '../src/index.js';
import { rng } from './synthetic.js';

describe('normal quantile and tail', () => {
  it('match the tables', () => {
    expect(normalQuantile(0.999)).toBeCloseTo(3.090232, 5);
    expect(normalQuantile(0.975)).toBeCloseTo(1.959964, 5);
    expect(normalQuantile(0.5)).toBeCloseTo(0, 9);
    expect(normalQuantile(0.001)).toBeCloseTo(-3.090232, 5);
    expect(normalUpperTail(1.959964)).toBeCloseTo(0.025, 6);
    expect(normalUpperTail(3.090232)).toBeCloseTo(0.001, 6);
    expect(normalUpperTail(-1)).toBeCloseTo(0.841345, 6);
  });
});

/** A chain over 6 of 64 states with a random transition matrix (fixed seed). */
function chain(seed: number) {
  const r = rng(seed);
  const used = [2, 9, 17, 30, 41, 63];
  const P = used.map(() => {
    const w = used.map(() => r() ** 2);
    const t = w.reduce((a, b) => a + b, 0);
    return w.map((x) => x / t);
  });
  let i = 0;
  return () => {
    let u = r();
    let j = 0;
    while (j < used.length - 1 && (u -= P[i][j]) > 0) j++;
    i = j;
    return used[i];
  };
}

/** A model of `n` steps of the chain, built from counts directly. */
function modelOf(next: () => number, n: number): MarkovModel {
  const counts = new Uint32Array(64);
  const rows = new Map<number, Map<number, number>>();
  let prev = next();
  counts[prev]++;
  for (let k = 1; k < n; k++) {
    const s = next();
    counts[s]++;
    if (!rows.has(prev)) rows.set(prev, new Map());
    rows.get(prev)!.set(s, (rows.get(prev)!.get(s) ?? 0) + 1);
    prev = s;
  }
  return new MarkovModel(new RegionMap(64 * 64, 64), 0.25, counts, rows, new Map());
}

describe('FitMonitor', () => {
  it('is calibrated: on the chain it was built from, windows fail at about the nominal rate', () => {
    const next = chain(5);
    const m = modelOf(next, 5000);
    const f = new FitMonitor(m, { window: 20, alpha: 0.05 });
    let fails = 0;
    let windows = 0;
    for (let k = 0; k < 20 * 1000; k++) {
      const v = f.observe(next());
      if (v) {
        windows++;
        fails += v.fits ? 0 : 1;
      }
    }
    expect(windows).toBe(999); // the first state only starts the first window
    expect(fails / windows).toBeGreaterThan(0.01);
    expect(fails / windows).toBeLessThan(0.1);
    expect(f.threshold).toBeCloseTo(1.645, 3);
  });

  it('fails a chain over the same states with other transitions, and reports z, its threshold and the p-value', () => {
    const m = modelOf(chain(5), 5000);
    const other = chain(77);
    const f = new FitMonitor(m); // window 20, alpha 0.001
    let fails = 0;
    let windows = 0;
    for (let k = 0; k < 20 * 50; k++) {
      const v = f.observe(other());
      if (v) {
        windows++;
        if (!v.fits) {
          fails++;
          expect(v.statistic).toBeGreaterThan(v.threshold);
          expect(v.pValue).toBeLessThan(0.001);
        }
      }
    }
    expect(fails / windows).toBeGreaterThan(0.5);
    expect(f.fits()).toBe(f.latest!.fits);
  });

  it('fails at once on states the model never saw', () => {
    const m = modelOf(chain(5), 5000);
    const f = new FitMonitor(m);
    let v = null;
    for (let k = 0; k <= 20; k++) v = f.observe([5, 6, 7][k % 3]);
    expect(v).toMatchObject({ fits: false, transitions: 20 });
    expect(v!.pValue).toBe(0);
  });
});
