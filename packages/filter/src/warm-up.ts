import { ForecastPolicy } from './forecast-policy.js';
import { PageBitmap } from './page-bitmap.js';
import { type RoundContext, type StopRules, XEN_DEFAULT_STOP_RULES } from './policy.js';

let warmed = false;

/**
 * Runs forecast's learning and planning code, once per process, on policies of its own over a
 * synthetic 32 Ki-page history, through the paths a migration takes: rounds at a slow link under
 * old Xen's rules up to the round cap, rounds under a downtime limit with auto-converge's throttle
 * rising, and a round that can be the last on a fast link. A migration meets most of those paths
 * once (its first plan, the round cap's, the last round's), and V8 runs code it has not compiled
 * yet in its interpreter or compiles it in the middle of the call. On thirteen recorded programs
 * the first plan took 6-26 ms cold and 0.4-6 ms after this, where most plans take about 1 ms
 * (BENCHMARKS.md, session 27).
 *
 * Call it before tracking starts: it takes the CPU for 0.13-0.2 s here, and a sample taken meanwhile
 * would span that time. Nothing of it is kept: each policy it makes is its own, and no policy's
 * state is shared. Returns the milliseconds it took (0 after the first call).
 */
export function warmUpForecast(): number {
  if (warmed) return 0;
  warmed = true;
  const t0 = performance.now();
  const pages = 1 << 15;
  const samples = syntheticSamples(pages, 40);
  const live = PageBitmap.full(pages);
  const all = PageBitmap.full(pages);
  const limited: StopRules = { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300, maxFactor: Number.POSITIVE_INFINITY };
  const slow = 500e6 / 8 / 4096;
  const runs: Array<{ rules: StopRules; rate: number; rounds: RoundContext[] }> = [
    { rules: XEN_DEFAULT_STOP_RULES, rate: slow, rounds: [1, 2, 3, XEN_DEFAULT_STOP_RULES.maxRounds].map((round) => plain(round, slow)) },
    {
      rules: limited,
      rate: slow,
      rounds: [1, 2, 3, 4, 5].map((round) => ({
        ...plain(round, slow),
        throttlePercent: round < 3 ? 0 : 10 + 10 * round,
        throttleMaxPercent: 99,
        throttleRoundsToMax: 2 * (10 - round),
        fixedDowntimeMs: 20,
        memoryPages: pages,
      })),
    },
    { rules: limited, rate: 1e6, rounds: [plain(2, 1e6)] },
  ];
  for (const { rules, rate, rounds } of runs) {
    const p = new ForecastPolicy(pages, { intervalMs: 50, initialPageRate: rate, stopRules: rules });
    for (const [i, s] of samples.entries()) p.observeSample(s, i * 50, live);
    for (const ctx of rounds) p.holdBack(all, ctx);
  }
  return performance.now() - t0;
}

function plain(round: number, pageRate: number): RoundContext {
  return { round, pageRate, nowMs: round * 1000 };
}

/**
 * Writes of every kind the model meets: a hot spot that moves over eight zones, blocks written
 * whole, and pages at random (pages of many ages side by side in a word). xorshift32, seeded.
 */
function syntheticSamples(pages: number, count: number): PageBitmap[] {
  let seed = 0x9e3779b9;
  const rnd = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 2 ** 32;
  };
  const zone = pages >>> 3;
  return Array.from({ length: count }, (_, i) => {
    const b = new PageBitmap(pages);
    const z = (i >>> 2) % 8;
    for (let k = 0; k < 750; k++) b.set(z * zone + Math.floor(rnd() * zone));
    if (i % 3 === 0) b.setRange(zone, zone + 1024);
    for (let k = 0; k < 1500; k++) b.set(Math.floor(rnd() * pages));
    return b;
  });
}
