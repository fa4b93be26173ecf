import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cleanup, ROOT, SOURCE_BIN, WORKLOADS, rootSkipReason, runSource, start, startDest, type Proc } from '../e2e/src/procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from '../e2e/src/netns.js';

/**
 * `pnpm bench:paper`: the paper's experiments on the workloads this machine can run. Each
 * workload is started on the source host (a network namespace), recorded for RECORD_S seconds,
 * migrated live to the destination host over a veth capped at 500 Mbit/s (tbf) with every policy
 * (the process resumes after each, so all four meet the same workload), and its trace is swept
 * over S = 64..1024 in the simulator. Results: bench/results/paper-<date>/ (Markdown, CSV, HTML).
 * The machine has 2 cores, shared by the workload and both agents.
 *
 * Workloads here: mw over 256 and 512 MiB (the paper's memory write loop), gzip -9 and bzip2 -9
 * of an endless text stream, stress-ng --vm and MariaDB under sysbench oltp_read_write (the
 * paper's TPC-C stand-in; both when installed: apt-get install stress-ng mariadb-server
 * sysbench). Not yet: a compile job. PAPER_ONLY=name,... runs a subset.
 */
const RECORD_S = Number(process.env.PAPER_RECORD_S ?? 20);
const POLICIES = ['precopy', 'xen-skip', 'tpo', 'markov'];
const skip = rootSkipReason() ?? netnsSupported();
if (skip) console.warn(`paper: skipped: ${skip}`);

interface Workload {
  name: string;
  cmd: string;
  ready: RegExp;
  /** The printed pid is a parent: migrate its descendant with the largest resident set. */
  biggestDescendant?: boolean;
}

function descendants(pid: number): number[] {
  const kids = spawnSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' }).stdout.split('\n').map(Number).filter((x) => x > 0);
  return kids.flatMap((k) => [k, ...descendants(k)]);
}

