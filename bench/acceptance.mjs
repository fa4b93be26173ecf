#!/usr/bin/env node
// Issue 14's acceptance over traces of one's own: for each trace, forecopy-sim at 500 Mbit/s with
// every policy (markov and markov+skip at S = 64..1024, and the bound), under old Xen's rules and
// under QEMU's (a 300 ms downtime limit, auto-converge), then one table per rule with the
// verdicts the issue names and their tally. A row where forecast, pre-copy or the best baseline
// outlasted the trace (it replayed the trace's start again) is marked, and tallied apart: its
// figures judge the trace's length as much as the policy.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SIM = path.join(ROOT, 'packages/source-agent/bin/forecopy-sim.mjs');
const LIMIT_MS = 300;
const RULES = {
  xen: { title: "Old Xen's rules (30 rounds, 3 times the memory, 50 pages)", extra: [] },
  qemu: {
    title: `QEMU's rule (${LIMIT_MS} ms downtime limit, auto-converge)`,
    extra: ['--downtime-limit-ms', String(LIMIT_MS), '--auto-converge', 'on'],
  },
};
const BASELINES = ['xen-skip', 'tpo', 'markov', 'markov+skip'];

const HELP = `usage: node bench/acceptance.mjs [options] TRACE[:SECONDS] ...

Replays each trace (forecopy-source record) through forecopy-sim as issue 14's acceptance does
(--bandwidth 500mbit, every policy, S = 64..1024, the bound), under old Xen's rules and under
QEMU's (--downtime-limit-ms ${LIMIT_MS} --auto-converge on), and prints one Markdown table per rule:
forecast against pre-copy, xen-skip, tpo and the best baseline, with the verdicts and a tally
(under QEMU's rule, with the seconds auto-converge throttled pre-copy and forecast).
SECONDS after a trace is its modelling window (the migration starts there); default 10.

options:
  --out DIR     also write each run's rows there, as NAME.xen.json and NAME.qemu.json
  --jobs N      simulations at a time (default: the number of cores)
  --rules R     xen, qemu or both (default: both)

examples:
  node bench/acceptance.mjs app.trace
  node bench/acceptance.mjs --out /tmp/acc --jobs 2 db.trace build.trace:7.5
  node bench/acceptance.mjs --rules xen e2e/fixtures/mw-64-hotspot.trace:5   # the trace the tests keep`;

class UsageError extends Error {}

function parseArgs(argv) {
  const o = { out: null, jobs: os.availableParallelism?.() ?? os.cpus().length, rules: ['xen', 'qemu'], traces: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--help' || a === '-h') return null;
    else if (a === '--out') o.out = value();
    else if (a === '--jobs') {
      o.jobs = Number(value());
      if (!Number.isInteger(o.jobs) || o.jobs < 1) throw new UsageError(`--jobs must be a whole number >= 1, got ${argv[i]}`);
    } else if (a === '--rules') {
      const r = value();
      if (!['xen', 'qemu', 'both'].includes(r)) throw new UsageError(`--rules must be xen, qemu or both, got ${r}`);
      o.rules = r === 'both' ? ['xen', 'qemu'] : [r];
    } else if (a.startsWith('-')) throw new UsageError(`unknown option ${a}`);
    else o.traces.push(traceArg(a));
  }
  if (o.traces.length === 0) throw new UsageError('no trace given');
  const names = o.traces.map((t) => t.name);
  const twice = names.find((n, i) => names.indexOf(n) !== i);
  if (twice) throw new UsageError(`two traces are named ${twice}: the tables name each trace by its file name`);
  return o;
}

/** TRACE or TRACE:SECONDS, the file checked now rather than by every simulation. */
function traceArg(a) {
  const m = /^(.*):([0-9]+(?:\.[0-9]+)?)$/.exec(a);
  const file = m ? m[1] : a;
  const seconds = m ? Number(m[2]) : 10;
  if (!fs.existsSync(file) || !fs.statSync(file).isFile()) throw new UsageError(`no such trace file: ${file}`);
  return { file, seconds, name: path.basename(file).replace(/\.trace$/, '') };
}

/** The simulations running, stopped if one fails (its message is the answer; the rest would be lost). */
const running = new Set();

/** Runs one simulation; resolves with its rows, rejects with forecopy-sim's own message. */
function simulate(job) {
  const args = [SIM, '--trace', job.trace.file, '--bandwidth', '500mbit', '--model-seconds', String(job.trace.seconds)];
  args.push('--policy', 'precopy,xen-skip,tpo,markov,markov+skip,forecast,oracle', '--states', '64,128,256,512,1024', '--json');
  args.push(...RULES[job.rule].extra);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    const out = [];
    const err = [];
    child.stdout.on('data', (d) => out.push(d));
    child.stderr.on('data', (d) => err.push(d));
    child.on('close', (code) => {
      running.delete(child);
      if (code === 0) resolve(JSON.parse(Buffer.concat(out).toString()));
      else
        reject(
          Object.assign(new Error(`${job.trace.file} (${job.rule}): ${Buffer.concat(err).toString().trim() || `exit ${code}`}`), { code }),
        );
    });
  });
}

