import { describe, expect, it } from 'vitest';
import {
  OraclePolicy,
  PageBitmap,
  PrecopyPolicy,
  QEMU_THROTTLE,
  SlowedClock,
  TraceClock,
  XEN_DEFAULT_STOP_RULES,
  createPolicy,
  decodeTrace,
  encodeTraceHeader,
  encodeTraceSample,
  simulate,
  MarkovPolicy,
  ModelBuilder,
  type Policy,
  type Trace,
} from '../src/index.js';

/** 100 pages; every 10 ms pages 0..9 are written again. Link: 1,000 pages/s (1 ms a page). */
function hotTrace(): Trace {
  const samples = [];
  for (let t = 10; t <= 2000; t += 10) samples.push({ atMs: t, pages: PageBitmap.fromIndices(100, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]) });
  return { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
}
const rules = { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 5 };
const opts = { pageRate: 1000, stopRules: rules, startMs: 0 };

describe('simulate (hand-computed)', () => {
  it('precopy resends the hot pages every round until 3x the memory was sent', () => {
    const r = simulate(hotTrace(), createPolicy('precopy'), opts);
    // Round 1: 100 pages (100 ms); rounds 2..21: the 10 hot pages each (10 ms). After round 21,
    // 100 + 20 x 10 = 300 pages = 3x: stop; stop-and-copy sends the 10 written meanwhile.
    expect(r.rounds.filter((x) => !x.final).map((x) => x.pagesSent)).toEqual([100, ...Array(20).fill(10)]);
    expect(r.stopReason).toBe('max-factor');
    expect(r.pagesSent).toBe(310);
    expect(r.downtimeMs).toBe(10);
    expect(r.totalMs).toBe(310);
    // Each round after the first sends the ten hot pages again, and so does the stop-and-copy.
    expect(r.rounds.map((x) => x.pagesResent)).toEqual([0, ...Array(20).fill(10), 10]);
    expect(r.pagesResent).toBe(210);
  });

  it('the oracle holds the hot pages back and sends each page once', () => {
    const trace = hotTrace();
    const r = simulate(trace, new OraclePolicy(new TraceClock(trace), 1000), opts);
    // Round 1 holds back 0..9 (written during its 100 ms) and sends 90 pages; every later round
    // would be written again while sent, so it holds all ten until the round limit; stop-and-copy
    // sends them: 90 + 10 pages.
    expect(r.rounds[0]).toMatchObject({ pagesSent: 90, pagesFiltered: 10 });
    expect(r.pagesSent).toBe(100);
    expect(r.stopReason).toBe('max-rounds');
    expect(r.downtimeMs).toBe(10);
    expect(r.pagesResent).toBe(0);
    expect(r.rounds.every((x) => x.pagesResent === 0)).toBe(true);
  });

  it('counts the pages a round sends that an earlier one sent: the rest is each page sent once', () => {
    for (const name of ['precopy', 'xen-skip', 'tpo'] as const) {
      const r = simulate(hotTrace(), createPolicy(name, { totalPages: 100 }), opts);
      expect(r.pagesResent).toBe(r.rounds.reduce((s, x) => s + x.pagesResent, 0));
      // All 100 pages are mapped throughout and round 1 sends them all (or holds the hot ones
      // and sends them later): each is sent once, and every other send is again.
      expect(r.pagesSent - r.pagesResent).toBe(100);
      for (const x of r.rounds) expect(x.pagesResent).toBeLessThanOrEqual(x.pagesSent);
    }
  });

  it('xen-skip skips pages written since the round began, before each batch', () => {
    // Pages 0..9 are written at 50 ms; a batch of 64 pages goes out at 0 ms (0..63) and the next
    // one at 64 ms (64..99): nothing of it was written, so nothing is skipped in round 1.
    const trace: Trace = {
      intervalMs: 50,
      pageSize: 4096,
      meta: {},
      totalPages: 100,
      samples: [
        { atMs: 50, pages: PageBitmap.fromIndices(100, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 70, 71]) },
        { atMs: 1000, pages: new PageBitmap(100) },
      ],
    };
    const r = simulate(trace, createPolicy('xen-skip'), { ...opts, batchPages: 64 });
    // 70 and 71 were written at 50 ms, before their batch went out at 64 ms: skipped.
    expect(r.rounds[0]).toMatchObject({ pagesSent: 98, pagesFiltered: 2, pagesDirtied: 12 });
    const p = simulate(trace, createPolicy('precopy'), { ...opts, batchPages: 64 });
    expect(p.rounds[0]).toMatchObject({ pagesSent: 100, pagesDirtied: 12 });
  });

  it('is deterministic', () => {
    const a = simulate(hotTrace(), createPolicy('tpo', { totalPages: 100 }), opts);
    const b = simulate(hotTrace(), createPolicy('tpo', { totalPages: 100 }), opts);
    expect(b).toEqual(a);
  });
});

