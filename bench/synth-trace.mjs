#!/usr/bin/env node
// Synthetic dirty traces for forecopy-sim, shaped like the `mw` workload's patterns (workloads/mw.c)
// but made without a process: deterministic (seeded), no root, any length. A sample is the set
// of pages written in one interval.
//   node bench/synth-trace.mjs --pattern seq|hotspot|random|sweep --mb 256 --seconds 180 \
//     [--write-rate 20000] [--interval-ms 50] [--threads 10] [--hot-mb 4] [--dwell-ms 300] [--seed 42] --out FILE
// Patterns, as mw's: seq writes pages 0..n-1 in order and again; random uniform pages; hotspot 90%
// of the writes to uniform pages of a hot zone of --hot-mb that moves every --dwell-ms along a
// fixed cycle of 8 zones, 10% anywhere; sweep is mw --pattern seq --threads N: N writers, each
// sequential in its own slice (N hot regions at once).
import fs from 'node:fs';
import { PageBitmap, encodeTraceHeader, encodeTraceSample } from '../packages/filter/dist/index.js';

const argv = process.argv.slice(2);
const opt = (n, d) => (argv.includes(`--${n}`) ? argv[argv.indexOf(`--${n}`) + 1] : d);
const pattern = opt('pattern', 'seq');
const pages = (Number(opt('mb', 256)) << 20) / 4096;
const seconds = Number(opt('seconds', 180));
const rate = Number(opt('write-rate', 20000));
const intervalMs = Number(opt('interval-ms', 50));
const threads = Number(opt('threads', pattern === 'sweep' ? 10 : 1));
const zonePages = (Number(opt('hot-mb', 4)) << 20) / 4096;
const dwellMs = Number(opt('dwell-ms', 300));
const out = opt('out');
if (!out || !['seq', 'hotspot', 'random', 'sweep'].includes(pattern)) {
  console.error('usage: synth-trace.mjs --pattern seq|hotspot|random|sweep --out FILE [options]');
  process.exit(2);
}
let seed = Number(opt('seed', 42)) >>> 0 || 1;
const rnd = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const zones = Math.floor(pages / zonePages);
const cycle = [];
while (cycle.length < Math.min(8, zones)) {
  const z = Math.floor(rnd() * zones);
  if (!cycle.includes(z)) cycle.push(z);
}
const slice = Math.floor(pages / threads);
const seq = Array.from({ length: threads }, () => 0);
const perSample = (rate * intervalMs) / 1000;
const fd = fs.openSync(out, 'w');
fs.writeSync(
  fd,
  encodeTraceHeader({ intervalMs, pageSize: 4096, meta: { synthetic: { pattern, pages, rate, threads, zonePages, dwellMs } } }),
);
let carry = 0;
for (let i = 0; i <= (seconds * 1000) / intervalMs; i++) {
  const atMs = i * intervalMs;
  const b = new PageBitmap(pages);
  carry += i === 0 ? 0 : perSample;
  const n = Math.floor(carry);
  carry -= n;
  const hot = cycle[Math.floor(atMs / dwellMs) % cycle.length];
  for (let k = 0; k < n; k++) {
    if (pattern === 'random') b.set(Math.floor(rnd() * pages));
    else if (pattern === 'hotspot') b.set(rnd() < 0.9 ? hot * zonePages + Math.floor(rnd() * zonePages) : Math.floor(rnd() * pages));
    else {
      const t = k % threads;
      const len = t === threads - 1 ? pages - t * slice : slice;
      b.set(t * slice + seq[t]);
      seq[t] = (seq[t] + 1) % len;
    }
  }
  fs.writeSync(fd, encodeTraceSample(atMs, b));
}
fs.closeSync(fd);
console.log(`${out}: ${pattern}, ${pages} pages, ${seconds} s of ${intervalMs} ms samples at ${rate} pages/s`);
