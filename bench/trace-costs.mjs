#!/usr/bin/env node
// The data filter's costs on a recorded workload (the paper's Table 1, per workload): the
// trace's real 50 ms samples go through the same code the live agent runs.
//   modelling: ModelBuilder.observe per sample over the first --model-seconds (compute only; the
//              sampling interval itself, 50 ms, comes on top, as in the paper's ~60 ms per state)
//   build:     ModelBuilder.build once
//   migration: MarkovPolicy.observeSample per later sample (current state + fit test), and
//              holdBack (forecast + filter) once per --round-samples samples, the send list being
//              every page written since the previous round
//   forecast:  ForecastPolicy over every sample, shown the pages mapped then (as the live agent
//              shows it), planning once per --round-samples samples the pages written since the
//              last plan and still mapped: per sample, per plan, and its memory, at most and at the
//              end, beside the index space and the pages mapped (a process that maps and unmaps as
//              it runs grows the index space; the model's memory follows what is mapped)
//              Before it, its code is compiled as migrate does before tracking (warmUpForecast);
//              --cold leaves that out (the first plan then runs in V8's interpreter)
//   node bench/trace-costs.mjs --trace FILE [--states 256] [--model-seconds 10] [--round-samples 20] [--cold] [--json]
import fs from 'node:fs';
import os from 'node:os';
import {
  ForecastPolicy,
  ModelBuilder,
  MarkovPolicy,
  PageBitmap,
  TraceClock,
  decodeTrace,
  warmUpForecast,
} from '../packages/filter/dist/index.js';

const argv = process.argv.slice(2);
const opt = (n, d) => (argv.includes(`--${n}`) ? argv[argv.indexOf(`--${n}`) + 1] : d);
const file = opt('trace');
if (!file) {
  console.error(
    'usage: node bench/trace-costs.mjs --trace FILE [--states 256] [--model-seconds 10] [--round-samples 20] [--cold] [--json]',
  );
  process.exit(2);
}
const S = Number(opt('states', 256));
const modelSeconds = Number(opt('model-seconds', 10));
const roundSamples = Number(opt('round-samples', 20));
let trace;
try {
  trace = decodeTrace(new Uint8Array(fs.readFileSync(file)));
} catch (e) {
  console.error(`trace-costs: cannot read ${file}: ${e.message}`);
  process.exit(2);
}
const N = trace.totalPages;
const samples = trace.samples.map((s) => (s.pages.size === N ? s.pages : s.pages.resized(N)));
const t0 = trace.samples[0]?.atMs ?? 0;
let split = trace.samples.findIndex((s) => s.atMs - t0 >= modelSeconds * 1000);
if (split < 0) split = Math.floor(samples.length / 2);
if (split < 2 || samples.length - split < roundSamples) {
  console.error(
    `trace-costs: ${file} has ${samples.length} samples: too few for ${modelSeconds} s of modelling and one round of ${roundSamples}`,
  );
  process.exit(2);
}

// warm up the JIT on a throw-away builder, then measure
const warm = new ModelBuilder(N, { states: S });
for (const s of samples.slice(0, Math.min(20, split))) warm.observe(s);
const builder = new ModelBuilder(N, { states: S });
const observeMs = [];
for (const s of samples.slice(0, split)) {
  const t = performance.now();
  builder.observe(s);
  observeMs.push(performance.now() - t);
}
const tb = performance.now();
const model = builder.build();
const buildMs = performance.now() - tb;

