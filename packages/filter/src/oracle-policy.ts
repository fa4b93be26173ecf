import { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundContext } from './policy.js';
import { simClock, simulate, type SimClock, type SimOptions, type SimReport } from './simulator.js';
import type { Trace } from './trace-format.js';

/**
 * What the clairvoyant filter holds back (for the simulator only: it reads the trace's future).
 * - `send-list`: the unsynchronized pages written again during the time the whole send list
 *   would take (a perfect forecast of the paper's kind). It may hold a page that the round,
 *   shorter once pages are held, ends before: such a page is one more page of downtime if the
 *   migration stops there.
 * - `round`: only the pages written again before the round, as it will run with them held,
 *   ends (found as a fixed point: hold H, the round lasts |unsynced - H| / rate, H = what is
 *   written in that time). Every page it holds is dirty again at the round's end anyway, so
 *   holding never adds to what remains.
 */
export type OracleMode = 'send-list' | 'round';

export interface OracleOptions {
  mode: OracleMode;
  /** Hold nothing from this round on (undefined: hold in every round). */
  holdUntilRound?: number;
  /** Also skip pages written during the round, batch by batch. */
  skipRedirtied?: boolean;
  /** send-list: look this many times the send list's time ahead (default 1). */
  horizonFactor?: number;
}

/**
 * The clairvoyant filter. `boundedOracle` (in the simulator's caller) runs it in several modes
 * and picks the fewest pages sent at a downtime no higher than pre-copy's: the bound a filter's
 * saving is reported as a share of.
 */
export class OraclePolicy implements Policy {
  readonly name = 'oracle';
  readonly skipRedirtied: boolean;
  private readonly opts: OracleOptions;

  constructor(
    private readonly clock: SimClock,
    private readonly pageRate: number,
    opts: Partial<OracleOptions> = {},
  ) {
    this.opts = {
      mode: opts.mode ?? 'send-list',
      ...(opts.holdUntilRound !== undefined ? { holdUntilRound: opts.holdUntilRound } : {}),
      horizonFactor: opts.horizonFactor ?? 1,
    };
    this.skipRedirtied = opts.skipRedirtied ?? false;
  }

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const u = unsynced.count();
    if (this.opts.holdUntilRound !== undefined && ctx.round >= this.opts.holdUntilRound) return new PageBitmap(unsynced.size);
    // Written again within that time, or unmapped by its end: either way sent for nothing now.
    const within = (pages: number) => {
      const end = ctx.nowMs + (pages / this.pageRate) * 1000;
      const gone = unsynced.clone().andNot(this.clock.liveView(end, unsynced.size));
      return this.clock.written(ctx.nowMs, end, unsynced.size).and(unsynced).or(gone);
    };
    if (this.opts.mode === 'send-list') return within(u * (this.opts.horizonFactor ?? 1));
    const full = within(u);
    // H1 = W(u - |H0|), H3 = W(u - |H2|), ...: each odd iterate is written within its own round
    // (it is written within a shorter time than its round lasts), and they grow towards the fixed point.
    let held = within(u - full.count());
    for (let i = 0; i < 4; i++) {
      const next = within(u - within(u - held.count()).count());
      if (next.count() === held.count()) break;
      held = next;
    }
    return held;
  }
}

/** The variants boundedOracle tries: each mode, holding in every round or only before round k. */
const VARIANTS: ReadonlyArray<Partial<OracleOptions>> = [
  { mode: 'send-list' },
  { mode: 'send-list', horizonFactor: 2 },
  { mode: 'send-list', horizonFactor: 4 },
  { mode: 'round' },
  { mode: 'round', skipRedirtied: true },
];
const CUTOFFS: ReadonlyArray<number | undefined> = [undefined, 2, 3, 4, 6, 8, 12, 16, 20, 25];

export interface BoundedOracleReport extends SimReport {
  /** The variant that won, e.g. "round, holding before round 8". */
  variant: string;
}

/**
 * The oracle as a bound: the fewest pages sent by a clairvoyant filter (OraclePolicy in each
 * mode, holding in every round or only in the first rounds) whose downtime is no higher than
 * `maxDowntimeMs` (pre-copy's). Pre-copy itself qualifies, so there is always one. It is the best
 * of these strategies, not a proof that no clairvoyant filter sends fewer; a caller that ran
 * online policies too takes the fewest of theirs at that downtime if lower (a clairvoyant filter
 * can do whatever an online one does).
 */
export function boundedOracle(trace: Trace, opts: SimOptions, maxDowntimeMs: number, fallback: SimReport): BoundedOracleReport {
  let best: BoundedOracleReport = { ...fallback, policy: 'oracle', variant: 'pre-copy (no clairvoyant filter did better)' };
  for (const v of VARIANTS) {
    for (const k of CUTOFFS) {
      const clock = simClock(trace, opts);
      const p = new OraclePolicy(clock, opts.pageRate, {
        ...v,
        ...(k !== undefined ? { holdUntilRound: k } : {}),
      });
      const r = simulate(trace, p, opts, clock);
      if (r.downtimeMs <= maxDowntimeMs + 1e-9 && r.pagesSent < best.pagesSent) {
        const ahead = v.horizonFactor ? ` x${v.horizonFactor}` : '';
        best = {
          ...r,
          variant: `${v.mode}${ahead}${v.skipRedirtied ? ' + skip' : ''}${k !== undefined ? `, holding before round ${k}` : ''}`,
        };
      }
    }
  }
  return best;
}
