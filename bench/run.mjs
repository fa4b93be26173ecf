#!/usr/bin/env node
// `pnpm bench`: live migrations of mw over loopback, one per policy and size, reports collected
// into bench/results/<date>/ and summarised as a Markdown table on stdout (paste into
// BENCHMARKS.md with the command and the machine). Sizes of 1 GiB and up live here, not in tests.
//
//   node bench/run.mjs [--mb 1024] [--policies precopy,markov] [--pattern seq] [--write-rate 0]
//                      [--bandwidth 0] [--model-seconds 10] [--after resume] [--restore]
//                      [--verify auto|full|incremental] [--stop-rule downtime|xen] [--downtime-limit-ms N]
//                      [--auto-converge on|off]
//
// --restore: the destination restores the process (forecopy-dest listen --restore), and the
// downtime runs from the freeze to the process running at the destination. A second table gives
// the downtime in its parts beside the stop rule's forecast of it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { killAll, startChild, startDestination, withOnlyStdio } from '../scripts/lib/child.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const sizes = opt('mb', '1024').split(',');
const policies = opt('policies', 'precopy').split(',');
const patterns = opt('pattern', 'seq').split(',');
const rate = opt('write-rate', '20000');
const bandwidth = opt('bandwidth', '0');
const repeat = Number(opt('repeat', '1'));
const restore = argv.includes('--restore');
const outDir = path.join(root, 'bench/results', new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-'));
fs.mkdirSync(outDir, { recursive: true });

if (process.getuid() !== 0) {
  console.error('bench: run as root (the source agent traces the workload)');
  process.exit(1);
}

const kids = new Set();
const rows = [];
const imageDir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-bench-'));
// On every way out, Ctrl-C included (process.exit skips the finally below): the children go,
// and so do the images (a 1 GiB run leaves 1 GiB).
const cleanup = () => {
  killAll(kids);
  fs.rmSync(imageDir, { recursive: true, force: true });
};
process.on('exit', cleanup);
process.on('SIGINT', () => process.exit(130));
const start = (cmd, args) => startChild(cmd, args, { kids });
try {
  for (const mb of sizes) {
    for (const pattern of patterns) {
      for (let rep = 0; rep < repeat; rep++)
        for (const policy of policies) {
          const { dest, port } = await startDestination(start, imageDir, ['--once', ...(restore ? ['--restore'] : [])]);
          // Nothing open but its standard streams, as a restore needs (pnpm may leak descriptors).
          const mw = start(...withOnlyStdio(path.join(root, 'workloads/bin/mw'), ['--mb', mb, '--pattern', pattern, '--write-rate', rate]));
          const pid = (await mw.waitFor(/^mw pid=(\d+)/))[1];
          await new Promise((r) => setTimeout(r, 1000)); // let it reach its steady write rate
          const report = path.join(outDir, `mw-${mb}-${pattern}-${policy}-${rep + 1}.json`);
          // A policy may carry options: markov+visits, markov+skip, markov+visits+skip.
          const [base, ...variant] = policy.split('+');
          const extra = [
            ...(variant.includes('visits') ? ['--forecast', 'visits'] : []),
            ...(variant.includes('skip') ? ['--skip-redirtied'] : []),
          ];
          const src = start(process.execPath, [
            path.join(root, 'packages/source-agent/bin/forecopy-source.mjs'),
            'migrate',
            ...(restore ? ['--state-dir', path.join(imageDir, 'source-state')] : ['--image-only']),
            '--pid',
            pid,
            '--to',
            `127.0.0.1:${port}`,
            '--policy',
            base,
            ...extra,
            '--bandwidth',
            bandwidth,
            ...(restore ? [] : ['--after', opt('after', 'kill')]),
            '--report',
            report,
            ...(base === 'markov' ? ['--model-seconds', opt('model-seconds', '10')] : []),
            ...(opt('verify') ? ['--verify', opt('verify')] : []),
            ...(opt('stop-rule') ? ['--stop-rule', opt('stop-rule')] : []),
            ...(opt('downtime-limit-ms') ? ['--downtime-limit-ms', opt('downtime-limit-ms')] : []),
            ...(opt('auto-converge') ? ['--auto-converge', opt('auto-converge')] : []),
          ]);
          const code = await src.exited;
          for (const p of [Number(pid), restore && fs.existsSync(report) ? JSON.parse(fs.readFileSync(report, 'utf8')).restoredPid : 0]) {
            try {
              if (p) process.kill(p, 'SIGKILL');
            } catch {} // gone already with --after kill
          }
          await dest.exited;
          fs.rmSync(imageDir, { recursive: true, force: true });
          fs.mkdirSync(imageDir);
          if (code !== 0) {
            console.error(`bench: mw ${mb} MiB ${pattern} ${policy}: forecopy-source exited ${code}`);
            continue;
          }
          const r = JSON.parse(fs.readFileSync(report, 'utf8'));
          rows.push({ mb, pattern, policy, r });
          console.error(
            `bench: mw ${mb} MiB ${pattern} ${policy}: verified=${r.verified} downtime=${r.downtimeMs.toFixed(1)} ms total=${r.totalMs.toFixed(0)} ms pages=${r.pagesSent}`,
          );
        }
    }
  }
} finally {
  cleanup();
}

console.log(`Command: node bench/run.mjs ${argv.join(' ')}`);
console.log(
  `Machine: ${os.cpus()[0].model}, ${os.cpus().length} cores shared by workload, source and destination; Linux ${os.release()}; Node ${process.version}\n`,
);
if (repeat > 1) {
  // Medians over the repeats, one row per workload and policy.
  const med = (xs) => {
    const a = [...xs].sort((x, y) => x - y);
    return a.length % 2 ? a[(a.length - 1) / 2] : (a[a.length / 2 - 1] + a[a.length / 2]) / 2;
  };
  console.log(`Medians of ${repeat} runs each (interleaved: policy A, B, ..., then again):\n`);
  console.log('| workload | policy | runs verified | downtime ms (median; all) | total ms | pages sent (median; all) |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  const keys = [...new Set(rows.map((x) => `${x.mb}|${x.pattern}|${x.policy}`))];
  for (const k of keys) {
    const rs = rows.filter((x) => `${x.mb}|${x.pattern}|${x.policy}` === k);
    const [mb, pattern, policy] = k.split('|');
    console.log(
      `| mw ${mb} MiB ${pattern} @${rate} pages/s | ${policy} | ${rs.filter((x) => x.r.verified).length}/${rs.length} | ${med(rs.map((x) => x.r.downtimeMs)).toFixed(1)}; ${rs.map((x) => x.r.downtimeMs.toFixed(1)).join(', ')} | ${med(rs.map((x) => x.r.totalMs)).toFixed(0)} | ${med(rs.map((x) => x.r.pagesSent)).toLocaleString('en-US')}; ${rs.map((x) => x.r.pagesSent.toLocaleString('en-US')).join(', ')} |`,
    );
  }
  console.log('\nAll runs:\n');
}
// Every report of this run side by side, as a self-contained HTML page with charts.
if (rows.length > 0) {
  const files = fs
    .readdirSync(outDir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => path.join(outDir, f));
  const r = startChild(process.execPath, [
    path.join(root, 'packages/source-agent/bin/forecopy-source.mjs'),
    'report',
    ...files,
    '--html',
    path.join(outDir, 'report.html'),
  ]);
  if ((await r.exited) === 0) console.error(`bench: HTML report: ${path.join(outDir, 'report.html')}`);
}
const head = '| workload | policy | verified | rounds | downtime ms | total ms | pages sent | MiB on wire | scans | scan ms avg / max |';
console.log(head);
console.log(head.replace(/[^|]/g, '-'));
for (const { mb, pattern, policy, r } of rows) {
  const s = r.scans;
  console.log(
    `| mw ${mb} MiB ${pattern} @${rate} pages/s | ${policy} | ${r.verified} | ${r.rounds.length} | ${r.downtimeMs.toFixed(1)} | ${r.totalMs.toFixed(0)} | ${r.pagesSent.toLocaleString('en-US')} | ${(r.bytesSent / 1048576).toFixed(1)} | ${s.count} | ${(s.totalMs / Math.max(1, s.count)).toFixed(2)} / ${s.maxMs.toFixed(2)} |`,
  );
}
console.log('');
if (rows.some(({ r }) => r.downtimeParts)) {
  // The downtime in its parts, the forecast the stop rule made of it (the last iterative round's
  // expectedDowntimeMs), and the limit.
  console.log(
    `| workload | downtime ms (${restore ? 'freeze to running at the destination' : 'the whole freeze'}) | forecast at the stop | stop-and-copy | state | verify (how) | handover (restore) | release | limit met |`,
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const { mb, pattern, r } of rows) {
    const p = r.downtimeParts ?? {};
    const f = (k) => (p[k] ?? 0).toFixed(1);
    const forecast = r.rounds.filter((x) => !x.final).at(-1)?.expectedDowntimeMs;
    console.log(
      `| mw ${mb} MiB ${pattern} @${rate} pages/s | ${r.downtimeMs.toFixed(1)} | ${forecast?.toFixed(1) ?? ''} | ${f('stopCopyMs')} | ${f('stateMs')} | ${f('verifyMs')} (${r.verifyMode ?? ''}) | ${f('handoverMs')} (${f('restoreMs')}) | ${f('releaseMs')} | ${r.downtimeLimitMs === undefined ? 'no limit' : `${r.downtimeLimitMet ? 'yes' : 'no'} (${r.downtimeLimitMs} ms)`} |`,
    );
  }
  console.log('');
}