async function runAll(jobs, parallel) {
  let next = 0;
  let done = 0;
  const started = Date.now();
  const worker = async () => {
    while (next < jobs.length) {
      const job = jobs[next++];
      job.rows = await simulate(job);
      done++;
      process.stderr.write(`[${done}/${jobs.length}] ${job.trace.name} (${job.rule}) in ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(parallel, jobs.length) }, worker));
}

const fmt = (r) => `${r.pagesSent.toLocaleString('en-US')} / ${r.downtimeMs.toFixed(1)}`;
/** Under auto-converge, also the seconds the throttle took from the process: what the downtime cost it. */
const throttled = (r, qemu) => (qemu ? ` (${(r.throttledMs / 1000).toFixed(1)} s)` : '');
const label = (r) => `${r.policy}${r.states ? ` ${r.states}` : ''}`;
const pct = (s) => (s > 1 + 1e-9 ? '>100%, more downtime' : `${Math.round(100 * s)}%`);

/** One trace's verdicts under one rule (the issue's acceptance). */
function verdict(rows, rule) {
  const g = (p) => rows.find((r) => r.policy === p);
  const pre = g('precopy');
  const fc = g('forecast');
  let base = rows.filter((r) => BASELINES.includes(r.policy));
  if (rule === 'qemu') base = base.filter((r) => r.downtimeMs <= LIMIT_MS);
  const best = base.length ? base.reduce((a, b) => (b.pagesSent < a.pagesSent ? b : a)) : null;
  return {
    pre,
    fc,
    best,
    bound: g('oracle'),
    pages: best === null || fc.pagesSent <= best.pagesSent,
    downtime: fc.downtimeMs <= pre.downtimeMs + 1e-9,
    limit: fc.downtimeMs <= LIMIT_MS,
    share: fc.shareOfOracle ?? 0,
    wrapped: [fc, pre, best].some((r) => r?.wrapped),
  };
}

function table(jobs, rule) {
  const qemu = rule === 'qemu';
  const lines = [
    `### ${RULES[rule].title}`,
    '',
    `| trace | pre-copy pages / downtime ms${qemu ? ' (throttled)' : ''} | xen-skip | tpo | best of ${BASELINES.join(', ')}${qemu ? ` within ${LIMIT_MS} ms` : ''} (S) | forecast | bound | fewest pages; downtime no higher than pre-copy's${qemu ? '; within the limit' : ''}; share of the bound | outlasted the trace |`,
    '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  const all = [];
  for (const job of jobs.filter((j) => j.rule === rule)) {
    const v = verdict(job.rows, rule);
    all.push(v);
    const g = (p) => fmt(job.rows.find((r) => r.policy === p));
    const pages = v.pages ? 'yes' : `no: ${(v.fc.pagesSent - v.best.pagesSent).toLocaleString('en-US')} more`;
    const marks = [pages, v.downtime ? 'yes' : 'no', ...(qemu ? [v.limit ? 'yes' : 'no'] : []), pct(v.share)];
    const wrappedBy = [
      ['forecast', v.fc],
      ['pre-copy', v.pre],
      ['best', v.best],
    ].flatMap(([n, r]) => (r?.wrapped ? [n] : []));
    lines.push(
      `| ${job.trace.name} | ${fmt(v.pre)}${throttled(v.pre, qemu)} | ${g('xen-skip')} | ${g('tpo')} | ${v.best ? `${fmt(v.best)} (${label(v.best)})` : 'none'} | **${fmt(v.fc)}**${throttled(v.fc, qemu)} | ${fmt(v.bound)} | ${marks.join('; ')} | ${wrappedBy.join(', ')} |`,
    );
  }
  lines.push(
    '',
    tally(all, qemu, 'every trace'),
    tally(
      all.filter((v) => !v.wrapped),
      qemu,
      'traces where none of the three outlasted the trace',
    ),
  );
  return lines.join('\n');
}

function tally(vs, qemu, what) {
  const n = vs.length;
  const count = (k) => vs.filter((v) => v[k]).length;
  const mean = n ? (100 * vs.reduce((s, v) => s + Math.min(1, Math.max(0, v.share)), 0)) / n : 0;
  return `Tally, ${what}: fewest pages ${count('pages')} of ${n}; downtime no higher than pre-copy's ${count('downtime')} of ${n}${qemu ? `; within the limit ${count('limit')} of ${n}` : ''}; mean share of the bound ${mean.toFixed(1)}%.`;
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`acceptance: ${e.message}\n(node bench/acceptance.mjs --help shows the usage)\n`);
    return 2;
  }
  if (o === null) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  const jobs = o.traces.flatMap((trace) => o.rules.map((rule) => ({ trace, rule, rows: null })));
  try {
    await runAll(jobs, o.jobs);
  } catch (e) {
    for (const child of running) child.kill();
    process.stderr.write(`acceptance: ${e.message}\n`);
    return e.code ?? 1; // forecopy-sim's own: 2 for a trace it cannot read
  }
  if (o.out) {
    fs.mkdirSync(o.out, { recursive: true });
    for (const j of jobs) fs.writeFileSync(path.join(o.out, `${j.trace.name}.${j.rule}.json`), JSON.stringify(j.rows));
  }
  const machine = `${os.cpus().length} cores (${os.cpus()[0]?.model ?? 'unknown'}), Node ${process.versions.node}`;
  process.stdout.write(`Simulated at 500 Mbit/s on ${machine}; deterministic: the figures do not depend on the machine.\n\n`);
  process.stdout.write(`${o.rules.map((r) => table(jobs, r)).join('\n\n')}\n`);
  return 0;
}

process.exitCode = await main();