/** A policy that watches the samples, holds back what `hold` says, and logs what it saw when. */
function watcher(hold: (u: PageBitmap) => PageBitmap) {
  const log: string[] = [];
  const policy: Policy = {
    name: 'watcher',
    holdBack(u, ctx) {
      log.push(`plan@${ctx.nowMs}`);
      return hold(u);
    },
    observeSample(_s, atMs) {
      log.push(`sample@${atMs}`);
    },
  };
  return { policy, log };
}

describe('simulate: the modelling window and rounds as the live agent runs them', () => {
  it('shows a policy only the last sample before the start, not the modelling window', () => {
    const { policy, log } = watcher((u) => new PageBitmap(u.size));
    simulate(hotTrace(), policy, { ...opts, startMs: 500 });
    expect(log.slice(0, 2)).toEqual(['sample@500', 'plan@500']);
  });

  it('runs no fit test over the modelling window: the first one covers samples of the migration', () => {
    // The hot spot moves through 8 regions, one a sample; the model is built from 0..1000 ms.
    const samples = [];
    for (let t = 10; t <= 3000; t += 10) samples.push({ atMs: t, pages: PageBitmap.fromIndices(6400, [((t / 10) % 8) * 100 + 5]) });
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 6400 };
    const b = new ModelBuilder(6400, { states: 64 });
    for (const x of samples) if (x.atMs <= 1000) b.observe(x.pages);
    const m = new MarkovPolicy(b.build(), { intervalMs: 10, initialPageRate: 1000, fitWindow: 5 });
    const tested: number[] = [];
    const plan = m.holdBack.bind(m);
    m.holdBack = (u, ctx) => {
      tested.push(m.status().fitWindowsTested);
      return plan(u, ctx);
    };
    simulate(trace, m, { ...opts, startMs: 1000 });
    expect(tested[0]).toBe(0); // replaying the window would have run 20 tests of 5 transitions
    expect(tested.at(-1)).toBeGreaterThan(0);
    expect(m.events).toEqual([]);
  });

  it('a round of a policy that watches the samples lasts until the next sample: holding all back still lets time pass', () => {
    const { policy, log } = watcher((u) => u.clone()); // holds everything: every round sends nothing
    const r = simulate(hotTrace(), policy, opts);
    const plans = log.filter((x) => x.startsWith('plan@')).map((x) => Number(x.slice(5)));
    expect(r.rounds.filter((x) => !x.final)).toHaveLength(30);
    // One sample (10 ms) between plans, and a fresh sample before each.
    expect(plans.slice(0, 4)).toEqual([0, 10, 20, 30]);
    for (let i = 1; i < log.length; i++) if (log[i].startsWith('plan@')) expect(log[i - 1]).toMatch(/^sample@/);
    // The last round the cap allows does not wait: no round follows to be planned.
    expect(r.totalMs).toBe(290 + r.downtimeMs);
    // Stop-and-copy sends the held pages: all 100.
    expect(r.pagesSent).toBe(100);
  });

  it('a policy that does not watch the samples, or holds nothing back, is not held up', () => {
    const hold = { name: 'hold', holdBack: (u: PageBitmap) => u.clone() };
    const r = simulate(hotTrace(), hold, opts);
    expect(r.totalMs).toBe(r.downtimeMs); // 30 rounds that send nothing, at no cost
    const { policy } = watcher((u) => new PageBitmap(u.size));
    expect(simulate(hotTrace(), policy, opts)).toMatchObject({ totalMs: 310, pagesSent: 310 }); // as precopy
  });
});

