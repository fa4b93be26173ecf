import { BadHeaderError } from './errors.js';

/**
 * A sorted set of page indices as ranges: [start0, count0, start1, count1, ...], merged where
 * adjacent, never overlapping, every count > 0. The wire form of a PageBatch's pages.
 *
 *   pages 4 5 6 9 10 11 12 20  ->  [4, 3, 9, 4, 20, 1]
 */
export class RangeTable {
  private constructor(private readonly flat: number[]) {}

  static empty(): RangeTable {
    return new RangeTable([]);
  }

  /** From page indices in strictly increasing order. */
  static fromSortedPages(pages: ArrayLike<number>): RangeTable {
    const flat: number[] = [];
    for (let i = 0; i < pages.length; i++) {
      const p = pages[i];
      if (i > 0 && p <= pages[i - 1]) throw new RangeError(`pages must be strictly increasing: ${pages[i - 1]} then ${p}`);
      const n = flat.length;
      if (n > 0 && flat[n - 2] + flat[n - 1] === p) flat[n - 1]++;
      else flat.push(p, 1);
    }
    return new RangeTable(flat);
  }

  /** From [start, end) runs in increasing order; adjacent runs merge. */
  static fromRuns(runs: Iterable<readonly [number, number]>): RangeTable {
    const flat: number[] = [];
    for (const [s, e] of runs) {
      if (!(e > s)) throw new RangeError(`run [${s}, ${e}) is empty`);
      const n = flat.length;
      if (n > 0 && s < flat[n - 2] + flat[n - 1]) throw new RangeError(`runs overlap or are unsorted at ${s}`);
      if (n > 0 && flat[n - 2] + flat[n - 1] === s) flat[n - 1] += e - s;
      else flat.push(s, e - s);
    }
    return new RangeTable(flat);
  }

  /**
   * From the wire: validates that it is sorted, non-overlapping, with counts > 0, and (when
   * `totalPages` is given) inside [0, totalPages).
   */
  static fromWire(value: unknown, totalPages?: number): RangeTable {
    if (!Array.isArray(value) || value.length % 2 !== 0) throw new BadHeaderError('ranges must be an array of start, count pairs');
    let end = -1;
    for (let i = 0; i < value.length; i += 2) {
      const s = value[i];
      const c = value[i + 1];
      if (!Number.isSafeInteger(s) || s < 0 || !Number.isSafeInteger(c) || c <= 0) {
        throw new BadHeaderError(`range ${i / 2} is not a start >= 0 and a count > 0`);
      }
      if (s <= end) throw new BadHeaderError(`range ${i / 2} at page ${s} overlaps or is out of order`);
      end = s + c - 1;
      if (totalPages !== undefined && end >= totalPages)
        throw new BadHeaderError(`range ${i / 2} ends at page ${end}, past ${totalPages - 1}`);
    }
    return new RangeTable(value.slice());
  }

  toWire(): number[] {
    return this.flat;
  }

  get rangeCount(): number {
    return this.flat.length / 2;
  }

  /** Pages covered. */
  pages(): number {
    let n = 0;
    for (let i = 1; i < this.flat.length; i += 2) n += this.flat[i];
    return n;
  }

  /** [start, count] pairs. */
  *entries(): IterableIterator<[number, number]> {
    for (let i = 0; i < this.flat.length; i += 2) yield [this.flat[i], this.flat[i + 1]];
  }

  /** Every page index, in order. */
  *pageIndices(): IterableIterator<number> {
    for (const [s, c] of this.entries()) for (let p = s; p < s + c; p++) yield p;
  }

  /** Splits into tables of at most `maxPages` pages each (splitting ranges where needed). */
  partition(maxPages: number): RangeTable[] {
    if (!(maxPages >= 1)) throw new RangeError('maxPages must be >= 1');
    const out: RangeTable[] = [];
    let cur: number[] = [];
    let n = 0;
    for (let [s, c] of this.entries()) {
      while (c > 0) {
        const take = Math.min(c, maxPages - n);
        cur.push(s, take);
        n += take;
        s += take;
        c -= take;
        if (n === maxPages) {
          out.push(new RangeTable(cur));
          cur = [];
          n = 0;
        }
      }
    }
    if (cur.length > 0) out.push(new RangeTable(cur));
    return out;
  }

  /** Bytes this table takes in a header (msgpack, approximately: ints up to 5 bytes) versus bytes of memory it covers. */
  sizes(pageSize: number): { wireBytes: number; memoryBytes: number } {
    let wire = 5;
    for (const v of this.flat) wire += v < 128 ? 1 : v < 65536 ? 3 : 5;
    return { wireBytes: wire, memoryBytes: this.pages() * pageSize };
  }
}
