import { PageBitmap } from '../src/index.js';

/** Seeded PRNG (xorshift32) so the synthetic traces are the same on every run. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
}

export interface Planted {
  totalPages: number;
  states: number;
  regionPages: number;
  /** The hot regions, visited in this cycle. */
  cycle: number[];
  /** The hot pages of each cycle region (the LWWS that should be found). */
  hotPages: Map<number, number[]>;
}

/**
 * A trace with known structure: the hot spot cycles through `cycle` (A -> B -> C -> A ...), `dwell`
 * samples in each; in its region a fixed set of `hotPerRegion` hot pages is written in every
 * sample, plus `noise` random pages anywhere (background). `skip` samples are left out at the
 * start, so a trace can continue another one made with the same seed.
 */
export function plantedTrace(opts: {
  totalPages: number;
  states: number;
  cycle: number[];
  dwell: number;
  samples: number;
  hotPerRegion: number;
  noise: number;
  seed: number;
  skip?: number;
}): { samples: PageBitmap[]; planted: Planted } {
  const r = rng(opts.seed);
  const regionPages = Math.floor(opts.totalPages / opts.states);
  const hotPages = new Map<number, number[]>();
  for (const reg of opts.cycle) {
    const set = new Set<number>();
    while (set.size < opts.hotPerRegion) set.add(reg * regionPages + Math.floor(r() * regionPages));
    hotPages.set(
      reg,
      [...set].sort((a, b) => a - b),
    );
  }
  const samples: PageBitmap[] = [];
  const skip = opts.skip ?? 0;
  for (let i = 0; i < skip + opts.samples; i++) {
    const reg = opts.cycle[Math.floor(i / opts.dwell) % opts.cycle.length];
    const b = new PageBitmap(opts.totalPages);
    for (const p of hotPages.get(reg)!) b.set(p);
    for (let k = 0; k < opts.noise; k++) b.set(Math.floor(r() * opts.totalPages));
    if (i >= skip) samples.push(b);
  }
  return { samples, planted: { totalPages: opts.totalPages, states: opts.states, regionPages, cycle: opts.cycle, hotPages } };
}
