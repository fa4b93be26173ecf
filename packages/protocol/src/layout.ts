/**
 * Segments of the session's linear page space, as both agents hold them: each covers
 * [indexBase, indexBase + pages). `findByIndex` looks one up in a list sorted by indexBase.
 */
export interface IndexedRange {
  indexBase: number;
  pages: number;
}

export function findByIndex<T extends IndexedRange>(sorted: readonly T[], index: number): T | undefined {
  let lo = 0;
  let hi = sorted.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const s = sorted[mid];
    if (index < s.indexBase) hi = mid - 1;
    else if (index >= s.indexBase + s.pages) lo = mid + 1;
    else return s;
  }
  return undefined;
}
