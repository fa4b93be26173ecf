/**
 * A set of page indices held as a bitmap: one bit a page, 32 pages a word.
 *
 * Every page set in forecopy (dirty sets, send lists, filter lists, LWWS) is a PageBitmap, never a
 * `Set<number>`: 1 GiB of 4 KiB pages is 262,144 pages, a 32 KiB bitmap, and union/difference run
 * a word at a time.
 *
 *   word 0                      word 1
 *   bit 0 .. bit 31             bit 0 .. bit 31
 *   page 0 .. page 31           page 32 .. page 63
 *
 * Bits at or past `size` are always zero, so `count()` and the set operations never see them.
 */
export class PageBitmap {
  private words: Uint32Array;
  private _size: number;

  constructor(size: number, words?: Uint32Array) {
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`bitmap size must be a whole number >= 0, got ${size}`);
    this._size = size;
    const n = wordsFor(size);
    if (words) {
      if (words.length !== n) throw new RangeError(`bitmap of ${size} pages needs ${n} words, got ${words.length}`);
      this.words = words;
      this.maskTail();
    } else {
      this.words = new Uint32Array(n);
    }
  }

  static full(size: number): PageBitmap {
    const b = new PageBitmap(size);
    b.words.fill(0xffffffff);
    b.maskTail();
    return b;
  }

  static fromIndices(size: number, indices: Iterable<number>): PageBitmap {
    const b = new PageBitmap(size);
    for (const i of indices) b.set(i);
    return b;
  }

  /** Number of pages the bitmap covers (indices 0 .. size-1). */
  get size(): number {
    return this._size;
  }

  /** The backing words, for serialisation (trace files, wire). Shares memory with the bitmap. */
  get raw(): Uint32Array {
    return this.words;
  }

  /** Bytes of memory the bitmap itself occupies. */
  get byteLength(): number {
    return this.words.byteLength;
  }

  has(i: number): boolean {
    if (i < 0 || i >= this._size) return false;
    return (this.words[i >>> 5] & (1 << (i & 31))) !== 0;
  }

  set(i: number): void {
    this.check(i);
    this.words[i >>> 5] |= 1 << (i & 31);
  }

  /** Sets each page of `indices`; returns how many of them were set already (pages sent again, for a bitmap of pages sent). */
  setEach(indices: Iterable<number>): number {
    let already = 0;
    for (const i of indices) {
      if (this.has(i)) already++;
      else this.set(i);
    }
    return already;
  }

  clear(i: number): void {
    this.check(i);
    this.words[i >>> 5] &= ~(1 << (i & 31));
  }

  /** Sets pages [start, end). */
  setRange(start: number, end: number): void {
    this.fillRange(start, end, true);
  }

  /** Clears pages [start, end). */
  clearRange(start: number, end: number): void {
    this.fillRange(start, end, false);
  }

  /** Sets or clears pages [start, end), a word at a time. */
  private fillRange(start: number, end: number, on: boolean): void {
    if (start < 0 || end > this._size || start > end) {
      throw new RangeError(`range [${start}, ${end}) outside bitmap of ${this._size} pages`);
    }
    if (start === end) return;
    const first = start >>> 5;
    const last = (end - 1) >>> 5;
    for (let w = first; w <= last; w++) {
      const lo = w === first ? start & 31 : 0;
      const n = (w === last ? ((end - 1) & 31) + 1 : 32) - lo; // bits of this word in the range
      const mask = n === 32 ? 0xffffffff : ((1 << n) - 1) << lo;
      if (on) this.words[w] |= mask;
      else this.words[w] &= ~mask;
    }
  }

  clearAll(): void {
    this.words.fill(0);
  }

  isEmpty(): boolean {
    const w = this.words;
    for (let k = 0; k < w.length; k++) if (w[k] !== 0) return false;
    return true;
  }

  count(): number {
    const w = this.words;
    let c = 0;
    for (let k = 0; k < w.length; k++) c += popcount32(w[k]);
    return c;
  }

  /** Pages set in [start, end). */
  countRange(start: number, end: number): number {
    start = Math.max(0, start);
    end = Math.min(this._size, end);
    let c = 0;
    let i = start;
    while (i < end && (i & 31) !== 0) {
      if (this.words[i >>> 5] & (1 << (i & 31))) c++;
      i++;
    }
    while (i + 32 <= end) {
      c += popcount32(this.words[i >>> 5]);
      i += 32;
    }
    while (i < end) {
      if (this.words[i >>> 5] & (1 << (i & 31))) c++;
      i++;
    }
    return c;
  }

  clone(): PageBitmap {
    return new PageBitmap(this._size, this.words.slice());
  }

  /** Makes this bitmap equal to `other` (same size required). */
  copyFrom(other: PageBitmap): this {
    this.sameSize(other);
    this.words.set(other.words);
    return this;
  }

  /** this := this ∪ other */
  or(other: PageBitmap): this {
    this.sameSize(other);
    const a = this.words;
    const b = other.words;
    for (let k = 0; k < a.length; k++) a[k] |= b[k];
    return this;
  }

  /** this := this ∩ other */
  and(other: PageBitmap): this {
    this.sameSize(other);
    const a = this.words;
    const b = other.words;
    for (let k = 0; k < a.length; k++) a[k] &= b[k];
    return this;
  }

  /** this := this \ other */
  andNot(other: PageBitmap): this {
    this.sameSize(other);
    const a = this.words;
    const b = other.words;
    for (let k = 0; k < a.length; k++) a[k] &= ~b[k];
    return this;
  }

  /** |this ∩ other| without allocating. */
  intersectCount(other: PageBitmap): number {
    this.sameSize(other);
    const a = this.words;
    const b = other.words;
    let c = 0;
    for (let k = 0; k < a.length; k++) c += popcount32(a[k] & b[k]);
    return c;
  }

  /**
   * this := this ∪ (bits placed at `start`): `bits` is a packed bitmap of `length` pages (bit i of
   * word i >> 5 is page start + i), as a model stores a region's LWWS. Pages at or past `size` are
   * dropped (the space shrank). Runs a word at a time, also when `start` is not a multiple of 32.
   */
  orBitsAt(bits: Uint32Array, start: number, length: number): this {
    if (!(Number.isInteger(start) && start >= 0 && Number.isInteger(length) && length >= 0)) {
      throw new RangeError(`orBitsAt: bad range start ${start}, length ${length}`);
    }
    if (bits.length < (length + 31) >>> 5) throw new RangeError(`orBitsAt: ${bits.length} words cannot hold ${length} pages`);
    const w = this.words;
    const sh = start & 31;
    const base = start >>> 5;
    const n = (length + 31) >>> 5;
    const tail = length & 31;
    for (let k = 0; k < n; k++) {
      let x = bits[k];
      if (k === n - 1 && tail !== 0) x &= ((1 << tail) >>> 0) - 1;
      if (x === 0) continue;
      const t = base + k;
      if (t < w.length) w[t] |= x << sh;
      if (sh !== 0 && t + 1 < w.length) w[t + 1] |= x >>> (32 - sh);
    }
    this.maskTail();
    return this;
  }

  equals(other: PageBitmap): boolean {
    if (other._size !== this._size) return false;
    const a = this.words;
    const b = other.words;
    for (let k = 0; k < a.length; k++) if (a[k] !== b[k]) return false;
    return true;
  }

  /**
   * Returns a bitmap of `newSize` pages holding the same set (pages past a smaller size are
   * dropped). Used when the migrated address space grows or shrinks between rounds.
   */
  resized(newSize: number): PageBitmap {
    const b = new PageBitmap(newSize);
    const n = Math.min(this.words.length, b.words.length);
    b.words.set(this.words.subarray(0, n));
    b.maskTail();
    return b;
  }

  /** Calls fn for each set page in increasing order. */
  forEach(fn: (page: number) => void): void {
    const w = this.words;
    for (let k = 0; k < w.length; k++) {
      let x = w[k];
      while (x !== 0) {
        const t = x & -x;
        fn((k << 5) + (31 - Math.clz32(t)));
        x ^= t;
      }
    }
  }

  /** Set pages in increasing order. */
  *[Symbol.iterator](): IterableIterator<number> {
    const w = this.words;
    for (let k = 0; k < w.length; k++) {
      let x = w[k];
      while (x !== 0) {
        const t = x & -x;
        yield (k << 5) + (31 - Math.clz32(t));
        x ^= t;
      }
    }
  }

  /**
   * Runs of consecutive set pages as [start, end) pairs, in increasing order, each at most
   * `maxRun` pages long (a longer run is split).
   */
  runs(maxRun = Number.MAX_SAFE_INTEGER): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    this.forEachRun((s, e) => {
      for (let a = s; a < e; a += maxRun) out.push([a, Math.min(e, a + maxRun)]);
    });
    return out;
  }

  /** Calls fn(start, end) for each maximal run of set pages. */
  forEachRun(fn: (start: number, end: number) => void): void {
    const w = this.words;
    let runStart = -1;
    for (let k = 0; k < w.length; k++) {
      const x = w[k];
      if (x === 0) {
        if (runStart >= 0) {
          fn(runStart, k << 5);
          runStart = -1;
        }
        continue;
      }
      if (x === 0xffffffff) {
        if (runStart < 0) runStart = k << 5;
        continue;
      }
      for (let bit = 0; bit < 32; bit++) {
        const on = (x & (1 << bit)) !== 0;
        const i = (k << 5) + bit;
        if (on && runStart < 0) runStart = i;
        else if (!on && runStart >= 0) {
          fn(runStart, i);
          runStart = -1;
        }
      }
    }
    if (runStart >= 0) fn(runStart, Math.min(this._size, w.length << 5));
  }

  private check(i: number): void {
    if (!(i >= 0 && i < this._size)) throw new RangeError(`page ${i} outside bitmap of ${this._size} pages`);
  }

  private sameSize(other: PageBitmap): void {
    if (other._size !== this._size) {
      throw new RangeError(`bitmap sizes differ: ${this._size} and ${other._size} pages`);
    }
  }

  private maskTail(): void {
    const rem = this._size & 31;
    if (rem !== 0) this.words[this.words.length - 1] &= ((1 << rem) >>> 0) - 1;
  }
}

function wordsFor(size: number): number {
  return (size + 31) >>> 5;
}

export function popcount32(x: number): number {
  x = x - ((x >>> 1) & 0x55555555);
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}
