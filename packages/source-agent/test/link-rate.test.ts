import { describe, expect, it } from 'vitest';
import { MEASURE_MS, measureLink } from '../src/migration/link-rate.js';

const MBIT = 1e6;
const paced500 = 500 * MBIT;
const pagesPerSecond = (bps: number) => bps / 8 / 4096;

describe('measureLink: the rate the rest of the migration is forecast at', () => {
  it("keeps --bandwidth's rate through a round too short to measure the link", () => {
    // bzip2, live: 284 pages, most of them zero pages, 9,090 bytes in 11 ms.
    const before = { pageRate: pagesPerSecond(paced500), wireRate: 0 };
    const after = measureLink(before, { pagesSent: 284, bytesOnWire: 9090, durationMs: 11.45 }, paced500);
    expect(after).toEqual(before);
  });

  it("keeps an earlier round's rate through a short one", () => {
    const before = { pageRate: 12_000, wireRate: 55e6 };
    expect(measureLink(before, { pagesSent: 20, bytesOnWire: 82_000, durationMs: 8 }, 0)).toEqual(before);
  });

  it('measures from a short round when nothing is known yet (unpaced, round 1)', () => {
    const after = measureLink({ pageRate: 0, wireRate: 0 }, { pagesSent: 284, bytesOnWire: 9090, durationMs: 11.45 }, 0);
    expect(after.pageRate).toBeGreaterThan(0);
    expect(after.wireRate).toBeCloseTo((9090 / 11.45) * 1000, 0);
  });

  it('measures a round of 100 ms or more: the lowest of its pages a second and, in whole pages, the most bytes a second carried and --bandwidth', () => {
    const before = { pageRate: pagesPerSecond(paced500), wireRate: 0 };
    // 1,914 pages, 6.4 MB on the wire in 113 ms: 56.6 MB/s, 13,800 pages of 4 KiB a second.
    const a = measureLink(before, { pagesSent: 1914, bytesOnWire: 6_397_012, durationMs: MEASURE_MS + 13 }, paced500);
    expect(a.wireRate).toBeCloseTo((6_397_012 / 113) * 1000, 0);
    expect(a.pageRate).toBeCloseTo(a.wireRate / 4096, 6);
    // A round of compressible pages then carries fewer bytes a second: the most seen stays.
    const b = measureLink(a, { pagesSent: 5000, bytesOnWire: 2_000_000, durationMs: 200 }, paced500);
    expect(b.wireRate).toBe(a.wireRate);
    expect(b.pageRate).toBeCloseTo(a.wireRate / 4096, 6);
    // A burst above --bandwidth (the pacer lets one through) is capped by it.
    const c = measureLink(a, { pagesSent: 40_000, bytesOnWire: 164e6, durationMs: 1000 }, paced500);
    expect(c.pageRate).toBeCloseTo(pagesPerSecond(paced500), 6);
  });
});
