import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Cleanup, leftovers, mwCheck, rootSkipReason, runSource, startDest, startMw } from '../e2e/src/procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from '../e2e/src/netns.js';

/**
 * A 2 GiB process migrated across the two network-namespace hosts (issue 5). Big migrations live
 * in benchmarks, not in the test suite: run it with `pnpm bench:two-hosts`. The veth link is not
 * capped here, so the run takes seconds, not the 35 s a 500 Mbit/s link would need for 2 GiB.
 * (2 cores on this machine, shared by the workload and both agents.)
 */
const skip = rootSkipReason() ?? netnsSupported();
if (skip) console.warn(`two-hosts-2g: skipped: ${skip}`);

describe.skipIf(skip)('2 GiB across two hosts', () => {
  let hosts: TwoHosts;
  const c = new Cleanup();
  beforeAll(() => {
    hosts = makeTwoHosts();
  });
  afterAll(async () => {
    await c.run();
    hosts?.destroy();
  });

  it('migrates mw --mb 2048 and verifies', async () => {
    const mw = await startMw(c, ['--mb', '2048', '--pattern', 'hotspot', '--write-rate', '20000'], hosts.exec(hosts.source));
    // Plain TCP on the namespaces' private link (no route out), to measure the transfer itself.
    const dest = await startDest(c, ['--once', '--host', hosts.destAddr, '--log-level', 'warn', '--insecure'], hosts.exec(hosts.dest));
    const run = await runSource(
      c,
      ['migrate', '--pid', String(mw.pid), '--to', `${hosts.destAddr}:${dest.port}`, '--after', 'resume'],
      hosts.exec(hosts.source),
    );
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const r = run.report!;
    expect(r.verified).toBe(true);
    expect(r.memoryPages).toBeGreaterThanOrEqual(524_288);
    console.log(
      `2 GiB across two hosts: downtime ${r.downtimeMs.toFixed(1)} ms, total ${r.totalMs.toFixed(0)} ms, verify ${r.verifyMs.toFixed(0)} ms, ${r.rounds.length} rounds, ${r.pagesSent} pages, ${(r.bytesSent / 2 ** 20).toFixed(0)} MiB on the wire, scans ${r.scans.count} at ${(r.scans.totalMs / r.scans.count).toFixed(2)} ms avg`,
    );
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  }, 600_000);
});
