import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  expectUntracked,
  expectVerified,
  migrateArgs,
  mwCheck,
  rootSkipReason,
  runSource,
  startDest,
  startLocalMigration,
  startMw,
  warnIfSkipped,
} from '../src/procs.js';

/** `forecopy-source model` saves a Markov model of a live process; `migrate --model` uses it. */
const skip = warnIfSkipped('model', rootSkipReason());

/** `migrate` arguments: the Markov policy with the model saved in `file`. */
const withModel = (file: string) => ['--policy', 'markov', '--model', file];

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
    expectUntracked(mw.pid);

    const dest = await startDest(c, ['--once']);
    const run = await runSource(c, migrateArgs(mw.pid, dest, [...withModel(file), '--bandwidth', '500mbit', '--after', 'resume']));
    const r = expectVerified(run);
    expect(r.policy).toBe('markov');
    expect(r.modelMs).toBeLessThan(1000); // loaded, not modelled again
    expect(r.policyStatus.model.states).toBe(64);
    expect(r.policyStatus.model.observedStates).toBeGreaterThan(1);
    expect(r.policyStatus.enabled).toBe(true); // the process still follows its model
    expect(r.rounds[0].pagesFiltered).toBeGreaterThan(0); // the filter held pages back in round 1
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('refuses a file that is not a model, in one line', async () => {
    const file = path.join(c.tmpdir(), 'junk.model');
    fs.writeFileSync(file, 'not a model');
    const { mw, source } = await startLocalMigration(c, {
      mw: ['--mb', '8', '--write-rate', '1000'],
      dest: [],
      migrate: ['--image-only', ...withModel(file)],
    });
    const run = await source;
    expect(run.code).toBe(2);
    expect(run.stderr).toBe(`forecopy-source: ${file} is not a forecopy model: not a forecopy model (bad magic)`);
    expectUntracked(mw.pid);
  });
});