describe('simulate: mappings that appear and vanish, as the live agent sees them', () => {
  const hot = (t: number, extra: number[] = []) => PageBitmap.fromIndices(t <= 200 ? 100 : 150, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...extra]);

  it('round 1 sends the pages mapped at the start; a mapping that appears later is sent once it has', () => {
    // 100 pages to t = 200; at 210 a mapping of 50 pages appears (the sample counts them written).
    const samples = [];
    for (let t = 10; t <= 600; t += 10) {
      samples.push({ atMs: t, pages: hot(t, t === 210 ? Array.from({ length: 50 }, (_, k) => 100 + k) : []) });
    }
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 150 };
    const r = simulate(trace, createPolicy('precopy'), opts);
    expect(r.memoryPages).toBe(100);
    expect(r.rounds[0].pagesSent).toBe(100); // not 150: the 50 pages did not exist yet
    // Rounds of the 10 hot pages (10 ms each) until the one across t = 210, then the 50 new pages with them.
    const sent = r.rounds.map((x) => x.pagesSent);
    expect(sent.slice(1, 12)).toEqual(Array(11).fill(10));
    expect(sent[12]).toBe(60);
  });

  it('round 1 leaves out a mapping that vanished before the start', () => {
    const samples = [{ atMs: 10, pages: hot(10), died: [[50, 100]] as Array<[number, number]> }];
    for (let t = 20; t <= 400; t += 10) samples.push({ atMs: t, pages: hot(t) });
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const r = simulate(trace, createPolicy('precopy'), { ...opts, startMs: 15 });
    expect(r.memoryPages).toBe(50);
    expect(r.rounds[0].pagesSent).toBe(50);
  });

  it('pages written before their mapping vanished are not sent after it has', () => {
    // Pages 0..9 are written every 10 ms, 60..69 until 110; the mapping of 50..99 is gone by 120.
    const samples = [];
    for (let t = 10; t <= 400; t += 10) {
      samples.push({
        atMs: t,
        pages: hot(0, t <= 110 ? [60, 61, 62, 63, 64, 65, 66, 67, 68, 69] : []),
        ...(t === 120 ? { died: [[50, 100]] as Array<[number, number]> } : {}),
      });
    }
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const r = simulate(trace, createPolicy('precopy'), opts);
    // Round 1: 100 pages (to 100 ms); round 2: the 20 written meanwhile (to 120 ms); round 3: only
    // 0..9 (60..69 were written at 110, but their mapping is gone at 120).
    expect(r.rounds.slice(0, 3).map((x) => x.pagesSent)).toEqual([100, 20, 10]);
    const { died: _, ...noDeath } = samples[11];
    const without = simulate({ ...trace, samples: samples.map((x, i) => (i === 11 ? noDeath : x)) }, createPolicy('precopy'), opts);
    expect(without.rounds.slice(0, 3).map((x) => x.pagesSent)).toEqual([100, 20, 20]);
  });

  it('a batch leaves out the pages whose mapping vanished while the round ran, as the live sender does', () => {
    // Round 1 sends 0..99 in batches of 10 pages (10 ms each); the sample stamped 80 ms says the
    // mapping of 50..99 vanished. The batches from 80 ms on find pages 80..99 gone; 50..79 were
    // sent before.
    const samples = [];
    for (let t = 10; t <= 400; t += 10) {
      samples.push({ atMs: t, pages: hot(0), ...(t === 80 ? { died: [[50, 100]] as Array<[number, number]> } : {}) });
    }
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const r = simulate(trace, createPolicy('precopy'), { ...opts, batchPages: 10 });
    expect(r.rounds[0].pagesSent).toBe(80);
    expect(r.rounds[0].durationMs).toBe(80);
    const { died: _, ...noDeath } = samples[7];
    const without = simulate({ ...trace, samples: samples.map((x, i) => (i === 7 ? noDeath : x)) }, createPolicy('precopy'), {
      ...opts,
      batchPages: 10,
    });
    expect(without.rounds[0].pagesSent).toBe(100);
  });

  it('a policy shown the samples from the trace start sees them from the first, not the last one as a write at 0', () => {
    const samples = [10, 20, 30, 40].map((t) => ({ atMs: t, pages: PageBitmap.fromIndices(100, [t]) }));
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const seen: number[] = [];
    class Watcher extends PrecopyPolicy {
      observeSample(_s: PageBitmap, atMs: number): void {
        seen.push(atMs);
      }
    }
    simulate(trace, new Watcher(), { ...opts, startMs: 25, warmupFromMs: -1 });
    expect(seen.slice(0, 2)).toEqual([10, 20]);
    expect(new TraceClock(trace).lastAtOrBefore(5)).toBeNull();
  });

  it('the clairvoyant filter holds the pages whose mapping vanishes before the round would end', () => {
    // The mapping of 50..99 vanishes at 60 ms; round 1 would send 100 pages in 100 ms.
    const samples = [];
    for (let t = 10; t <= 400; t += 10) {
      samples.push({ atMs: t, pages: hot(0), ...(t === 60 ? { died: [[50, 100]] as Array<[number, number]> } : {}) });
    }
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const r = simulate(trace, new OraclePolicy(new TraceClock(trace), 1000), opts);
    expect(r.rounds[0].pagesSent).toBe(40); // 0..49 less the hot 0..9, written again meanwhile
    expect(simulate(trace, createPolicy('precopy'), opts).rounds[0].pagesSent).toBe(100); // one batch, read at 0 ms
  });

  it('after a wrap a mapping that had vanished is there again, written, and is sent', () => {
    // The mapping of 50..99 vanishes at 100 ms; the trace ends at 200 ms. A migration from 150 ms
    // sends 0..49 (to 200 ms): at 200 ms the trace wraps and the process is back where it began,
    // with 50..99 mapped; they count as written then, and round 2 sends them with the hot pages.
    const samples = [];
    for (let t = 10; t <= 200; t += 10) {
      samples.push({ atMs: t, pages: hot(0), ...(t === 100 ? { died: [[50, 100]] as Array<[number, number]> } : {}) });
    }
    const trace: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 100 };
    const r = simulate(trace, createPolicy('precopy'), { ...opts, startMs: 150 });
    expect(r.wrapped).toBe(true);
    expect(r.rounds.slice(0, 3).map((x) => x.pagesSent)).toEqual([50, 60, 10]);
    const clock = new TraceClock(trace);
    expect(clock.written(190, 200, 100).count()).toBe(60);
    expect(clock.liveAt(200, 100).count()).toBe(100);
    expect(clock.written(200, 210, 100).count()).toBe(10);
    expect(clock.written(0, 10, 100).count()).toBe(10); // the first lap starts as the trace did
  });
});

