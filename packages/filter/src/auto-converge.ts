import { PageBitmap } from './page-bitmap.js';

/** QEMU's cpu-throttle parameters, in percent. */
export interface ThrottleParams {
  initial: number;
  increment: number;
  max: number;
}

export const QEMU_THROTTLE: Readonly<ThrottleParams> = Object.freeze({ initial: 20, increment: 10, max: 99 });

/**
 * When auto-converge throttles, and how much: QEMU's rule. A round whose written pages exceed
 * half of the pages it sent (throttle-trigger-threshold 50) counts; every second such round
 * raises the throttle, to `initial` the first time and by `increment` after, at most `max`. The
 * live agent applies the percent to the process (a CPU quota), the simulator to the trace's
 * writes (thinWrites): one rule for both.
 */
export class ThrottleSchedule {
  percent = 0;
  private highRounds = 0;

  constructor(readonly params: ThrottleParams) {}

  /** After a round: the throttle for the rounds that follow. */
  afterRound(pagesSent: number, pagesDirtied: number): number {
    if (!(pagesDirtied > pagesSent / 2)) return this.percent;
    if (++this.highRounds < 2) return this.percent;
    this.highRounds = 0;
    this.percent = this.percent === 0 ? this.params.initial : Math.min(this.params.max, this.percent + this.params.increment);
    return this.percent;
  }
}

/**
 * The writes of a sample taken while the process was throttled by `percent`: it ran (100 -
 * percent)% of the time, so it wrote about that share of the pages it would have. Which pages is
 * decided by a hash of the page and the sample's time, so the thinning is the same every run.
 */
export function thinWrites(pages: PageBitmap, percent: number, atMs: number): PageBitmap {
  if (percent <= 0) return pages;
  const keep = (100 - percent) / 100;
  const out = new PageBitmap(pages.size);
  const salt = Math.imul(Math.round(atMs * 1000) | 0, 0x9e3779b1);
  for (const p of pages) {
    let h = Math.imul(p ^ salt, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    if ((h >>> 0) / 0x100000000 < keep) out.set(p);
  }
  return out;
}
