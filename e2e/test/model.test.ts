import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, leftovers, mwCheck, rootSkipReason, runSource, startDest, startMw } from '../src/procs.js';

/** `forecopy-source model` saves a Markov model of a live process; `migrate --model` uses it. */
const skip = rootSkipReason();
if (skip) console.warn(`model: skipped: ${skip}`);

describe.skipIf(skip)('saved Markov models', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  it('models a process, saves the model, and migrates with it', async () => {
    // A 1 MiB hot spot and S = 64 regions of 1 MiB: one state per hot zone, a learnable cycle.
    const mw = await startMw(c, ['--mb', '64', '--pattern', 'hotspot', '--hot-mb', '1', '--write-rate', '20000', '--dwell-ms', '300']);
    const file = path.join(c.tmpdir(), 'mw.model');
    const m = await runSource(c, ['model', '--pid', String(mw.pid), '--seconds', '3', '--states', '64', '--out', file]);
    expect(m.stderr).toBe('');
    expect(m.code).toBe(0);
    expect(m.stdout).toMatch(new RegExp(`^model of pid ${mw.pid}: \\d+ bytes, written to `));
    expect(fs.statSync(file).size).toBeGreaterThan(100);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });

    const dest = await startDest(c, ['--once']);
    const run = await runSource(c, [
      'migrate',
      '--pid',
      String(mw.pid),
      '--to',
      `127.0.0.1:${dest.port}`,
      '--policy',
      'markov',
      '--model',
      file,
      '--bandwidth',
      '500mbit',
      '--after',
      'resume',
    ]);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    const r = run.report!;
    expect(r.verified).toBe(true);
    expect(r.policy).toBe('markov');
    expect(r.modelMs).toBeLessThan(1000); // loaded, not modelled again
    expect(r.policyStatus.model.states).toBe(64);
    expect(r.policyStatus.model.observedStates).toBeGreaterThan(1);
    expect(r.policyStatus.enabled).toBe(true); // the process still follows its model
    expect(r.rounds[0].pagesFiltered).toBeGreaterThan(0); // the filter held pages back in round 1
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('refuses a file that is not a model, in one line', async () => {
    const mw = await startMw(c, ['--mb', '8', '--write-rate', '1000']);
    const file = path.join(c.tmpdir(), 'junk.model');
    fs.writeFileSync(file, 'not a model');
    const dest = await startDest(c);
    const run = await runSource(c, [
      'migrate',
      '--image-only',
      '--pid',
      String(mw.pid),
      '--to',
      `127.0.0.1:${dest.port}`,
      '--policy',
      'markov',
      '--model',
      file,
    ]);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(`forecopy-source: ${file} is not a forecopy model: not a forecopy model (bad magic)`);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });
});
