import { PageBitmap } from './page-bitmap.js';

/** QEMU's cpu-throttle parameters, in percent, and how often it may raise the throttle. */
export interface ThrottleParams {
  initial: number;
  increment: number;
  max: number;
  /**
   * Weigh writes against sends over periods of at least this many ms (QEMU_PERIOD_MS is QEMU's);
   * 0 or absent: every round on its own, forecopy's default (see ThrottleSchedule).
   */
  periodMs?: number;
}

/** QEMU's cpu-throttle-initial 20, cpu-throttle-increment 10, max-cpu-throttle 99; weighed every round. */
export const QEMU_THROTTLE: Readonly<ThrottleParams> = Object.freeze({ initial: 20, increment: 10, max: 99 });

/** Rounds left over for the throttle's highest when rounds are paced (ThrottleSchedule.paceMs). */
const PACE_SPARE_ROUNDS = 2;

/** The period over which QEMU weighs writes against sends (migration_bitmap_sync: more than 1 s). */
export const QEMU_PERIOD_MS = 1000;

/**
 * When auto-converge throttles, and how much: QEMU's rule (migration/ram.c,
 * migration_trigger_throttle). It weighs the pages written against the pages sent (more than
 * half is high: throttle-trigger-threshold 50); every second high weighing raises the throttle,
 * to `initial` the first time and by `increment` after, at most `max`.
 *
 * When it weighs: QEMU at the end of the first pass over memory that ends more than 1 s after it
 * last weighed, over everything since (migration_bitmap_sync), so that short passes do not
 * raise it sooner; with `periodMs` this does the same, and rounds are paced to the period while
 * the throttle rises (paceMs). By default it weighs every round: QEMU iterates until the rest
 * fits its limit however long that takes, while forecopy stops after its round cap (30); each
 * round weighed, the throttle keeps pace with the rounds and no round need be longer than it
 * is. (BENCHMARKS.md, session 16, compares the two.) The live agent applies the percent to the
 * process (a CPU quota), the simulator to the trace's writes (thinWrites): one rule for both.
 */
export class ThrottleSchedule {
  percent = 0;
  private highPeriods = 0;
  private readonly periodMs: number;
  private periodStart: number;
  private sent = 0;
  private dirtied = 0;
  /** Whether the last period weighed was high. */
  private lastHigh = false;

  /** `startMs`: when the migration began, on the clock the rounds' ends are given in. */
  constructor(
    readonly params: ThrottleParams,
    startMs = 0,
  ) {
    this.periodMs = params.periodMs ?? 0;
    if (!(this.periodMs >= 0)) throw new RangeError(`the throttle's period must be >= 0 ms, got ${params.periodMs}`);
    this.periodStart = startMs;
  }

  /**
   * The high weighings still needed before the throttle is at its highest (every second one
   * raises it): rounds, when each round is weighed; 0 once it is there.
   */
  get weighingsToMax(): number {
    const { initial, increment, max } = this.params;
    if (this.percent >= max) return 0;
    const raises = this.percent === 0 ? 1 + Math.ceil((max - initial) / increment) : Math.ceil((max - this.percent) / increment);
    return Math.max(0, 2 * raises - this.highPeriods);
  }

  /**
   * The rounds still needed before the throttle is at its highest, if every one is high: the
   * weighings, when each round is weighed; unknown (undefined) when it weighs periods, which may
   * hold many rounds each until the rounds are paced (paceMs).
   */
  get roundsToMax(): number | undefined {
    return this.periodMs > 0 ? undefined : this.weighingsToMax;
  }

  /** After a round that ended at `nowMs`: the throttle for the rounds that follow. */
  afterRound(pagesSent: number, pagesDirtied: number, nowMs: number): number {
    this.sent += pagesSent;
    this.dirtied += pagesDirtied;
    if (!(nowMs > this.periodStart + this.periodMs)) return this.percent;
    const high = this.dirtied > this.sent / 2;
    this.lastHigh = high;
    this.periodStart = nowMs;
    this.sent = 0;
    this.dirtied = 0;
    if (!high || ++this.highPeriods < 2) return this.percent;
    this.highPeriods = 0;
    this.percent = this.percent === 0 ? this.params.initial : Math.min(this.params.max, this.percent + this.params.increment);
    return this.percent;
  }

  /**
   * How much longer the round that is running should last, ms, from `nowMs`. Weighed every round
   * (no period) the throttle keeps pace with the rounds: 0. Weighed over periods, as QEMU does,
   * short rounds (a filter that holds pages back waits only a sample) can spend forecopy's round
   * cap in a second or two with the throttle hardly raised, where QEMU, which has no round cap,
   * goes on until it rises. So once the rounds the cap still allows after this one
   * (`roundsAfter`), a period each, are no more than the throttle needs to reach its highest and
   * two rounds more (to send what was held back, and the rest), and while the throttle is rising
   * (the period under way is high so far, or else the last one was: QEMU's own measure), a round
   * lasts until its end can be weighed (more than a period after the last weighing): the
   * throttle then rises every second round. Before that the rounds run as they are (a round
   * made longer holds more writes), and 0 once the throttle is at its highest.
   */
  paceMs(nowMs: number, roundsAfter: number): number {
    if (this.periodMs === 0 || this.percent >= this.params.max || roundsAfter < 1) return 0;
    if ((roundsAfter - PACE_SPARE_ROUNDS) * this.periodMs > this.maxInMs(nowMs)) return 0;
    const rising = this.sent + this.dirtied > 0 ? this.dirtied > this.sent / 2 : this.lastHigh;
    return rising ? Math.max(0, this.periodStart + this.periodMs + 1 - nowMs) : 0;
  }

  /** The soonest the throttle can reach its highest, ms after `nowMs`, if every period from now on is high. */
  private maxInMs(nowMs: number): number {
    const { initial, increment, max } = this.params;
    const steps = this.percent === 0 ? 1 + Math.ceil(Math.max(0, max - initial) / increment) : Math.ceil((max - this.percent) / increment);
    // The period under way, then two a step (every second high period raises it), less one if one is counted.
    const periodLeft = Math.max(0, this.periodStart + this.periodMs - nowMs);
    return periodLeft + (2 * steps - 1 - this.highPeriods) * this.periodMs;
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
