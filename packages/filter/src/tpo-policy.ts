import { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundRecord } from './policy.js';

export interface TpoOptions {
  /** h: rounds of history looked at. */
  history: number;
  /** k: a page written in at least this many of them is hot. */
  minWrites: number;
}

/**
 * Defaults: hot = written in 2 of the last 3 rounds. One write could be chance, two of three is a
 * habit, and three rounds of memory is short enough to follow a workload whose hot set moves.
 */
export const DEFAULT_TPO_OPTIONS: Readonly<TpoOptions> = Object.freeze({ history: 3, minWrites: 2 });

/**
 * History-based hold-back (after TPO, 2016): an unsynchronized page that is hot (written in at
 * least k of the last h rounds) and was written again in the round just ended is held back.
 *
 * It never starves a page: a held page that stays clean for one round is no longer "written in
 * the round just ended", so it is sent in the next round; a page that keeps being written is held
 * every round and goes in stop-and-copy, which is the trade the rule makes (it would be resent
 * every round otherwise). Per-page state: one byte of counts (256 KiB for 1 GiB) and h bitmaps.
 */
export class TpoPolicy implements Policy {
  readonly name = 'tpo';
  readonly opts: TpoOptions;
  private recent: PageBitmap[] = [];
  private counts: Uint8Array;

  constructor(totalPages: number, opts: Partial<TpoOptions> = {}) {
    this.opts = { ...DEFAULT_TPO_OPTIONS, ...opts };
    const { history, minWrites } = this.opts;
    if (!(Number.isInteger(history) && history >= 1 && history <= 255)) throw new RangeError(`tpo: history must be 1..255, got ${history}`);
    if (!(Number.isInteger(minWrites) && minWrites >= 1 && minWrites <= history))
      throw new RangeError(`tpo: need 1 <= minWrites <= history, got ${minWrites}`);
    this.counts = new Uint8Array(totalPages);
  }

  holdBack(unsynced: PageBitmap): PageBitmap {
    const held = new PageBitmap(unsynced.size);
    const last = this.recent.at(-1);
    if (!last) return held;
    const c = this.counts;
    const min = this.opts.minWrites;
    const candidates = (last.size === unsynced.size ? last.clone() : last.resized(unsynced.size)).and(unsynced);
    candidates.forEach((p) => {
      if (c[p] >= min) held.set(p);
    });
    return held;
  }

  observeRound(_r: RoundRecord, dirtied: PageBitmap): void {
    if (dirtied.size !== this.counts.length) this.resize(dirtied.size);
    this.recent.push(dirtied.clone());
    dirtied.forEach((p) => {
      this.counts[p]++;
    });
    if (this.recent.length > this.opts.history) {
      this.recent.shift()!.forEach((p) => {
        if (p < this.counts.length) this.counts[p]--;
      });
    }
  }

  resize(totalPages: number): void {
    if (totalPages === this.counts.length) return;
    const c = new Uint8Array(totalPages);
    c.set(this.counts.subarray(0, Math.min(totalPages, this.counts.length)));
    this.counts = c;
    this.recent = this.recent.map((b) => b.resized(totalPages));
  }
}