const policy = new MarkovPolicy(model, { intervalMs: trace.intervalMs });
const pageRate = 500e6 / 8 / trace.pageSize; // 500 Mbit/s
const sampleMs = [];
const roundMs = [];
let held = 0;
let sendList = new PageBitmap(N);
for (let i = split; i < samples.length; i++) {
  const t = performance.now();
  policy.observeSample(samples[i], trace.samples[i].atMs);
  sampleMs.push(performance.now() - t);
  sendList.or(samples[i]);
  if ((i - split + 1) % roundSamples === 0) {
    const tr = performance.now();
    held += policy.holdBack(sendList, { round: roundMs.length + 1, pageRate, nowMs: trace.samples[i].atMs }).count();
    roundMs.push(performance.now() - tr);
    sendList = new PageBitmap(N);
  }
}
// forecast, over the whole trace with the pages mapped at each sample
const cold = argv.includes('--cold');
const warmUpMs = cold ? 0 : warmUpForecast();
const clock = new TraceClock(trace);
const fc = new ForecastPolicy(N, { intervalMs: trace.intervalMs, initialPageRate: pageRate });
const fcSampleMs = [];
const fcRoundMs = [];
let fcBytesMax = 0;
let fcSend = new PageBitmap(N);
let live = null;
for (let i = 0; i < samples.length; i++) {
  const at = trace.samples[i].atMs;
  live = clock.liveView(at, N);
  const t = performance.now();
  fc.observeSample(samples[i], at, live);
  fcSampleMs.push(performance.now() - t);
  fcSend.or(samples[i]);
  if ((i + 1) % roundSamples === 0) {
    fcSend.and(live);
    const tr = performance.now();
    fc.holdBack(fcSend, { round: fcRoundMs.length + 2, pageRate, nowMs: at, memoryPages: live.count() });
    fcRoundMs.push(performance.now() - tr);
    fcSend = new PageBitmap(N);
  }
  if (i % 20 === 0 || i === samples.length - 1) fcBytesMax = Math.max(fcBytesMax, fc.status().modelBytes);
}
const sum = (a) => a.reduce((x, y) => x + y, 0);
const avg = (a) => (a.length ? sum(a) / a.length : 0);
const result = {
  trace: file,
  pages: N,
  states: S,
  samples: samples.length,
  modelSamples: split,
  modellingMsPerSample: avg(observeMs),
  modellingMsMax: Math.max(...observeMs),
  buildMs,
  modelBytes: model.byteSize(),
  builderBytes: builder.byteSize(),
  observeMsPerSample: avg(sampleMs),
  forecastFilterMsPerRound: avg(roundMs),
  forecastFilterMsMax: Math.max(...roundMs),
  rounds: roundMs.length,
  heldPages: held,
  forecastWarmUpMs: warmUpMs,
  forecastMsPerSample: fcSampleMs.length ? fcSampleMs.reduce((x, y) => x + y, 0) / fcSampleMs.length : 0,
  forecastMsPerSampleMax: Math.max(...fcSampleMs),
  forecastMsPerRound: fcRoundMs.length ? fcRoundMs.reduce((x, y) => x + y, 0) / fcRoundMs.length : 0,
  forecastMsPerRoundMax: fcRoundMs.length ? Math.max(...fcRoundMs) : 0,
  forecastBytesMax: fcBytesMax,
  forecastBytesEnd: fc.status().modelBytes,
  pagesMappedAtEnd: live ? live.count() : N,
  machine: `${os.cpus()[0].model}, ${os.cpus().length} cores; Node ${process.version}`,
};
if (argv.includes('--json')) {
  console.log(JSON.stringify(result, null, 2));
} else {
  console.log(
    `Command: node bench/trace-costs.mjs --trace ${file} --states ${S} --model-seconds ${modelSeconds} --round-samples ${roundSamples}${cold ? ' --cold' : ''}`,
  );
  console.log(`Machine: ${result.machine}\n`);
  console.log('| measure | value |');
  console.log('| --- | --- |');
  console.log(`| pages in the trace / S | ${N.toLocaleString('en-US')} / ${S} |`);
  console.log(
    `| modelling compute per 50 ms sample (avg / max over ${split}) | ${result.modellingMsPerSample.toFixed(3)} / ${result.modellingMsMax.toFixed(3)} ms |`,
  );
  console.log(`| building the model | ${buildMs.toFixed(2)} ms |`);
  console.log(`| model memory / builder memory | ${(result.modelBytes / 1e6).toFixed(3)} / ${(result.builderBytes / 1e6).toFixed(3)} MB |`);
  console.log(`| per sample during the migration (state + fit test) | ${result.observeMsPerSample.toFixed(3)} ms |`);
  console.log(
    `| forecast + filter per round (avg / max over ${roundMs.length}) | ${result.forecastFilterMsPerRound.toFixed(3)} / ${result.forecastFilterMsMax.toFixed(3)} ms |`,
  );
  console.log(
    `| forecast: its code compiled before tracking, as migrate does (warmUpForecast, once) | ${cold ? 'left out (--cold)' : `${warmUpMs.toFixed(1)} ms`} |`,
  );
  console.log(
    `| forecast: learning per sample, with the pages mapped (avg / max over ${fcSampleMs.length}) | ${result.forecastMsPerSample.toFixed(3)} / ${result.forecastMsPerSampleMax.toFixed(3)} ms |`,
  );
  console.log(
    `| forecast: planning (avg / max over ${fcRoundMs.length}) | ${result.forecastMsPerRound.toFixed(3)} / ${result.forecastMsPerRoundMax.toFixed(3)} ms |`,
  );
  console.log(
    `| forecast: memory, at most / at the end (index space ${N.toLocaleString('en-US')}, ${result.pagesMappedAtEnd.toLocaleString('en-US')} pages mapped at the end) | ${(result.forecastBytesMax / 1e6).toFixed(3)} / ${(result.forecastBytesEnd / 1e6).toFixed(3)} MB |`,
  );
}
