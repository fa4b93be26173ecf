import type { PageBitmap } from './page-bitmap.js';
import type { Policy, RoundContext } from './policy.js';
import type { TraceClock } from './simulator.js';

/**
 * The clairvoyant filter, for the simulator only: it reads the trace's future. At the start of a
 * round it holds back exactly the unsynchronized pages that will be written again during the
 * time the whole send list would take, which is what a perfect forecast of the paper's kind
 * would hold back. No forecaster can know more about the round; savings are reported as a share
 * of its.
 */
export class OraclePolicy implements Policy {
  readonly name = 'oracle';

  constructor(
    private readonly clock: TraceClock,
    private readonly pageRate: number,
  ) {}

  holdBack(unsynced: PageBitmap, ctx: RoundContext): PageBitmap {
    const sendMs = (unsynced.count() / this.pageRate) * 1000;
    return this.clock.written(ctx.nowMs, ctx.nowMs + sendMs, unsynced.size).and(unsynced);
  }
}
