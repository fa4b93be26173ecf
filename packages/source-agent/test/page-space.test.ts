import { describe, expect, it } from 'vitest';
import { PageBitmap } from '@forecopy/filter';
import { PageSpace } from '../src/page-space.js';

const P = 4096;
const map = (start: number, pages: number, path = '') => ({
  start,
  end: start + pages * P,
  perms: 'rw-p',
  offset: 0,
  dev: '00:00',
  inode: 0,
  path,
});

describe('PageSpace', () => {
  it('lays mappings end to end and maps addresses to indices', () => {
    const s = new PageSpace(P);
    const r = s.reconcile([map(0x10000, 4, '[heap]'), map(0x100000, 8)]);
    expect(r.added).toHaveLength(2);
    expect(s.totalPages).toBe(12);
    expect(s.addressOf(0)).toBe(0x10000);
    expect(s.addressOf(4)).toBe(0x100000);
    const b = new PageBitmap(12);
    s.markRanges(
      [
        { start: 0x10000 + P, end: 0x10000 + 3 * P },
        { start: 0x100000 + 7 * P, end: 0x100000 + 8 * P },
      ],
      b,
    );
    expect([...b]).toEqual([1, 2, 11]);
  });

  it('adds a new segment for growth and retires a shrunk one', () => {
    const s = new PageSpace(P);
    s.reconcile([map(0x10000, 4, '[heap]')]);
    const grow = s.reconcile([map(0x10000, 6, '[heap]')]);
    expect(grow.retired).toHaveLength(0);
    expect(grow.added).toEqual([expect.objectContaining({ start: 0x10000 + 4 * P, pages: 2, indexBase: 4 })]);
    expect(s.livePages).toBe(6);
    const shrink = s.reconcile([map(0x10000, 3, '[heap]')]);
    expect(shrink.retired.map((x) => x.pages).sort()).toEqual([2, 4]);
    expect(shrink.added).toEqual([expect.objectContaining({ start: 0x10000, pages: 3, indexBase: 6 })]);
    expect(s.totalPages).toBe(9);
    expect(s.livePages).toBe(3);
    expect([...s.live]).toEqual([6, 7, 8]);
    expect(s.segmentOfIndex(0)).toBeUndefined();
  });

  it('does nothing when the mappings did not change', () => {
    const s = new PageSpace(P);
    s.reconcile([map(0x10000, 4), map(0x20000, 4)]);
    const v = s.layoutVersion;
    expect(s.reconcile([map(0x20000, 4), map(0x10000, 4)])).toEqual({ added: [], retired: [] });
    expect(s.layoutVersion).toBe(v);
  });
});
