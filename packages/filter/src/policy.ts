import { PageBitmap } from './page-bitmap.js';

// The pre-copy loop of the paper's Fig. 3 (lines 2-12) as one pure module.
//
// The live source agent and the trace simulator drive the very same `PrecopyDriver`: they tell
// it what was dirtied during each round and how long the round took; it decides the next round's
// send list (through a `Policy`, the paper's DataFilter) and when to stop.
//
//   unsynced := all pages                       (round 1)
//   loop:
//     (send, held) := policy.plan(unsynced)     DataFilter: held = the forecast filter list
//     dirtied := SendData(send)                 the caller sends, the tracker reports writes
//     unsynced := dirtied ∪ held
//     stop when a stop rule fires               then stop-and-copy sends `unsynced`
//
// Page indices are positions in the session's linear page space (every migrated mapping's pages
// laid end to end); the driver never sees addresses.

/** When the iterative phase ends. Defaults are old Xen's (libxc): 30 rounds, 50 pages, 3x. */
export interface StopRules {
  /** Stop after this many rounds (the last iterative round is round `maxRounds`). */
  maxRounds: number;
  /** Stop when fewer than this many pages remain unsynchronized. */
  minRemainingPages: number;
  /** Stop when pages sent reach this multiple of the memory size. */
  maxFactor: number;
  /**
   * QEMU's rule, optional: stop when the unsynchronized pages would take at most this long at the
   * measured page rate.
   */
  downtimeLimitMs?: number;
}

export const XEN_DEFAULT_STOP_RULES: Readonly<StopRules> = Object.freeze({
  maxRounds: 30,
  minRemainingPages: 50,
  maxFactor: 3,
});

/**
 * The downtime limit's stop after round 1 counts the rest as sent at round 1's rate divided by
 * this: round 1's rate is that of memory in address order, and the final round sends pages
 * written here and there, which go slower (1 GiB hotspot: 342 ms sent where round 1's rate
 * forecast 270, 1.27x). From round 2 on the rate is measured on written pages and counts as it
 * is. A process whose whole rest fits this early (a small one) stops after one round, as QEMU's
 * does, instead of resending in round 2 the pages it writes all the time.
 */
export const ROUND1_RATE_MARGIN = 2;

/** The rate QEMU's rule counts the rest at after round `round`: 1 / ROUND1_RATE_MARGIN of `pageRate` after round 1. */
export function limitRate(pageRate: number, round: number): number {
  return round >= 2 ? pageRate : pageRate / ROUND1_RATE_MARGIN;
}

/**
 * QEMU's rule after round `round`: whether `pages` left to send, at `pageRate` pages a second
 * (counted at limitRate), plus `fixedMs`, fit `limitMs`.
 */
export function restFitsLimit(pages: number, pageRate: number, fixedMs: number, limitMs: number, round: number): boolean {
  if (!(pageRate > 0)) return false;
  return (pages / limitRate(pageRate, round)) * 1000 + fixedMs <= limitMs;
}

export type StopReason = 'max-rounds' | 'min-remaining' | 'max-factor' | 'downtime-limit';

/** What a policy knows when it plans a round. */
export interface RoundContext {
  /** 1-based number of the round being planned. */
  round: number;
  /** Measured link rate in pages per second (0 before anything was measured). */
  pageRate: number;
  /** Milliseconds since the migration began (monotonic clock of the caller). */
  nowMs: number;
  /**
   * Auto-converge's throttle in force, percent (0 or absent: none): the process runs only the
   * rest of the time, so it writes that much less per second than its samples before showed.
   */
  throttlePercent?: number;
  /**
   * Auto-converge's highest throttle, percent (absent: no auto-converge). Below it, a round that
   * writes more than half of what it sends counts towards raising the throttle.
   */
  throttleMaxPercent?: number;
  /**
   * How fast the process ran under the throttle `ranAtPercent`, measured: the CPU it used against
   * what it used before it was throttled, in (0, 1] (absent: not measured; 100% less the throttle
   * is assumed). A program paced by the clock may make up for a duty cycle's stops and run at 1.
   * Where it was measured over several throttles, `ranAtPercent` is their average, weighed by
   * time (a fraction).
   */
  ranShare?: number;
  ranAtPercent?: number;
  /**
   * The rounds auto-converge still needs before its throttle is at the highest, if each is high
   * (ThrottleSchedule.roundsToMax; absent: unknown, as when it weighs periods).
   */
  throttleRoundsToMax?: number;
  /** The downtime's fixed costs as last forecast (RoundOutcome.fixedDowntimeMs), ms; the limit counts them. */
  fixedDowntimeMs?: number;
  /**
   * The pages mapped now (set by the driver): old Xen's data cap is maxFactor times these, not
   * the index space, which keeps the indices of mappings that vanished (RoundOutcome.live).
   */
  memoryPages?: number;
}

