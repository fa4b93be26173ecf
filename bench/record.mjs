#!/usr/bin/env node
// Records programs for forecopy-sim, one after another and alone: each is started in a process
// group of its own, left to run a few seconds, recorded with `forecopy-source record`, and its
// group killed. The workloads file is the one PAPER_WORKLOADS takes (bench/programs.json,
// bench/servers.json): a JSON array of {"name", "cmd"}, cmd a shell command that prints pid=N
// (the process to record) and keeps running. Then: node bench/acceptance.mjs DIR/*.trace.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readWorkloadsFile } from '../scripts/lib/workloads.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = path.join(ROOT, 'packages/source-agent/bin/forecopy-source.mjs');

const HELP = `usage: node bench/record.mjs --workloads FILE --out DIR [options]

Starts each program of FILE (a JSON array of {"name", "cmd"}; cmd prints pid=N and keeps running,
as for PAPER_WORKLOADS), waits --warmup seconds, records process N for --seconds with
forecopy-source record into DIR/NAME.trace, then kills the program's process group. One program
at a time: a recording shares the machine with nothing else. Needs root (the recorder attaches
to the process).

options:
  --workloads FILE  the programs (required)
  --out DIR         where the traces go (required; created)
  --seconds S       seconds to record each (default 60)
  --warmup S        seconds each program runs before its recording starts (default 4)
  --only a,b        only these programs

examples:
  node bench/record.mjs --workloads bench/programs.json --out /tmp/traces
  node bench/record.mjs --workloads bench/servers.json --out /tmp/traces --only memcached-set --seconds 20
  node bench/acceptance.mjs --jobs 2 /tmp/traces/*.trace
`;

function fail(msg) {
  process.stderr.write(`record: ${msg}\n(node bench/record.mjs --help shows the usage)\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const o = { seconds: 60, warmup: 4, only: null, workloads: null, out: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--help' || a === '-h') {
      process.stdout.write(HELP);
      process.exit(0);
    }
    const v = argv[i + 1];
    if (!['--workloads', '--out', '--seconds', '--warmup', '--only'].includes(a)) fail(`unknown argument ${a}`);
    if (v === undefined) fail(`${a} needs a value`);
    i++;
    if (a === '--seconds' || a === '--warmup') {
      const n = Number(v);
      if (!(n >= 0) || (a === '--seconds' && !(n > 0)))
        fail(`${a} must be a number of seconds${a === '--seconds' ? ' over 0' : ''}, not ${v}`);
      o[a.slice(2)] = n;
    } else if (a === '--only') o.only = v.split(',').filter(Boolean);
    else o[a.slice(2)] = v;
  }
  if (!o.workloads) fail('--workloads FILE is required');
  if (!o.out) fail('--out DIR is required');
  return o;
}

function readWorkloads(file, only) {
  let list;
  try {
    list = readWorkloadsFile(file);
  } catch (e) {
    fail(e.message);
  }
  if (only) {
    const unknown = only.filter((n) => !list.some((w) => w.name === n));
    if (unknown.length > 0) fail(`--only names no program of ${file}: ${unknown.join(', ')}`);
    list = list.filter((w) => only.includes(w.name));
  }
  return list;
}

/** Starts `cmd` in a group of its own; resolves with the pid it prints, or rejects if it exits first or prints none in 30 s. */
function startProgram(w, tmp) {
  const child = spawn('bash', ['-c', w.cmd], {
    cwd: ROOT,
    detached: true, // its own process group: killed whole, and only it
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, TMPDIR: tmp },
  });
  let err = '';
  child.stderr.on('data', (d) => {
    err = (err + d).slice(-2000);
  });
  const pid = new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`${w.name} printed no pid=N in 30 s`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = /^pid=(\d+)/m.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${w.name} exited (${code}) before it printed pid=N${err ? `: ${err.trim()}` : ''}`));
    });
  });
  return { child, pid, stderr: () => err };
}

function killGroup(child) {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {} // already gone
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const alive = (pid) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function recordOne(w, o) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `forecopy-record-${w.name}-`));
  const prog = startProgram(w, tmp);
  const onSignal = () => {
    killGroup(prog.child);
    fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const pid = await prog.pid;
    await sleep(o.warmup * 1000);
    if (!alive(pid))
      throw new Error(`${w.name}: process ${pid} ended before its recording${prog.stderr() ? `: ${prog.stderr().trim()}` : ''}`);
    const trace = path.join(o.out, `${w.name}.trace`);
    const t0 = Date.now();
    const r = spawnSync(process.execPath, [SOURCE, 'record', '--pid', String(pid), '--seconds', String(o.seconds), '--out', trace], {
      encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`${w.name}: forecopy-source record failed: ${(r.stderr || r.stdout).trim()}`);
    return { trace, seconds: (Date.now() - t0) / 1000, bytes: fs.statSync(trace).size };
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    killGroup(prog.child);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

const o = parseArgs(process.argv.slice(2));
const list = readWorkloads(o.workloads, o.only);
fs.mkdirSync(o.out, { recursive: true });
const failed = [];
for (const [i, w] of list.entries()) {
  process.stderr.write(`[${i + 1}/${list.length}] ${w.name}: ${o.warmup} s, then ${o.seconds} s recorded\n`);
  try {
    const r = await recordOne(w, o);
    process.stderr.write(`  ${r.trace} (${(r.bytes / 1e6).toFixed(1)} MB, ${r.seconds.toFixed(0)} s)\n`);
  } catch (e) {
    failed.push(w.name);
    process.stderr.write(`  not recorded: ${e.message}\n`);
  }
}
fs.writeFileSync(
  path.join(o.out, 'recorded.json'),
  `${JSON.stringify({ workloads: path.resolve(o.workloads), seconds: o.seconds, warmup: o.warmup, machine: `${os.cpus()[0].model}, ${os.cpus().length} cores; Node ${process.version}`, programs: list.map((w) => ({ ...w, recorded: !failed.includes(w.name) })) }, null, 2)}\n`,
);
if (failed.length > 0) {
  process.stderr.write(`not recorded: ${failed.join(', ')}\n`);
  process.exit(1);
}