describe('simulate: when within a sample its writes are met', () => {
  /** 2,000 pages written in every 50 ms sample, to 1 s. */
  const everySample = (): Trace => {
    const samples = [];
    for (let t = 50; t <= 1000; t += 50)
      samples.push({
        atMs: t,
        pages: PageBitmap.fromIndices(
          2000,
          Array.from({ length: 2000 }, (_, p) => p),
        ),
      });
    return { intervalMs: 50, pageSize: 4096, meta: {}, samples, totalPages: 2000 };
  };

  it("a round that ends within a sample's interval meets part of its writes; the parts share them out exactly", () => {
    const clock = new TraceClock(everySample());
    const first = clock.written(100, 120, 2000); // 20 ms of the interval (100, 150]
    const rest = clock.written(120, 150, 2000);
    expect(first.count()).toBeGreaterThan(0.3 * 2000);
    expect(first.count()).toBeLessThan(0.5 * 2000);
    expect(first.clone().and(rest).count()).toBe(0);
    expect(first.clone().or(rest).count()).toBe(2000);
    // As the simulator counted them up to session 17: all at the stamp, so 20 ms met none.
    const stamp = new TraceClock(everySample(), 'stamp');
    expect(stamp.written(100, 120, 2000).count()).toBe(0);
    expect(stamp.written(120, 150, 2000).count()).toBe(2000);
  });

  it('a page written in every sample is met by any round as long as an interval', () => {
    const clock = new TraceClock(everySample());
    for (const from of [100, 113.7, 131, 149.9]) expect(clock.written(from, from + 50, 2000).count()).toBe(2000);
    // And by a shorter one in proportion, whichever pages: each page has its own instant.
    const a = clock.written(100, 110, 2000);
    const b = clock.written(105, 115, 2000);
    expect(a.count()).toBeGreaterThan(0.1 * 2000);
    expect(a.count()).toBeLessThan(0.3 * 2000);
    expect(a.clone().and(b).count()).toBeLessThan(a.count());
  });

  it('the pages of a mapping that appears are written at its stamp, when it is mapped', () => {
    const samples = [
      { atMs: 50, pages: PageBitmap.fromIndices(100, [1]) },
      { atMs: 100, pages: PageBitmap.fromIndices(150, [1, ...Array.from({ length: 50 }, (_, k) => 100 + k)]) },
    ];
    const clock = new TraceClock({ intervalMs: 50, pageSize: 4096, meta: {}, samples, totalPages: 150 });
    const before = clock.written(50, 99.9, 150);
    expect(before.count()).toBeLessThanOrEqual(1); // page 1, if its instant is before 99.9
    expect(clock.written(50, 100, 150).count()).toBe(51);
  });

  it('pre-copy of a process that writes as it runs: short rounds do not end on a stamp with nothing met', () => {
    // 2,000 pages a second on a link of 80,000 pages/s: after round 1 (25 ms) every round is a
    // fraction of an interval. Counted at the stamp, a round between two stamps met no write and
    // pre-copy stopped with nothing left; spread, every round meets its share.
    const trace = everySample();
    const o = { pageRate: 80_000, stopRules: { ...XEN_DEFAULT_STOP_RULES, minRemainingPages: 50 }, startMs: 60 };
    const stamp = simulate(trace, createPolicy('precopy'), { ...o, writeTimes: 'stamp' });
    const spread = simulate(trace, createPolicy('precopy'), o);
    expect(stamp.rounds.some((x) => !x.final && x.pagesDirtied === 0)).toBe(true);
    expect(stamp.downtimeMs).toBe(0);
    expect(spread.rounds.filter((x) => !x.final).every((x) => x.pagesDirtied > 0)).toBe(true);
    expect(spread.downtimeMs).toBeGreaterThan(0);
  });
});

