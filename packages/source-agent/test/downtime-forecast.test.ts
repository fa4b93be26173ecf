import fs from 'node:fs';
import { PageReader } from '@forecopy/linux';
import { describe, expect, it, vi } from 'vitest';
import { DowntimeForecast, calibrateHashMs, calibrationRuns, chooseVerify, fullVerifyMs } from '../src/migration/downtime-forecast.js';

describe('chooseVerify (--verify auto)', () => {
  it('keeps what the user named', () => {
    expect(chooseVerify('full', 50, 1 << 20, 0.001).mode).toBe('full');
    expect(chooseVerify('incremental', undefined, 10, 0.001).mode).toBe('incremental');
  });

  it('takes the full check without a limit, and where it fits a quarter of the limit', () => {
    expect(chooseVerify('auto', undefined, 1 << 20, 0.001)).toMatchObject({ mode: 'full', reason: 'no downtime limit' });
    // 16,384 pages at 1 us a page on each side: 33 ms, within 75 ms; 65,536 pages (256 MiB): 131 ms, not.
    expect(chooseVerify('auto', 300, 16_384, 0.001).mode).toBe('full');
    expect(chooseVerify('auto', 300, 65_536, 0.001).mode).toBe('incremental');
  });

  it('takes the incremental check where the full one would eat more than a quarter of the limit', () => {
    // 1 GiB: 262,144 pages, 524 ms on two sides at 1 us a page: over 25 ms.
    const c = chooseVerify('auto', 50, 262_144, 0.001);
    expect(c.mode).toBe('incremental');
    expect(c.reason).toMatch(/about 524 ms, over a quarter of the 50 ms limit/);
  });
});

describe('DowntimeForecast', () => {
  const inputs = { pid: process.pid, livePages: () => 262_144, scanMs: () => 2, hashMsPerPage: 0.001 };

  it('grows with what the downtime will do: a full check, a restore, a slower round trip', () => {
    const incremental = new DowntimeForecast({ ...inputs, restore: false, verify: 'incremental' });
    const full = new DowntimeForecast({ ...inputs, restore: false, verify: 'full' });
    const restore = new DowntimeForecast({ ...inputs, restore: true, verify: 'incremental' });
    expect(full.fixedMs() - incremental.fixedMs()).toBeGreaterThan(fullVerifyMs(262_144, 0.001) - 20);
    expect(restore.fixedMs()).toBeGreaterThan(incremental.fixedMs() + 20);
    const before = incremental.fixedMs();
    incremental.observeRoundTrip(30);
    incremental.observeRoundTrip(40); // the shortest one counts
    expect(incremental.fixedMs() - before).toBeCloseTo(2 * 29, 0);
  });
});

describe('calibrateHashMs', () => {
  it('measures a per-page cost of this machine (well under a millisecond, over nothing)', async () => {
    const ms = await calibrateHashMs();
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(0.1);
  });

  it("reads and hashes runs of the process's own pages, and takes the buffer's figure where it cannot read them", async () => {
    // This process's own writable mappings, read with process_vm_readv as another's would be.
    const layout = fs
      .readFileSync('/proc/self/maps', 'utf8')
      .split('\n')
      .filter((l) => / rw-p /.test(l))
      .map((l) => {
        const [a, b] = l
          .split(' ')[0]
          .split('-')
          .map((x) => Number.parseInt(x, 16));
        return { start: a, pages: (b - a) / 4096 };
      });
    const reader = new PageReader(process.pid);
    const runs = calibrationRuns(layout);
    const read = vi.spyOn(reader, 'readRanges');
    const ms = await calibrateHashMs({ reader, runs });
    expect(read).toHaveBeenCalledTimes(runs.length);
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(0.1);
    // Nothing mapped there: every read comes back short, and the buffer's figure stands.
    const nowhere = Array.from({ length: 16 }, (_, i) => ({ addr: 0x1000 * (i + 1), pages: 256 }));
    const alone = await calibrateHashMs({ reader, runs: nowhere });
    expect(alone).toBeGreaterThan(0);
    expect(alone).toBeLessThan(0.1);
    // Reads that fail, as those of a process gone would (ESRCH): nothing is thrown.
    const failing = new PageReader(process.pid);
    vi.spyOn(failing, 'readRanges').mockImplementation(() => {
      throw new Error('ESRCH');
    });
    expect(await calibrateHashMs({ reader: failing, runs })).toBeGreaterThan(0);
  });
});

describe('calibrationRuns', () => {
  it('spreads the runs evenly over the live pages, each within one mapping', () => {
    const P = 4096;
    const layout = [
      { start: 0x10000000, pages: 100 }, // smaller than a run: one run, clipped to it
      { start: 0x20000000, pages: 10_000 },
      { start: 0x30000000, pages: 5_900 },
    ];
    const runs = calibrationRuns(layout, 4, 256); // 16,000 live pages: a run every 4,000
    expect(runs).toEqual([
      { addr: 0x10000000, pages: 100 },
      { addr: 0x20000000 + 3_900 * P, pages: 256 },
      { addr: 0x20000000 + 7_900 * P, pages: 256 },
      { addr: 0x30000000 + 1_900 * P, pages: 256 },
    ]);
    // A small process: runs no closer than their length, so none overlaps the next.
    expect(calibrationRuns([{ start: 0x40000000, pages: 600 }], 16, 256)).toEqual([
      { addr: 0x40000000, pages: 256 },
      { addr: 0x40000000 + 256 * P, pages: 256 },
      { addr: 0x40000000 + 512 * P, pages: 88 },
    ]);
  });
});