function rssKb(pid: number): number {
  try {
    return Number(/VmRSS:\s*(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

function workloads(): Workload[] {
  const only = process.env.PAPER_ONLY?.split(',');
  const w: Workload[] = [
    { name: 'mw-256', cmd: `exec ${WORKLOADS}/mw --mb 256 --pattern seq --write-rate 50000`, ready: /^mw pid=(\d+)/ },
    { name: 'mw-512', cmd: `exec ${WORKLOADS}/mw --mb 512 --pattern seq --write-rate 50000`, ready: /^mw pid=(\d+)/ },
    // An endless stream of text (base64 of random bytes) into one long-lived compressor.
    { name: 'gzip-9', cmd: `head -c 100000000000 /dev/urandom | base64 | gzip -9 > /dev/null & echo "pid=$!"; wait`, ready: /^pid=(\d+)/ },
    { name: 'bzip2-9', cmd: `head -c 100000000000 /dev/urandom | base64 | bzip2 -9 > /dev/null & echo "pid=$!"; wait`, ready: /^pid=(\d+)/ },
  ];
  if (spawnSync('sh', ['-c', 'command -v stress-ng']).status === 0) {
    // stress-ng forks its workers: the one to migrate is the descendant holding the 256 MiB.
    w.push({ name: 'stress-ng-vm', cmd: `stress-ng --vm 1 --vm-bytes 256M --vm-keep --timeout 3600 & echo "tree=$!"; wait`, ready: /^tree=(\d+)/, biggestDescendant: true });
  }
  // The paper's TPC-C stand-in: a MariaDB server of our own (own datadir and socket, no
  // network) under sysbench oltp_read_write; the server process is what migrates.
  if (spawnSync('sh', ['-c', 'command -v mariadbd && command -v sysbench']).status === 0) {
    const d = '$D';
    const conn = `--mysql-socket=${d}/sock --mysql-user=root --tables=4 --table-size=100000`;
    w.push({
      name: 'mariadb-oltp',
      cmd: [
        'D=$(mktemp -d /tmp/forecopy-mariadb-XXXXXX)',
        `mariadb-install-db --no-defaults --datadir=${d}/data --user=root --auth-root-authentication-method=normal >/dev/null 2>&1`,
        `mariadbd --no-defaults --datadir=${d}/data --socket=${d}/sock --skip-networking --user=root --innodb-buffer-pool-size=256M --pid-file=${d}/pid >${d}/log 2>&1 &`,
        'M=$!',
        `for i in $(seq 100); do [ -S ${d}/sock ] && break; sleep 0.2; done`,
        `mariadb --no-defaults --socket=${d}/sock -uroot -e 'CREATE DATABASE sbtest' >/dev/null`,
        `sysbench oltp_read_write ${conn} prepare >/dev/null`,
        `sysbench oltp_read_write ${conn} --threads=2 --time=3600 run >/dev/null &`,
        'echo "pid=$M dir=$D"',
        'wait',
      ].join('\n'),
      ready: /^pid=(\d+)/,
    });
  }
  return only ? w.filter((x) => only.includes(x.name)) : w;
}

/**
 * Kills a process and all its descendants, by pid (the workload's shell and its pipeline). The
 * whole tree is stopped first, so that no parent can respawn a child (stress-ng does) or lose
 * one to re-parenting while the tree is being killed.
 */
function killTree(pid: number): void {
  const all = [pid, ...descendants(pid)];
  for (const sig of ['SIGSTOP', 'SIGKILL'] as const) {
    for (const p of all) {
      try {
        process.kill(p, sig);
      } catch {
        // already gone
      }
    }
  }
}

describe.skipIf(skip)('paper reproduction', () => {
  let hosts: TwoHosts;
  const c = new Cleanup();
  const out = path.join(ROOT, 'bench/results', `paper-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '-')}`);
  const live: string[] = [];
  const sims: string[] = [];
  beforeAll(() => {
    hosts = makeTwoHosts({ rate: '500mbit' });
    fs.mkdirSync(out, { recursive: true });
  });
  afterAll(async () => {
    await c.run();
    hosts?.destroy();
    const md = [
      `# forecopy: the paper's experiments (${new Date().toISOString()})`,
      '',
      `Machine: ${os.cpus()[0].model}, ${os.cpus().length} cores shared by the workload and both agents; two network-namespace hosts, veth capped at 500 Mbit/s (tbf). Command: pnpm bench:paper (PAPER_RECORD_S=${RECORD_S}).`,
      '',
      '## Live migrations',
      '',
      '| workload | policy | verified | downtime ms | total ms | pages sent | rounds |',
      '| --- | --- | --- | --- | --- | --- | --- |',
      ...live,
      '',
      '## Simulator sweeps over the recorded traces (S = 64..1024, 500 Mbit/s)',
      '',
      ...sims,
    ].join('\n');
    fs.writeFileSync(path.join(out, 'paper.md'), md + '\n');
    console.log(md);
  }, 120_000);

  for (const w of workloads()) {
    it(`${w.name}: record, migrate with every policy, sweep S`, async () => {
      const proc: Proc = c.proc(start(hosts.exec(hosts.source)[0], [...hosts.exec(hosts.source).slice(1), 'sh', '-c', w.cmd]));
      let pid = Number((await proc.waitFor(w.ready, 60_000))[1]);
      expect(pid).toBeGreaterThan(0);
      await new Promise((r) => setTimeout(r, 3000)); // steady state
      if (w.biggestDescendant) pid = descendants(pid).sort((a, b) => rssKb(b) - rssKb(a))[0];
      const trace = path.join(out, `${w.name}.trace`);
      const rec = await runSource(c, ['record', '--pid', String(pid), '--seconds', String(RECORD_S), '--out', trace]);
      expect(rec.code, rec.stderr).toBe(0);
      for (const policy of POLICIES) {
        const dest = await startDest(c, ['--once', '--host', hosts.destAddr, '--insecure', '--log-level', 'warn'], hosts.exec(hosts.dest));
        const r = await runSource(c, ['migrate', '--pid', String(pid), '--to', `${hosts.destAddr}:${dest.port}`, '--policy', policy, '--bandwidth', '500mbit', '--after', 'resume', ...(policy === 'markov' ? ['--model-seconds', '10'] : [])], hosts.exec(hosts.source));
        expect(r.code, r.stderr).toBe(0);
        const rep = r.report!;
        fs.writeFileSync(path.join(out, `${w.name}-${policy}.json`), JSON.stringify(rep, null, 2));
        live.push(`| ${w.name} | ${policy} | ${rep.verified} | ${rep.downtimeMs.toFixed(1)} | ${rep.totalMs.toFixed(0)} | ${rep.pagesSent.toLocaleString('en-US')} | ${rep.rounds.length} |`);
        expect(rep.verified).toBe(true);
      }
      const sim = spawnSync(process.execPath, [path.join(ROOT, 'packages/source-agent/bin/forecopy-sim.mjs'), '--trace', trace, '--states', '64,128,256,512,1024', '--model-seconds', String(Math.min(10, RECORD_S / 2)), '--bandwidth', '500mbit', '--csv', path.join(out, `${w.name}-sweep.csv`), '--html', path.join(out, `${w.name}-sweep.html`)], { encoding: 'utf8' });
      expect(sim.status, sim.stderr).toBe(0);
      sims.push(`### ${w.name}`, '', '```', sim.stdout.trim(), '```', '');
      const files = fs.readdirSync(out).filter((f) => f.startsWith(`${w.name}-`) && f.endsWith('.json')).map((f) => path.join(out, f));
      spawnSync(process.execPath, [SOURCE_BIN, 'report', ...files, '--html', path.join(out, `${w.name}-live.html`)]);
      killTree(proc.pid);
      await proc.exited;
      // A workload that made a directory of its own (the database) says so: remove it.
      const dir = proc.lines.map((l) => /dir=(\/tmp\/forecopy-[\w-]+)/.exec(l)?.[1]).find(Boolean);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    }, 900_000);
  }
});
