import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DirtyRange, type DirtyTracker, isMigratable, readMaps } from '@forecopy/linux';
import { PageSpace } from '../src/page-space.js';
import { type Sample, Sampler } from '../src/sampler.js';
import { writeFileAtomic } from '../src/model-watch.js';
import { waitsForSample } from '../src/migration/model.js';
import { MarkovPolicy, ModelBuilder, PageBitmap, PrecopyPolicy } from '@forecopy/filter';

// The sampler over a real process's mappings (a `sleep` of our own: its maps stay put) and a
// tracker that reports what the test says was written.

let child: ChildProcess;

beforeAll(async () => {
  child = spawn('sleep', ['60'], { stdio: 'ignore' });
  // Until the exec has happened and the loader is done: sleep's own mappings, and stable.
  let prev = '';
  for (let i = 0; i < 100; i++) {
    const maps = fs.readFileSync(`/proc/${child.pid}/maps`, 'utf8');
    if (maps.includes('sleep') && maps === prev) break;
    prev = maps;
    await new Promise((r) => setTimeout(r, 50));
  }
});

afterAll(() => {
  child.kill('SIGKILL');
});

function setup(intervalMs: number) {
  const pid = child.pid!;
  const space = new PageSpace(4096);
  space.reconcile(readMaps(pid).filter(isMigratable));
  let writes: DirtyRange[] = [];
  const tracker = {
    kind: 'uffd-wp',
    start() {},
    collect: () => {
      const written = writes;
      writes = [];
      return { written, added: [], unregistrable: [], scanMs: 0 };
    },
    stop() {},
    installedFds: () => [],
  } as unknown as DirtyTracker;
  const seg = space.list().find((s) => s.pages >= 8)!; // room for the pages the tests write
  const write = (...pages: number[]) => {
    for (const p of pages) writes.push({ start: seg.start + p * 4096, end: seg.start + (p + 1) * 4096 });
  };
  const sampler = new Sampler(pid, tracker, space, intervalMs);
  const got: Sample[] = [];
  sampler.onSample((s) => got.push(s));
  return { sampler, got, write, base: seg.indexBase };
}

describe('Sampler: only whole samples reach the listeners', () => {
  it('keeps the partial scans of take() and peek() for the next whole sample of the timer', async () => {
    const { sampler, got, write, base } = setup(40);
    sampler.start();
    try {
      write(0);
      expect([...sampler.take()]).toEqual([base]); // the round's dirty set has it at once
      write(1);
      expect([...sampler.peek(0)]).toEqual([base + 1]);
      expect(got).toHaveLength(0); // but no listener saw a partial sample
      await sampler.wholeSampleSince(performance.now());
      expect(got).toHaveLength(1);
      expect([...got[0].pages]).toEqual([base, base + 1]); // the whole interval's writes, once
      expect(got[0].spanMs).toBeGreaterThanOrEqual(30);
      write(2);
      sampler.take();
      await sampler.wholeSampleSince(performance.now());
      expect([...got[1].pages]).toEqual([base + 2]);
      for (const s of got) expect(s.spanMs).toBeGreaterThanOrEqual(30);
    } finally {
      sampler.stop();
    }
  });

  it('without a timer, a scan emits once a whole interval has passed since the last sample', async () => {
    const { sampler, got, write, base } = setup(30);
    write(3);
    sampler.scan();
    expect(got).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 40));
    write(4);
    sampler.scan();
    expect(got).toHaveLength(1);
    expect([...got[0].pages]).toEqual([base + 3, base + 4]);
  });

  it('wholeSampleSince waits for a sample stamped after the time given, and not at all once stopped', async () => {
    const { sampler, got } = setup(25);
    sampler.start();
    const t = performance.now();
    await sampler.wholeSampleSince(t);
    expect(got).toHaveLength(1);
    expect(got[0].atMs).toBeGreaterThanOrEqual(t - performance.now() + sampler.now() - 1);
    const waiting = sampler.wholeSampleSince(performance.now() + 10_000);
    sampler.stop();
    await waiting; // resolved by stop(): no sample will come
    await sampler.wholeSampleSince(performance.now() + 10_000);
  });
});

describe('waitsForSample (runRound)', () => {
  it('makes a round wait only for a policy that watches the samples and holds pages back', () => {
    expect(waitsForSample(new PrecopyPolicy())).toBe(false);
    const n = 64 * 256;
    const x = new PageBitmap(n);
    x.setRange(0, 10);
    const b = new ModelBuilder(n, { states: 256 });
    for (let i = 0; i < 5; i++) b.observe(x);
    const m = new MarkovPolicy(b.build(), { intervalMs: 50, initialPageRate: 100 });
    m.observeSample(x, 0);
    expect(m.holdBack(PageBitmap.full(n), { round: 1, pageRate: 100, nowMs: 0 }).count()).toBe(10);
    expect(waitsForSample(m)).toBe(true);
    m.holdBack(new PageBitmap(n), { round: 2, pageRate: 100, nowMs: 0 }); // nothing to hold
    expect(waitsForSample(m)).toBe(false);
  });
});

describe('writeFileAtomic (model --watch)', () => {
  it('replaces the file in one step and leaves no temporary file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-model-'));
    try {
      const file = path.join(dir, 'app.model');
      writeFileAtomic(file, new Uint8Array([1, 2, 3]));
      writeFileAtomic(file, new Uint8Array([4, 5]));
      expect([...fs.readFileSync(file)]).toEqual([4, 5]);
      expect(fs.readdirSync(dir)).toEqual(['app.model']);
      expect(() => writeFileAtomic(path.join(dir, 'missing', 'x.model'), new Uint8Array(1))).toThrow(/cannot write the model file/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