/** The outcome of one round, reported by whoever sent it. */
export interface RoundOutcome {
  /** Pages actually sent in the round. */
  pagesSent: number;
  /** Pages of the send list skipped by a per-batch rule (xen-skip). They stay unsynchronized. */
  pagesSkipped: number;
  /** Pages written while the round ran (from its start to its end). */
  dirtied: PageBitmap;
  durationMs: number;
  /** Link rate measured over the round, pages per second. */
  pageRate: number;
  /**
   * The downtime's costs that do not depend on the pages left (freeze, last scan, verification,
   * handover), as forecast now, ms; the downtime limit counts them. 0 when not given.
   */
  fixedDowntimeMs?: number;
  /**
   * The page indices mapped when the round ended, where mappings may have come and gone (the
   * live agent's page space, a trace's): a page whose mapping vanished is no longer
   * unsynchronized, and old Xen's rule of 3x the memory counts the pages mapped. Absent: every
   * index of the space is mapped.
   */
  live?: PageBitmap;
}

/** A plan for one round: what to send now and what the policy holds back for later. */
export interface RoundPlan {
  round: number;
  send: PageBitmap;
  held: PageBitmap;
}

/** What the driver records of each iterative round. */
export interface RoundRecord {
  round: number;
  /** Pages planned to be sent (send list after the filter). */
  pagesPlanned: number;
  pagesSent: number;
  /** Pages held back by the policy's filter plus pages skipped by a per-batch rule. */
  pagesFiltered: number;
  pagesDirtied: number;
  durationMs: number;
}

/**
 * One round as a migration reports it, the stop-and-copy round included: the simulator's rounds
 * (SimReport) and, with the bytes on the wire, the live agent's (its RoundReport).
 */
export interface RoundSummary {
  round: number;
  /** Pages sent in the round (after the filter and any per-batch skip). */
  pagesSent: number;
  /** Pages written while the round ran (0 for the stop-and-copy round: the process is frozen). */
  pagesDirtied: number;
  /** Pages held back by the policy's filter plus pages skipped before a batch. */
  pagesFiltered: number;
  durationMs: number;
  /** True for the stop-and-copy round (the process was frozen). */
  final: boolean;
}

/** The summary of an iterative round the driver recorded. */
export function summarizeRound(r: RoundRecord): RoundSummary {
  return {
    round: r.round,
    pagesSent: r.pagesSent,
    pagesDirtied: r.pagesDirtied,
    pagesFiltered: r.pagesFiltered,
    durationMs: r.durationMs,
    final: false,
  };
}

/** The summary of the stop-and-copy round: nothing is written or held back any more. */
export function finalRoundSummary(round: number, pagesSent: number, durationMs: number): RoundSummary {
  return { round, pagesSent, pagesDirtied: 0, pagesFiltered: 0, durationMs, final: true };
}

export type RoundDecision = { kind: 'round'; plan: RoundPlan } | { kind: 'stop'; reason: StopReason; remaining: PageBitmap };

/**
 * A data filter: decides which of the unsynchronized pages to hold back this round. Plain
 * pre-copy holds back nothing.
 */
export interface Policy {
  readonly name: string;
  /**
   * Returns the pages of `unsynced` to hold back this round (a subset of it). Must not modify
   * `unsynced`.
   */
  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap;
  /**
   * Per-batch rule (Xen's to_skip): when true, the sender skips pages of each batch that were
   * already written again during the current round.
   */
  readonly skipRedirtied?: boolean;
  /**
   * Sees every dirty sample (one per sampling interval), in order, while the migration runs;
   * with `live`, the pages mapped at that sample (the live agent's page space, a trace's).
   */
  observeSample?(sample: PageBitmap, atMs: number, live?: PageBitmap): void;
  /** Sees each finished round. */
  observeRound?(record: RoundRecord, dirtied: PageBitmap): void;
  /**
   * Under a downtime limit, asked when the rest first fits it (the driver would stop): true runs
   * one more round instead, planned as any other (`ctx` is that round's). The other stop rules
   * are not asked.
   */
  extendPastFit?(unsynced: PageBitmap, ctx: RoundContext): boolean;
  /** Called when the page space grows or shrinks; bitmaps of the old size must be resized. */
  resize?(totalPages: number): void;
  /** Policy-specific facts for the report (model status, fallback, costs). */
  status?(): Record<string, unknown>;
  /**
   * For a forecasting policy: the state the process is in now and the `steps` states forecast to
   * follow it (the live dashboard shows them).
   */
  currentForecast?(steps: number): { state: number; forecast: number[] };
}

/** Plain pre-copy: hold nothing back. */
export class PrecopyPolicy implements Policy {
  readonly name = 'precopy';
  holdBack(unsynced: PageBitmap): PageBitmap {
    return new PageBitmap(unsynced.size);
  }
}

/**
 * Drives the iterative phase. One instance per migration.
 */
export class PrecopyDriver {
  private totalPages: number;
  private round = 0;
  private totalSent = 0;
  private current: RoundPlan | null = null;
  readonly records: RoundRecord[] = [];

  constructor(
    totalPages: number,
    readonly rules: StopRules,
    readonly policy: Policy,
  ) {
    validateRules(rules);
    this.totalPages = totalPages;
  }

  get pages(): number {
    return this.totalPages;
  }

  /** Pages sent so far over all rounds. */
  get pagesSent(): number {
    return this.totalSent;
  }

