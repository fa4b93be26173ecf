import { describe, expect, it } from 'vitest';
import { PageBitmap, RegionMap, hotRegions, regionHistogram, writeState } from '../src/index.js';
import { rng } from './synthetic.js';

describe('regionHistogram', () => {
  it('counts the same as page by page, for sizes that are not multiples of 32 or of S', () => {
    const r = rng(7);
    const regions = new RegionMap(10_007, 64); // 156 pages a region, the last 179
    for (const size of [10_007, 9_000, 10_500]) {
      const s = new PageBitmap(size);
      for (let k = 0; k < 3000; k++) s.set(Math.floor(r() * size));
      const naive = new Uint32Array(64);
      s.forEach((p) => {
        naive[regions.regionOf(p)]++;
      });
      expect([...regionHistogram(s, regions)]).toEqual([...naive]);
    }
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

describe('hotRegions', () => {
  it('takes the hottest region as the state and the regions with at least half its writes as hot spots', () => {
    const regions = new RegionMap(1024, 64); // 16 pages a region
    const s = new PageBitmap(1024);
    s.setRange(16 * 5, 16 * 5 + 10); // region 5: 10 pages
    s.setRange(16 * 9, 16 * 9 + 6); // region 9: 6 pages (>= half of 10)
    s.setRange(16 * 3, 16 * 3 + 5); // region 3: 5 pages (exactly half)
    s.setRange(16 * 20, 16 * 20 + 4); // region 20: 4 pages (below half)
    const ws = writeState(regions.histogram(s))!;
    expect(ws).toEqual({ state: 5, others: [9, 3], count: 10 });
    expect(hotRegions(regions.histogram(s), { maxHot: 2 })!.others).toEqual([9]);
    expect(hotRegions(regions.histogram(s), { share: 0.3 })!.others).toEqual([9, 3, 20]);
    expect(writeState(regions.histogram(new PageBitmap(1024)))).toBeNull();
  });

  it('has no cap on hot regions: a sample touching ten regions alike has ten hot spots', () => {
    const h = new Uint32Array(64);
    for (let r = 10; r < 20; r++) h[r] = 100;
    expect(hotRegions(h)).toEqual({ state: 10, others: [11, 12, 13, 14, 15, 16, 17, 18, 19], count: 100 });
  });

  it('breaks ties towards the lower region', () => {
    const h = new Uint32Array(64);
    h[40] = 7;
    h[12] = 7;
    h[30] = 7;
    expect(hotRegions(h)).toEqual({ state: 12, others: [30, 40], count: 7 });
  });
});

describe('PageBitmap.orBitsAt', () => {
  it('places a packed bitmap at any offset, clipped to the size', () => {
    const r = rng(3);
    for (const [size, start, len] of [
      [1000, 0, 64],
      [1000, 37, 100],
      [1000, 950, 100],
      [97, 5, 33],
    ]) {
      const bits = new Uint32Array(Math.ceil(len / 32));
      const want = new PageBitmap(size);
      for (let i = 0; i < len; i++) {
        if (r() < 0.4) {
          bits[i >>> 5] |= 1 << (i & 31);
          if (start + i < size) want.set(start + i);
        }
      }
      bits[bits.length - 1] |= 0x80000000; // garbage past `len` is ignored
      if (len % 32 === 0 && start + len - 1 < size) want.set(start + len - 1);
      const got = new PageBitmap(size).orBitsAt(bits, start, len);
      expect([...got]).toEqual([...want]);
    }
  });
});
