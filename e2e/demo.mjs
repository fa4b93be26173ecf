#!/usr/bin/env node
// `pnpm demo`: the main job. Starts a destination agent and a live workload (mw, the paper's
// memory write loop with a moving hot spot), migrates it with plain pre-copy and with the Markov
// data filter at the paper's 500 Mbit/s (the destination keeps images, the process resumes here),
// prints both reports side by side, then moves the process for good to a destination that
// restores it, and shows it running there: its own self-check answered from the destination.
// Everything it starts is ended by pid, and its temporary directory removed, however it ends.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll, startChild, startDestination, withOnlyStdio } from '../scripts/lib/child.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const MB = opt('mb', '256');
const POLICIES = opt('policies', 'precopy,markov').split(',');
const BANDWIDTH = opt('bandwidth', '500mbit');
const RATE = opt('write-rate', '30000');
const OUT = path.resolve(opt('out', 'demo-report'));

if (process.getuid() !== 0) {
  console.error('demo: run as root: the source agent traces the workload (ptrace, userfaultfd)');
  process.exit(1);
}
const mwBin = path.join(root, 'workloads/bin/mw');
if (!fs.existsSync(mwBin)) {
  console.error('demo: workloads/bin/mw is missing: run ./scripts/setup.sh (or pnpm build) first');
  process.exit(1);
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-demo-'));
const kids = new Set();
const run = (cmd, argv, opts = {}) => startChild(cmd, argv, { capture: true, ...opts, kids });
function cleanup() {
  killAll(kids);
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('SIGINT', () => {
  cleanup();
  process.exit(130);
});

const t0 = Date.now();
try {
  const { port } = await startDestination(run, path.join(tmp, 'images'));
  // Nothing open but its standard streams: what a restore can carry (pnpm may leak descriptors).
  const mw = run(...withOnlyStdio(mwBin, ['--mb', MB, '--pattern', 'hotspot', '--write-rate', RATE]));
  const pid = (await mw.waitFor(/^mw pid=(\d+)/))[1];
  console.log(`demo: workload mw --mb ${MB} --pattern hotspot --write-rate ${RATE} (pid ${pid}); destination on 127.0.0.1:${port}`);
  console.log(`demo: ${os.cpus().length} cores here, shared by the workload, the source and the destination\n`);
  const reports = [];
  for (const policy of POLICIES) {
    const reportFile = path.join(tmp, `${policy}.json`);
    console.log(`demo: migrating with --policy ${policy} --bandwidth ${BANDWIDTH} --after resume ...`);
    const src = run(
      process.execPath,
      [
        path.join(root, 'packages/source-agent/bin/forecopy-source.mjs'),
        'migrate',
        '--image-only',
        '--pid',
        pid,
        '--to',
        `127.0.0.1:${port}`,
        '--policy',
        policy,
        '--bandwidth',
        BANDWIDTH,
        '--after',
        'resume',
        '--report',
        reportFile,
        // 4 MiB regions, the paper's region size (S = 256 for 1 GiB), the size of mw's hot spot.
        ...(policy === 'markov'
          ? ['--model-seconds', opt('model-seconds', '5'), '--states', String(Math.min(1024, Math.max(64, Math.round(Number(MB) / 4))))]
          : []),
      ],
      { capture: false },
    );
    const code = await src.exited;
    if (code !== 0) throw new Error(`forecopy-source exited with ${code} for --policy ${policy}`);
    console.log(`${src.lines.join('\n')}\n`);
    reports.push(JSON.parse(fs.readFileSync(reportFile, 'utf8')));
  }
  fs.mkdirSync(OUT, { recursive: true });
  for (const r of reports) fs.writeFileSync(path.join(OUT, `${r.policy}.json`), JSON.stringify(r, null, 2));
  console.log(sideBySide(reports));
  const html = path.join(OUT, 'report.html');
  const r = run(process.execPath, [
    path.join(root, 'packages/source-agent/bin/forecopy-source.mjs'),
    'report',
    ...reports.map((x) => path.join(OUT, `${x.policy}.json`)),
    '--html',
    html,
  ]);
  if ((await r.exited) !== 0) throw new Error('forecopy-source report failed');
  console.log(`demo: HTML report: ${html}`);
  // Before it moves for good, mw (still here after two migrations) answers for its own memory.
  const here = await selfCheck(pid, () => mw.lines);
  console.log(`\ndemo: kill -USR1 ${pid} -> ${here}   (mw here, at the source, after ${POLICIES.length} migrations)`);
  if (!here.startsWith('mw check ok')) throw new Error(`mw did not pass its self-check at the source: ${here}`);
  await moveForGood(pid);
  console.log(`\ndemo: reports written to ${OUT}/ (${((Date.now() - t0) / 1000).toFixed(0)} s in all)`);
} catch (e) {
  console.error(`demo: ${e.message}`);
  process.exitCode = 1;
} finally {
  cleanup();
}

/** Migrates `pid` to a destination that restores it, and shows it running there. */
async function moveForGood(pid) {
  const imageDir = path.join(tmp, 'restored');
  const { port } = await startDestination(run, imageDir, ['--restore', '--once']);
  console.log(`\ndemo: now moving mw (pid ${pid}) for good to a destination that restores it (forecopy-dest listen --restore) ...`);
  const reportFile = path.join(OUT, 'restore.json');
  const src = run(
    process.execPath,
    [
      path.join(root, 'packages/source-agent/bin/forecopy-source.mjs'),
      'migrate',
      '--pid',
      pid,
      '--to',
      `127.0.0.1:${port}`,
      '--bandwidth',
      BANDWIDTH,
      '--state-dir',
      path.join(tmp, 'state'),
      '--report',
      reportFile,
    ],
    { capture: false },
  );
  if ((await src.exited) !== 0) throw new Error('forecopy-source could not move the process');
  console.log(`${src.lines.join('\n')}\n`);
  const { restoredPid } = JSON.parse(fs.readFileSync(reportFile, 'utf8'));
  kids.add({ pid: restoredPid }); // not our child, but ours to end: killAll kills by pid
  console.log(
    `demo: the original pid ${pid} is ${fs.existsSync(`/proc/${pid}`) ? 'still there (!)' : 'gone'}; mw runs at the destination as pid ${restoredPid} (${fs.readFileSync(`/proc/${restoredPid}/cmdline`, 'utf8').split('\0').join(' ').trim()})`,
  );
  const session = fs.readdirSync(imageDir).find((d) => /^[0-9a-f]{32}$/.test(d));
  const out = path.join(imageDir, session, 'stdout.log');
  const checks = () => fs.readFileSync(out, 'utf8').split('\n');
  for (let i = 0; i < 2; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const answer = await selfCheck(restoredPid, checks);
    console.log(`demo: kill -USR1 ${restoredPid} -> ${answer}   (its stdout at the destination: ${out})`);
    // The pages were verified, but the process is the judge of its own memory: a failed or missing
    // self-check fails the demo.
    if (!answer.startsWith('mw check ok')) throw new Error(`the restored mw did not pass its self-check: ${answer}`);
  }
}

/**
 * Sends mw its SIGUSR1 and returns the 'mw check' line it answers with (`lines` reads its output),
 * or why none came. mw answers once it has read all its memory (256 MiB: a few hundred ms on a
 * slow machine).
 */
async function selfCheck(pid, lines) {
  const checks = () => lines().filter((l) => l.startsWith('mw check'));
  const before = checks().length;
  process.kill(pid, 'SIGUSR1');
  for (const until = performance.now() + 10_000; performance.now() < until; ) {
    await new Promise((r) => setTimeout(r, 100));
    const now = checks();
    if (now.length > before) return now[now.length - 1];
  }
  return '(no answer within 10 s)';
}

function sideBySide(rs) {
  const rows = [
    ['', ...rs.map((r) => r.policy)],
    ['verified', ...rs.map((r) => String(r.verified))],
    ['downtime ms', ...rs.map((r) => r.downtimeMs.toFixed(1))],
    ['total ms', ...rs.map((r) => r.totalMs.toFixed(0))],
    ['rounds', ...rs.map((r) => String(r.rounds.length))],
    ['pages sent', ...rs.map((r) => r.pagesSent.toLocaleString('en-US'))],
    ['MiB on the wire', ...rs.map((r) => (r.bytesSent / 1048576).toFixed(1))],
    ['pages filtered', ...rs.map((r) => r.rounds.reduce((n, x) => n + x.pagesFiltered, 0).toLocaleString('en-US'))],
    ['memory pages', ...rs.map((r) => r.memoryPages.toLocaleString('en-US'))],
  ];
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('   ')).join('\n');
}