describe('trace format', () => {
  it('round-trips samples as runs and rejects a foreign file', () => {
    const s1 = PageBitmap.fromIndices(5000, [0, 1, 2, 3, 100, 4999]);
    const buf = Buffer.concat([
      encodeTraceHeader({ intervalMs: 50, pageSize: 4096, meta: { pid: 7 } }),
      encodeTraceSample(50, s1),
      encodeTraceSample(100, new PageBitmap(6000)),
    ]);
    const t = decodeTrace(buf);
    expect(t.intervalMs).toBe(50);
    expect(t.meta.pid).toBe(7);
    expect(t.samples.map((s) => s.atMs)).toEqual([50, 100]);
    expect([...t.samples[0].pages]).toEqual([0, 1, 2, 3, 100, 4999]);
    expect(t.totalPages).toBe(6000);
    expect(() => decodeTrace(Buffer.from('garbage that is long enough to read'))).toThrow(/bad magic/);
    expect(() => decodeTrace(buf.subarray(0, buf.length - 2))).toThrow(/truncated/);
  });

  it('version 2 carries the indices whose mapping vanished; version 1 files are still read', () => {
    const header = encodeTraceHeader({ intervalMs: 50, pageSize: 4096, meta: {} });
    const s1 = encodeTraceSample(50, PageBitmap.fromIndices(300, [5]), [
      [10, 20],
      [200, 300],
    ]);
    const s2 = encodeTraceSample(100, PageBitmap.fromIndices(300, [6]));
    const t = decodeTrace(Buffer.concat([header, s1, s2]));
    expect(t.version).toBe(2);
    expect(t.samples[0].died).toEqual([
      [10, 20],
      [200, 300],
    ]);
    expect(t.samples[1].died).toBeUndefined();
    expect(() => decodeTrace(Buffer.concat([header, encodeTraceSample(50, new PageBitmap(30), [[20, 40]])]))).toThrow(
      /outside its page space/,
    );
    // Version 1: the same samples without the died runs (the last byte of each, a count of 0).
    const v1 = Buffer.concat([header, s2.subarray(0, s2.length - 1), s2.subarray(0, s2.length - 1)]);
    v1.writeUInt32LE(1, 4);
    const old = decodeTrace(v1);
    expect(old.version).toBe(1);
    expect(old.samples.map((x) => [...x.pages])).toEqual([[6], [6]]);
    v1.writeUInt32LE(3, 4);
    expect(() => decodeTrace(v1)).toThrow(/version 3 is not supported/);
  });
});

