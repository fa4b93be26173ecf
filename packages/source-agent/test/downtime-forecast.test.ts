import { describe, expect, it } from 'vitest';
import { DowntimeForecast, calibrateHashMs, chooseVerify, fullVerifyMs } from '../src/migration/downtime-forecast.js';

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
});
