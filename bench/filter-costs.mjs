#!/usr/bin/env node
// The data filter's costs for a 1 GiB page space at S = 256 (the paper's Table 1 and its
// O(N + S^2) memory): modelling compute per 50 ms sample, forecast + filter per round, model
// memory; and the same for --policy forecast (its model has no S). Samples are synthetic but sized like a busy workload: a hot spot cycling over 8 of the
// 256 regions (dwell 10 samples) with 1,000 pages written per sample, plus 200 random pages.
// Before the forecast's rows its code is compiled as migrate does before tracking (warmUpForecast);
// --cold leaves that out.
//   node bench/filter-costs.mjs [--states 256] [--samples 200] [--cold]
import os from 'node:os';
import {
  ForecastPolicy,
  ModelBuilder,
  MarkovPolicy,
  PageBitmap,
  XEN_DEFAULT_STOP_RULES,
  warmUpForecast,
} from '../packages/filter/dist/index.js';

const argv = process.argv.slice(2);
const opt = (n, d) => (argv.includes(`--${n}`) ? Number(argv[argv.indexOf(`--${n}`) + 1]) : d);
const cold = argv.includes('--cold');
const TOTAL = 262_144; // 1 GiB of 4 KiB pages
const S = opt('states', 256);
const N = opt('samples', 200);
let seed = 7;
const rnd = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
}; // xorshift32
const regionPages = TOTAL / S;
const cycle = Array.from({ length: 8 }, (_, i) => (i * 37 + 5) % S);
const samples = [];
for (let i = 0; i < N; i++) {
  const b = new PageBitmap(TOTAL);
  const z = cycle[Math.floor(i / 10) % cycle.length];
  for (let k = 0; k < 1000; k++) b.set(z * regionPages + Math.floor(rnd() * regionPages));
  for (let k = 0; k < 200; k++) b.set(Math.floor(rnd() * TOTAL));
  samples.push(b);
}
// warm up the JIT, then measure
for (const s of samples.slice(0, 20)) new ModelBuilder(TOTAL, { states: S }).observe(s);
const builder = new ModelBuilder(TOTAL, { states: S });
const t0 = performance.now();
for (const s of samples) builder.observe(s);
const perSample = (performance.now() - t0) / N;
const tb = performance.now();
const model = builder.build();
const buildMs = performance.now() - tb;
const rows = [];
for (const forecast of ['chain', 'visits']) {
  const p = new MarkovPolicy(model, { intervalMs: 50, forecast });
  p.observeSample(samples[N - 1], 0);
  const times = [];
  for (const pages of [TOTAL, 65_536, 8_192, 1_024]) {
    const unsynced = new PageBitmap(TOTAL);
    unsynced.setRange(0, pages);
    for (let r = 0; r < 5; r++) p.holdBack(unsynced, { round: 1, pageRate: 15_258, nowMs: 0 }); // 500 Mbit/s
    const t = performance.now();
    const held = p.holdBack(unsynced, { round: 1, pageRate: 15_258, nowMs: 0 });
    times.push([pages, performance.now() - t, held.count()]);
  }
  rows.push([forecast, times]);
}
console.log(`Command: node bench/filter-costs.mjs --states ${S} --samples ${N}${cold ? ' --cold' : ''}`);
console.log(`Machine: ${os.cpus()[0].model}, ${os.cpus().length} cores; Node ${process.version}\n`);
console.log('| measure | value |');
console.log('| --- | --- |');
console.log(`| modelling compute per 50 ms sample (1 GiB, S = ${S}) | ${perSample.toFixed(3)} ms |`);
console.log(`| building the model from ${N} samples | ${buildMs.toFixed(2)} ms |`);
console.log(`| model memory (byteSize) | ${(model.byteSize() / 1e6).toFixed(3)} MB |`);
console.log(`| builder working memory | ${(builder.byteSize() / 1e6).toFixed(3)} MB |`);
for (const [f, times] of rows)
  for (const [pages, ms, held] of times)
    console.log(
      `| forecast + filter, ${f}, send list of ${pages.toLocaleString('en-US')} pages at 500 Mbit/s | ${ms.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
    );

// --policy forecast: learning per sample (its granularity scoring included), planning per round
// (a worst case: every page unsynchronized and written before), model memory.
const warmUpMs = cold ? 0 : warmUpForecast();
console.log(
  `| forecast: its code compiled before tracking, as migrate does (warmUpForecast, once) | ${cold ? 'left out (--cold)' : `${warmUpMs.toFixed(1)} ms`} |`,
);
const fp = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: 15_258 });
for (const smp of samples.slice(0, 20)) fp.observeSample(smp);
const tf = performance.now();
for (const smp of samples.slice(20)) fp.observeSample(smp);
const fPerSample = (performance.now() - tf) / (N - 20);
const everyPage = new PageBitmap(TOTAL);
everyPage.setRange(0, TOTAL);
const uniform = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: 15_258 });
for (let i = 0; i < 40; i++) uniform.observeSample(everyPage); // every page has a history
console.log(`| forecast: learning per 50 ms sample (1 GiB, 1,200 pages a sample; mean) | ${fPerSample.toFixed(3)} ms |`);
console.log(
  `| forecast: learning a sample that writes all 262,144 pages (median of 9) | ${timeIt(() => uniform.observeSample(everyPage)).toFixed(3)} ms |`,
);
{
  // Under auto-converge's throttle the model counts ages and gaps in the time the process ran:
  // each sample taken then recomputes them for the samples it remembers.
  const slowed = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: 15_258 });
  for (const smp of samples.slice(0, 40)) slowed.observeSample(smp);
  slowed.holdBack(everyPage, { round: 2, pageRate: 15_258, nowMs: 2000, throttlePercent: 80 }); // the round runs at 80%
  let next = 40;
  console.log(
    `| forecast: learning per 50 ms sample under an 80% throttle (1 GiB, 1,200 pages a sample; median of 9) | ${timeIt(() => slowed.observeSample(samples[next++])).toFixed(3)} ms |`,
  );
}
for (const pages of [TOTAL, 65_536, 8_192, 1_024]) {
  const unsynced = new PageBitmap(TOTAL);
  unsynced.setRange(0, pages);
  const ctx = { round: 1, pageRate: 15_258, nowMs: 0 };
  for (const [label, p] of [
    ['hot-spot samples', fp],
    ['every page written', uniform],
  ]) {
    const held = p.holdBack(unsynced, ctx);
    console.log(
      `| forecast: planning a round, ${label}, send list of ${pages.toLocaleString('en-US')} pages (median of 9) | ${timeIt(() => p.holdBack(unsynced, ctx)).toFixed(3)} ms (held ${held.count().toLocaleString('en-US')}) |`,
    );
  }
}
// A round that can be the last under QEMU's 300 ms downtime limit: the pages written while
// everything is sent fit it. A fast link (1,000,000 pages/s, about 4 GB/s) so that even every page
// written fits; the hold is then judged at up to three thresholds. Each call is the policy's first
// such round (after it the policy is converging), so each timed call gets a policy of its own.
for (const [label, learn] of [
  [
    'hot-spot samples',
    (p) => {
      for (const smp of samples.slice(0, 60)) p.observeSample(smp);
    },
  ],
  [
    'every page written',
    (p) => {
      for (let i = 0; i < 40; i++) p.observeSample(everyPage);
    },
  ],
]) {
  const rules = { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 };
  const policies = Array.from({ length: 12 }, () => {
    const p = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: 1_000_000, stopRules: rules });
    learn(p);
    return p;
  });
  const ctx = { round: 2, pageRate: 1_000_000, nowMs: 0 };
  let held = 0;
  const ms = timeIt(() => {
    held = policies.pop().holdBack(everyPage, ctx).count();
  });
  console.log(
    `| forecast: planning a round that can be the last (300 ms limit, 4 GB/s), ${label}, send list of ${TOTAL.toLocaleString('en-US')} pages (median of 9) | ${ms.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
  );
}
// A round at 500 Mbit/s that can be the last: sending all of 1 GiB takes 17 s, far longer than
// the limit, and what a small writer (400 pages a sample among 2,000) writes meanwhile fits it.
// The policy holds back more than the limit's worth to end on a shorter round (splitLast: the
// forecast, and what the process wrote over as many samples as the round lasts).
{
  const rate = 500e6 / 8 / 4096;
  const rules = { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 };
  const small = Array.from({ length: 400 }, () => {
    const b = new PageBitmap(TOTAL);
    for (let k = 0; k < 400; k++) b.set(100_000 + Math.floor(rnd() * 2000));
    return b;
  });
  const policies = Array.from({ length: 12 }, () => {
    const p = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: rate, stopRules: rules });
    for (const smp of small) p.observeSample(smp);
    return p;
  });
  let held = 0;
  const ms = timeIt(() => {
    held = policies.pop().holdBack(everyPage, { round: 2, pageRate: rate, nowMs: 0 }).count();
  });
  console.log(
    `| forecast: planning a round far longer than the limit (300 ms limit, 500 Mbit/s), 400 pages a sample among 2,000, send list of ${TOTAL.toLocaleString('en-US')} pages (median of 9) | ${ms.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
  );
}
// A writer at random over all of 1 GiB (every page written with probability q in each sample):
// pages of every age side by side in each word, the slow path of both learning and planning
// (the rows above have pages of one age per word). Each timed plan gets a policy of its own.
for (const q of [0.05, 0.3]) {
  const rs = Array.from({ length: 52 }, () => {
    const b = new PageBitmap(TOTAL);
    for (let p = 0; p < TOTAL; p++) if (rnd() < q) b.set(p);
    return b;
  });
  const learned = (rate, stopRules) => {
    const p = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: rate, ...(stopRules ? { stopRules } : {}) });
    for (const smp of rs.slice(0, 40)) p.observeSample(smp);
    return p;
  };
  const one = learned(15_258);
  let next = 40;
  const learnMs = timeIt(() => one.observeSample(rs[next++]));
  const label = `a writer at random, ${q * 100}% of the pages a sample`;
  console.log(`| forecast: learning per 50 ms sample, ${label} (median of 9) | ${learnMs.toFixed(3)} ms |`);
  for (const [what, rate, ctx, rules] of [
    ['planning a round at 500 Mbit/s', 15_258, { round: 1, pageRate: 15_258, nowMs: 0 }, undefined],
    [
      'planning a round that can be the last (300 ms limit, 4 GB/s)',
      1_000_000,
      { round: 2, pageRate: 1_000_000, nowMs: 0 },
      { ...XEN_DEFAULT_STOP_RULES, downtimeLimitMs: 300 },
    ],
  ]) {
    const policies = Array.from({ length: 12 }, () => learned(rate, rules));
    let held = 0;
    const ms = timeIt(() => {
      held = policies.pop().holdBack(everyPage, ctx).count();
    });
    console.log(
      `| forecast: ${what}, ${label}, send list of ${TOTAL.toLocaleString('en-US')} pages (median of 9) | ${ms.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
    );
  }
}
{
  // The first round planned under auto-converge's throttle (timed after the rows above, so that
  // their plans run as they did before this row was added): the policy keeps the curve of pages
  // the model forecast written within a share of a sample at full speed (the pace its writes show
  // under the throttle is read on it). Each timed plan gets a policy of its own.
  const policies = Array.from({ length: 12 }, () => {
    const p = new ForecastPolicy(TOTAL, { intervalMs: 50, initialPageRate: 15_258 });
    for (const smp of samples.slice(0, 40)) p.observeSample(smp);
    return p;
  });
  let held = 0;
  const ms = timeIt(() => {
    held = policies.pop().holdBack(everyPage, { round: 2, pageRate: 15_258, nowMs: 2000, throttlePercent: 80 }).count();
  });
  console.log(
    `| forecast: planning the first round under an 80% throttle, hot-spot samples, send list of ${TOTAL.toLocaleString('en-US')} pages (median of 9) | ${ms.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
  );
}
console.log(`| forecast: model memory (byteSize) | ${(fp.model.byteSize() / 1e6).toFixed(3)} MB |`);

// A process that maps and unmaps as it runs: 1 GiB in 4,096 mappings of 64 pages, 4 of them
// replaced each sample (the new ones at new indices past the end, as the live agent's page space
// gives them). Learning a sample with the pages mapped at it (the mapping lifetimes included),
// planning a round over every page mapped, and the memory of both models.
{
  const RUN = 64;
  const SAMPLES = 120;
  const SIZE = TOTAL + SAMPLES * 4 * RUN;
  const live = new PageBitmap(SIZE);
  live.setRange(0, TOTAL);
  const alive = Array.from({ length: TOTAL / RUN }, (_, i) => i * RUN);
  let end = TOTAL;
  const writes = samples.map((s) => s.resized(SIZE));
  const cp = new ForecastPolicy(SIZE, { intervalMs: 50, initialPageRate: 15_258 });
  const step = (k) => {
    for (let j = 0; j < 4; j++) {
      const at = alive.splice(Math.floor(rnd() * alive.length), 1)[0];
      live.clearRange(at, at + RUN);
      live.setRange(end, end + RUN);
      alive.push(end);
      end += RUN;
    }
    cp.observeSample(writes[k % writes.length], k * 50, live);
  };
  let k = 0;
  for (; k < SAMPLES - 12; k++) step(k);
  const churnLearn = timeIt(() => step(k++));
  const ctx = { round: 1, pageRate: 15_258, nowMs: 0 };
  let held = 0;
  const churnPlan = timeIt(() => {
    held = cp.holdBack(live, ctx).count();
  });
  console.log(
    `| forecast: learning per 50 ms sample with the pages mapped (1 GiB in mappings of 64 pages, 4 replaced a sample) (median of 9) | ${churnLearn.toFixed(3)} ms |`,
  );
  console.log(
    `| forecast: planning a round over the ${live.count().toLocaleString('en-US')} pages mapped, mapping lifetimes known (${cp.lifetimes.counts.ended.toLocaleString('en-US')} pages ended) (median of 9) | ${churnPlan.toFixed(3)} ms (held ${held.toLocaleString('en-US')}) |`,
  );
  console.log(
    `| forecast: model memory with the mapping lifetimes (byteSize, that process) | ${(cp.status().modelBytes / 1e6).toFixed(3)} MB |`,
  );
}

/** The median of 9 timed runs after 3 untimed ones (the machine may be shared). */
function timeIt(fn) {
  for (let i = 0; i < 3; i++) fn();
  const times = [];
  for (let i = 0; i < 9; i++) {
    const t = performance.now();
    fn();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b)[4];
}
