import { describe, expect, it } from 'vitest';
import { MAX_PAGES_PER_BATCH, defaultBatchPages } from '../src/index.js';

describe('defaultBatchPages', () => {
  it('makes a batch last on the wire about as long as 256 pages at 500 Mbit/s, 256 pages at least, the most unpaced', () => {
    expect(defaultBatchPages(500e6)).toBe(256);
    expect(defaultBatchPages(100e6)).toBe(256);
    expect(defaultBatchPages(1e9)).toBe(512);
    expect(defaultBatchPages(10e9)).toBe(MAX_PAGES_PER_BATCH);
    expect(defaultBatchPages(0)).toBe(MAX_PAGES_PER_BATCH);
  });
});
