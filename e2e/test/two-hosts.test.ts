import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Cleanup, leftovers, mwCheck, rootSkipReason, runSource, selfCheck, start, startDest, startMw, WORKLOADS } from '../src/procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from '../src/netns.js';

/**
 * The agents on two hosts: the workload and forecopy-source in one network namespace,
 * forecopy-dest in another, joined by a veth pair capped at 500 Mbit/s like the paper's link.
 * (2 cores on this machine, shared by the workload and both agents.)
 */
const skip = rootSkipReason() ?? netnsSupported();
if (skip) console.warn(`two-hosts: skipped: ${skip}`);

describe.skipIf(skip)('migration across two network-namespace hosts', () => {
  let hosts: TwoHosts;
  const c = new Cleanup();
  let psk: string[];
  beforeAll(() => {
    hosts = makeTwoHosts({ rate: '500mbit' });
    // The destination listens on a non-loopback address: both agents authenticate with a key.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-psk-'));
    fs.writeFileSync(path.join(dir, 'key'), randomBytes(32).toString('hex'));
    psk = ['--psk-file', path.join(dir, 'key')];
  });
  afterEach(() => c.run());
  afterAll(() => {
    hosts?.destroy();
    if (psk) fs.rmSync(path.dirname(psk[1]), { recursive: true, force: true });
  });

  for (const policy of ['precopy', 'xen-skip', 'tpo', 'markov']) {
    it(`mw with --policy ${policy} verifies`, async () => {
      const mw = await startMw(c, ['--mb', '64', '--pattern', 'hotspot', '--write-rate', '20000'], hosts.exec(hosts.source));
      const dest = await startDest(c, ['--once', '--host', hosts.destAddr, ...psk], hosts.exec(hosts.dest));
      const run = await runSource(
        c,
        [
          'migrate',
          '--pid',
          String(mw.pid),
          '--to',
          `${hosts.destAddr}:${dest.port}`,
          '--policy',
          policy,
          '--bandwidth',
          '500mbit',
          '--after',
          'resume',
          ...psk,
          ...(policy === 'markov' ? ['--model-seconds', '3'] : []),
        ],
        hosts.exec(hosts.source),
      );
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      expect(run.report!.verified).toBe(true);
      expect(run.report!.policy).toBe(policy);
      expect(await dest.proc.exited).toBe(0);
      expect(await mwCheck(mw)).toMatch(/^mw check ok/);
      expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    });
  }

  it('the namespaces have no route out', () => {
    const routes = execFileSync('ip', ['-n', hosts.source, 'route', 'show'], { encoding: 'utf8' });
    expect(routes).not.toMatch(/default/);
  });

  it('a multi-threaded workload that maps and unmaps during the migration verifies', async () => {
    const p = c.proc(
      start(hosts.exec(hosts.source)[0], [
        ...hosts.exec(hosts.source).slice(1),
        `${WORKLOADS}/churn`,
        '--threads',
        '4',
        '--mappings',
        '64',
        '--mb',
        '64',
      ]),
    );
    const pid = Number((await p.waitFor(/^churn pid=(\d+) ready/))[1]);
    const dest = await startDest(c, ['--once', '--host', hosts.destAddr, ...psk], hosts.exec(hosts.dest));
    const run = await runSource(
      c,
      ['migrate', '--pid', String(pid), '--to', `${hosts.destAddr}:${dest.port}`, '--bandwidth', '500mbit', '--after', 'resume', ...psk],
      hosts.exec(hosts.source),
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.report!.verified).toBe(true);
    expect(run.report!.rounds.length).toBeGreaterThan(1);
    expect(leftovers(pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await selfCheck(p, pid, /^churn check/)).toMatch(/^churn check ok/);
  });

  it('a workload that keeps allocating during the migration verifies', async () => {
    const p = c.proc(
      start(hosts.exec(hosts.source)[0], [
        ...hosts.exec(hosts.source).slice(1),
        `${WORKLOADS}/alloc`,
        '--mb-per-s',
        '32',
        '--max-mb',
        '256',
        '--block-kb',
        '64',
      ]),
    );
    const pid = Number((await p.waitFor(/^alloc pid=(\d+) ready/))[1]);
    await new Promise((r) => setTimeout(r, 500));
    const dest = await startDest(c, ['--once', '--host', hosts.destAddr, ...psk], hosts.exec(hosts.dest));
    const run = await runSource(
      c,
      ['migrate', '--pid', String(pid), '--to', `${hosts.destAddr}:${dest.port}`, '--bandwidth', '500mbit', '--after', 'resume', ...psk],
      hosts.exec(hosts.source),
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(run.report!.verified).toBe(true);
    expect(leftovers(pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await selfCheck(p, pid, /^alloc check/)).toMatch(/^alloc check ok/);
  });
});

describe.skipIf(skip)('the network cut between the two hosts', () => {
  let hosts: TwoHosts;
  const c = new Cleanup();
  beforeAll(() => {
    hosts = makeTwoHosts({ rate: '100mbit' });
  });
  afterEach(() => c.run());
  afterAll(() => hosts?.destroy());

  it('mid-round: the source gives up after --timeout, the process runs on unharmed', async () => {
    const mw = await startMw(c, ['--mb', '64', '--pattern', 'hotspot', '--write-rate', '5000'], hosts.exec(hosts.source));
    const dest = await startDest(c, ['--once', '--host', hosts.destAddr, '--insecure'], hosts.exec(hosts.dest));
    const src = runSource(
      c,
      ['migrate', '--image-only', '--pid', String(mw.pid), '--to', `${hosts.destAddr}:${dest.port}`, '--timeout', '3'],
      hosts.exec(hosts.source),
    );
    await new Promise((r) => setTimeout(r, 1500)); // 64 MiB at 100 Mbit/s: round 1 lasts about 5 s
    hosts.link(false);
    const t0 = Date.now();
    const r = await src;
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/^forecopy-source: the connection to the destination failed: .*(took no data|acknowledged no page batch)/);
    expect(r.stderr.split('\n')).toHaveLength(1);
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    hosts.link(true);
  });

  it('at stop-and-copy: migrated verified, or the process runs on unharmed — never both, never neither', async () => {
    const mw = await startMw(c, ['--mb', '32', '--pattern', 'hotspot', '--write-rate', '20000'], hosts.exec(hosts.source));
    const dest = await startDest(c, ['--once', '--host', hosts.destAddr, '--insecure'], hosts.exec(hosts.dest));
    const src = runSource(
      c,
      ['migrate', '--image-only', '--pid', String(mw.pid), '--to', `${hosts.destAddr}:${dest.port}`, '--timeout', '3', '--after', 'kill'],
      hosts.exec(hosts.source),
    );
    // Cut the link the moment the destination hears that the process is frozen.
    await dest.proc.waitFor(/the source froze the process/, 60_000);
    hosts.link(false);
    const r = await src;
    hosts.link(true);
    const manifests = fs.readdirSync(dest.imageDir).filter((d) => /^[0-9a-f]{32}$/.test(d));
    if (r.code === 0) {
      // The final round got through before the cut: a verified move, the source process gone.
      expect(r.report!.verified).toBe(true);
      expect(await mw.proc.exited).toBe(128 + 9);
    } else {
      expect(r.code).toBe(5);
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(await mwCheck(mw)).toMatch(/^mw check ok/);
      expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
      await dest.proc.kill();
      expect(manifests).toHaveLength(0);
    }
  });
});

/** Sends SIGUSR1 and returns the workload's self-check line. */