  /**
   * Round 1: every page is unsynchronized (or those of `pages`, where the space already holds
   * indices that are not mapped); the policy may already hold some back.
   */
  firstRound(ctx: Omit<RoundContext, 'round'>, pages?: PageBitmap): RoundPlan {
    if (this.round !== 0) throw new Error('firstRound() called twice');
    if (pages && pages.size !== this.totalPages) throw new RangeError(`round 1 has ${pages.size} pages, space has ${this.totalPages}`);
    return this.plan(pages ? pages.clone() : PageBitmap.full(this.totalPages), {
      ...ctx,
      round: 1,
      memoryPages: pages ? pages.count() : this.totalPages,
    });
  }

  /**
   * The page space changed size between rounds (mappings appeared or vanished). Pages past the
   * old size are new; the caller reports them as dirtied in the next outcome.
   */
  resize(totalPages: number): void {
    if (totalPages === this.totalPages) return;
    this.totalPages = totalPages;
    if (this.current) {
      this.current = {
        round: this.current.round,
        send: this.current.send.resized(totalPages),
        held: this.current.held.resized(totalPages),
      };
    }
    this.policy.resize?.(totalPages);
  }

  /** Reports how the current round went and gets the next round or the decision to stop. */
  endRound(outcome: RoundOutcome, ctx: Omit<RoundContext, 'round'>): RoundDecision {
    const cur = this.current;
    if (!cur) throw new Error('endRound() before firstRound()');
    if (outcome.dirtied.size !== this.totalPages) {
      throw new RangeError(`dirtied bitmap has ${outcome.dirtied.size} pages, space has ${this.totalPages}`);
    }
    if (outcome.live && outcome.live.size !== this.totalPages) {
      throw new RangeError(`live bitmap has ${outcome.live.size} pages, space has ${this.totalPages}`);
    }
    this.totalSent += outcome.pagesSent;
    const record: RoundRecord = {
      round: cur.round,
      pagesPlanned: cur.send.count(),
      pagesSent: outcome.pagesSent,
      pagesFiltered: cur.held.count() + outcome.pagesSkipped,
      pagesDirtied: outcome.dirtied.count(),
      durationMs: outcome.durationMs,
    };
    this.records.push(record);
    this.policy.observeRound?.(record, outcome.dirtied);

    // Paper line 10: unsyn := |filterlist| + |dirtylist| (as a union: a held page that was also
    // written is one page to send, not two).
    const unsynced = outcome.dirtied.clone().or(cur.held);
    if (outcome.live) unsynced.and(outcome.live);
    const memory = outcome.live ? outcome.live.count() : this.totalPages;
    const reason = this.stopReason(unsynced.count(), memory, outcome.pageRate || ctx.pageRate, outcome.fixedDowntimeMs ?? 0);
    const fixed = outcome.fixedDowntimeMs !== undefined ? { fixedDowntimeMs: outcome.fixedDowntimeMs } : {};
    const next: RoundContext = { ...ctx, ...fixed, round: cur.round + 1, memoryPages: memory };
    if (reason && !(reason === 'downtime-limit' && this.policy.extendPastFit?.(unsynced, next))) {
      this.current = null;
      return { kind: 'stop', reason, remaining: unsynced };
    }
    return { kind: 'round', plan: this.plan(unsynced, next) };
  }

  private plan(unsynced: PageBitmap, ctx: RoundContext): RoundPlan {
    const held = this.policy.holdBack(unsynced, ctx);
    if (held.size !== unsynced.size) {
      throw new RangeError(`policy ${this.policy.name} returned a filter list of ${held.size} pages for ${unsynced.size}`);
    }
    held.and(unsynced); // a policy may only hold back what is unsynchronized
    const send = unsynced.clone().andNot(held);
    this.round = ctx.round;
    this.current = { round: ctx.round, send, held };
    return this.current;
  }

  private stopReason(unsynced: number, memoryPages: number, pageRate: number, fixedMs: number): StopReason | null {
    const r = this.rules;
    if (this.round >= r.maxRounds) return 'max-rounds';
    if (unsynced < r.minRemainingPages) return 'min-remaining';
    if (this.totalSent >= r.maxFactor * memoryPages) return 'max-factor';
    if (r.downtimeLimitMs !== undefined && restFitsLimit(unsynced, pageRate, fixedMs, r.downtimeLimitMs, this.round)) {
      return 'downtime-limit';
    }
    return null;
  }
}

function validateRules(r: StopRules): void {
  if (!Number.isInteger(r.maxRounds) || r.maxRounds < 1) throw new RangeError(`maxRounds must be a whole number >= 1, got ${r.maxRounds}`);
  if (!(r.minRemainingPages >= 0)) throw new RangeError(`minRemainingPages must be >= 0, got ${r.minRemainingPages}`);
  if (!(r.maxFactor > 0)) throw new RangeError(`maxFactor must be > 0, got ${r.maxFactor}`);
  if (r.downtimeLimitMs !== undefined && !(r.downtimeLimitMs > 0)) {
    throw new RangeError(`downtimeLimitMs must be > 0, got ${r.downtimeLimitMs}`);
  }
}
