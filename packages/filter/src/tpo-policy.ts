import { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundRecord } from './policy.js';

export interface TpoOptions {
  /** Rounds of history looked at. */
  history: number;
  /** A page written in at least this many of them is held back. */
  minWrites: number;
}

/**
 * History-based hold-back (after TPO, 2016): a page written in at least `minWrites` of the last
 * `history` rounds is "hot" and held back until it cools down; it then goes in the first round in
 * which it is no longer hot, or in stop-and-copy. Defaults: 2 of the last 3 rounds: one write
 * could be chance, two of three is a habit, and three rounds of memory is short enough to follow
 * a workload whose hot set moves.
 */
export class TpoPolicy implements Policy {
  readonly name = 'tpo';
  private recent: PageBitmap[] = [];
  private counts: Uint8Array;

  constructor(
    totalPages: number,
    readonly opts: TpoOptions = { history: 3, minWrites: 2 },
  ) {
    if (!(opts.minWrites >= 1 && opts.minWrites <= opts.history)) throw new RangeError('tpo: need 1 <= minWrites <= history');
    this.counts = new Uint8Array(totalPages);
  }

  holdBack(unsynced: PageBitmap): PageBitmap {
    const held = new PageBitmap(unsynced.size);
    const c = this.counts;
    const min = this.opts.minWrites;
    unsynced.forEach((p) => {
      if (c[p] >= min) held.set(p);
    });
    return held;
  }

  observeRound(_r: RoundRecord, dirtied: PageBitmap): void {
    if (dirtied.size !== this.counts.length) this.resize(dirtied.size);
    this.recent.push(dirtied.clone());
    dirtied.forEach((p) => this.counts[p]++);
    if (this.recent.length > this.opts.history) {
      const old = this.recent.shift()!;
      old.forEach((p) => {
        if (p < this.counts.length) this.counts[p]--;
      });
    }
  }

  resize(totalPages: number): void {
    const c = new Uint8Array(totalPages);
    c.set(this.counts.subarray(0, Math.min(totalPages, this.counts.length)));
    this.counts = c;
    this.recent = this.recent.map((b) => b.resized(totalPages));
  }
}