describe('simulate: a throttle that slows the process (throttleModel slow)', () => {
  /** 1,000 pages; the sample stamped 10 (i + 1) ms writes pages 10 i .. 10 i + 9: a sweep, once. */
  function sweep(): Trace {
    const samples = [];
    for (let i = 0; i < 100; i++)
      samples.push({
        atMs: 10 * (i + 1),
        pages: PageBitmap.fromIndices(
          1000,
          Array.from({ length: 10 }, (_, j) => 10 * i + j),
        ),
      });
    return { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: 1000 };
  }

  it('runs the trace at the share of the clock the throttle leaves, from when it is raised', () => {
    const c = new SlowedClock(new TraceClock(sweep()));
    expect(c.processTime(250)).toBe(250); // no throttle: one clock
    c.throttle(100, 50);
    c.throttle(300, 90);
    expect(c.processTime(50)).toBe(50);
    expect(c.processTime(200)).toBe(150);
    expect(c.processTime(300)).toBe(200);
    expect(c.processTime(400)).toBeCloseTo(210, 9);
    expect(() => c.throttle(200, 20)).toThrow(RangeError); // not back in time
  });

  it('shows samples on the clock, each with the writes of the process time they hold: later, none lost', () => {
    const c = new SlowedClock(new TraceClock(sweep()));
    c.throttle(0, 50);
    const shown = [...c.shown(0, 1000, 1000, 50)];
    // Samples every 10 ms of the clock, as the sampler takes them, whatever the throttle.
    expect(shown.map((s) => s.atMs)).toEqual(Array.from({ length: 100 }, (_, i) => 10 * (i + 1)));
    // In 1 s of the clock the process ran 0.5 s: the first half of the sweep, each page once.
    const union = new PageBitmap(1000);
    let total = 0;
    for (const s of shown) {
      total += s.pages.count();
      union.or(s.pages);
    }
    expect(total).toBe(500);
    expect(union.count()).toBe(500);
    expect(union.countRange(0, 500)).toBe(500);
    // A thinning throttle drops about half of the writes instead, and the pages it drops are never written.
    const thin = new TraceClock(sweep());
    const thinUnion = new PageBitmap(1000);
    for (const s of thin.shown(0, 1000, 1000, 50)) thinUnion.or(s.pages);
    expect(thinUnion.count()).toBeGreaterThan(400);
    expect(thinUnion.count()).toBeLessThan(600);
    expect(thinUnion.countRange(500, 1000)).toBeGreaterThan(0);
  });

  it('is the thinning simulation to the page with no throttle, and converges a fast writer by slowing it', () => {
    const base = { pageRate: 1000, stopRules: rules, startMs: 0 };
    for (const name of ['precopy', 'xen-skip', 'forecast'] as const) {
      const thin = simulate(hotTrace(), createPolicy(name, { totalPages: 100 }), base);
      const slow = simulate(hotTrace(), createPolicy(name, { totalPages: 100 }), { ...base, throttleModel: 'slow' });
      expect(slow).toEqual(thin);
    }
    // 1,000 pages, 1,000 random pages written every 10 ms (about 630 distinct); the link sends
    // 200 a sample: pre-copy never fits 30 ms unthrottled. Slowed to 1% it writes 10 pages a sample.
    const N = 1000;
    let seed = 11;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const samples = Array.from({ length: 1000 }, (_, i) => {
      const pages = new PageBitmap(N);
      for (let k = 0; k < 1000; k++) pages.set(Math.floor(rnd() * N));
      return { atMs: 10 * (i + 1), pages };
    });
    const fast: Trace = { intervalMs: 10, pageSize: 4096, meta: {}, samples, totalPages: N };
    const qemu = {
      pageRate: 20_000,
      startMs: 0,
      stopRules: { maxRounds: 30, minRemainingPages: 0, maxFactor: Number.POSITIVE_INFINITY, downtimeLimitMs: 30 },
    };
    expect(simulate(fast, createPolicy('precopy'), qemu).stopReason).toBe('max-rounds');
    const r = simulate(fast, createPolicy('precopy'), { ...qemu, autoConverge: QEMU_THROTTLE, throttleModel: 'slow' });
    expect(r.stopReason).toBe('downtime-limit');
    expect(r.downtimeMs).toBeLessThanOrEqual(30);
    expect(Math.max(...r.throttles)).toBeGreaterThan(0);
    // Every round met the writes of the process time it held: its own share of the clock.
    const clock = new SlowedClock(new TraceClock(fast));
    let t = 0;
    for (const [i, x] of r.rounds.filter((y) => !y.final).entries()) {
      clock.throttle(t, r.throttles[i]);
      const expected = clock.written(t, t + x.durationMs, N).count();
      expect(x.pagesDirtied).toBe(expected);
      t += x.durationMs;
    }
  });
});
