import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PageBitmap, encodeTraceHeader, encodeTraceSample } from '@forecopy/filter';
import {
  Cleanup,
  ROOT,
  SOURCE_BIN,
  WORKLOADS,
  leftovers,
  mwCheck,
  rootSkipReason,
  runSource,
  start,
  startMw,
  untilTracked,
} from '../src/procs.js';

/** forecopy-sim over the recorded mw trace kept in the repository (e2e/fixtures). */
const SIM = path.join(ROOT, 'packages/source-agent/bin/forecopy-sim.mjs');
const TRACE = path.join(ROOT, 'e2e/fixtures/mw-64-hotspot.trace');

function sim(args: string[]) {
  const r = spawnSync(process.execPath, [SIM, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('forecopy-sim on a recorded trace', () => {
  it('simulates every policy, deterministically, with the oracle as the bound', () => {
    const csv = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-sim-')), 'rows.csv');
    const args = [
      '--trace',
      TRACE,
      '--policy',
      'precopy,xen-skip,tpo,markov,forecast,oracle',
      '--states',
      '64,128',
      '--model-seconds',
      '5',
      '--bandwidth',
      '200mbit',
      '--json',
    ];
    const html = path.join(path.dirname(csv), 'sweep.html');
    const svg = path.join(path.dirname(csv), 'sweep');
    const a = sim([...args, '--csv', csv, '--html', html, '--svg', svg]);
    expect(a.stderr).toBe('');
    expect(a.code).toBe(0);
    const rows = JSON.parse(a.stdout) as Array<{
      policy: string;
      states: number | null;
      pagesSent: number;
      pagesResent: number;
      memoryPages: number;
      downtimeMs: number;
      rounds: Array<{ pagesSent: number; pagesResent: number }>;
      shareOfOracle: number | null;
    }>;
    expect(rows.map((r) => `${r.policy}${r.states ?? ''}`)).toEqual([
      'precopy',
      'xen-skip',
      'tpo',
      'markov64',
      'markov128',
      'forecast',
      'oracle',
    ]);
    const by = (p: string) => rows.find((r) => `${r.policy}${r.states ?? ''}` === p)!;
    for (const r of rows) {
      expect(r.pagesSent).toBeGreaterThanOrEqual(by('oracle').pagesSent);
      expect(r.rounds.length).toBeGreaterThan(1);
      // The pages sent again, round by round: the rest is the pages sent at all, the same for every
      // policy here (the trace maps no memory while it runs, and each policy sends every page).
      expect(r.pagesResent).toBe(r.rounds.reduce((n, x) => n + x.pagesResent, 0));
      expect(r.pagesSent - r.pagesResent).toBe(by('precopy').pagesSent - by('precopy').pagesResent);
    }
    expect(by('precopy').pagesResent).toBeGreaterThan(0);
    expect(by('oracle').shareOfOracle).toBe(1);
    expect(by('precopy').shareOfOracle).toBe(0);
    // On this trace (a 1 MiB hot spot, S = 64 regions of 1 MiB) the paper's filter saves pages.
    expect(by('markov64').pagesSent).toBeLessThan(by('precopy').pagesSent);
    // The oracle is a bound at pre-copy's downtime; forecast saves pages with no model given.
    expect(by('oracle').downtimeMs).toBeLessThanOrEqual(by('precopy').downtimeMs);
    expect(by('forecast').pagesSent).toBeLessThan(by('xen-skip').pagesSent);
    const lines = fs.readFileSync(csv, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(rows.length + 1);
    expect(lines[0].split(',').at(-1)).toBe('pages_resent');
    expect(lines[1].split(',').at(-1)).toBe(String(rows[0].pagesResent));
    const page = fs.readFileSync(html, 'utf8');
    expect(page.match(/<svg /g)).toHaveLength(3); // downtime, time, pages: the Fig. 4-6 analogs
    expect(page.match(/<rect /g)).toHaveLength(3 * rows.length);
    expect(page).toContain(`${by('oracle').pagesSent.toLocaleString('en-US')} pages`);
    for (const [key, text] of [
      ['downtime', `${by('oracle').downtimeMs.toFixed(0)} ms`],
      ['time', 'Migration time'],
      ['pages', `${by('markov64').pagesSent.toLocaleString('en-US')} pages`],
    ]) {
      const file = fs.readFileSync(`${svg}-${key}.svg`, 'utf8'); // standalone charts, one per figure
      expect(file).toMatch(/^<\?xml [^>]*\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
      expect(file.match(/<rect /g)).toHaveLength(rows.length + 1); // a bar per row and the background
      expect(file).toContain(text);
    }
    fs.rmSync(path.dirname(csv), { recursive: true, force: true });
    expect(sim(args).stdout).toBe(a.stdout); // same trace, same flags: same numbers
  });

  it("meets a sample's writes within its interval, or (--write-times stamp) all at its end as before", () => {
    const run = (extra: string[]) => {
      const r = sim(['--trace', TRACE, '--policy', 'precopy', '--model-seconds', '5', '--bandwidth', '500mbit', '--json', ...extra]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      return (
        JSON.parse(r.stdout) as Array<{ pagesSent: number; downtimeMs: number; rounds: Array<{ pagesDirtied: number; final: boolean }> }>
      )[0];
    };
    // Counted at the stamps, the last rounds (each shorter than a sample) met no write at all and
    // pre-copy of this writing process stopped with nothing left: session 17's numbers.
    const stamp = run(['--write-times', 'stamp']);
    expect(stamp).toMatchObject({ pagesSent: 21_175, downtimeMs: 0 });
    const spread = run([]);
    expect(run(['--write-times', 'spread'])).toEqual(spread);
    expect(spread.rounds.filter((r) => !r.final).every((r) => r.pagesDirtied > 0)).toBe(true);
    expect(spread.downtimeMs).toBeGreaterThan(0);
    const bad = sim(['--trace', TRACE, '--write-times', 'later']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^forecopy-sim: .*write-times.*\n$/);
    expect(bad.stderr.split('\n')).toHaveLength(2);
  });

  it('puts each pair side by side by default: precopy and markov, xen-skip and markov --skip-redirtied', () => {
    const r = sim(['--trace', TRACE, '--model-seconds', '5', '--bandwidth', '200mbit', '--json']);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{
      policy: string;
      pagesSent: number;
      baseline: string | null;
      savingVsBaseline: number | null;
    }>;
    expect(rows.map((x) => x.policy)).toEqual(['precopy', 'markov', 'xen-skip', 'markov+skip', 'tpo', 'forecast', 'oracle']);
    const by = (p: string) => rows.find((x) => x.policy === p)!;
    expect(by('markov').baseline).toBe('precopy');
    expect(by('markov').savingVsBaseline).toBe(by('precopy').pagesSent - by('markov').pagesSent);
    expect(by('markov+skip').baseline).toBe('xen-skip');
    expect(by('markov+skip').savingVsBaseline).toBe(by('xen-skip').pagesSent - by('markov+skip').pagesSent);
    expect(sim(['--trace', TRACE, '--model-seconds', '5', '--bandwidth', '200mbit']).stdout).toMatch(
      /markov\+skip\s+256\s.* vs xen-skip\n/,
    );
  });

  it('says so when the process mapped or unmapped memory during the trace, and counts only what was mapped', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-sim-'));
    try {
      const file = path.join(dir, 'grow.trace');
      const parts = [encodeTraceHeader({ intervalMs: 50, pageSize: 4096, meta: {} })];
      for (let i = 1; i <= 40; i++) {
        const size = i <= 20 ? 100 : 300; // the process maps 200 more pages after 1 s, and unmaps 100 of them at 1.5 s
        parts.push(
          encodeTraceSample(
            i * 50,
            PageBitmap.fromIndices(size, i === 21 ? Array.from({ length: 200 }, (_, k) => 100 + k) : [1, 2, 3]),
            i === 30 ? [[200, 300]] : [],
          ),
        );
      }
      fs.writeFileSync(file, Buffer.concat(parts));
      const r = sim(['--trace', file, '--policy', 'precopy', '--model-seconds', '1', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const [pre] = JSON.parse(r.stdout);
      expect(pre.memoryPages).toBe(100);
      expect(pre.rounds[0].pagesSent).toBe(100); // what was mapped at the start, not all 300
      const t = sim(['--trace', file, '--policy', 'precopy', '--model-seconds', '1']);
      expect(t.stdout.split('\n')[1]).toBe(
        'the process mapped 100 pages when the trace began and 200 more during it; 100 were unmapped: round 1 sends the pages mapped at the start, a mapping counts as written when it appears, and pages no longer mapped are not sent',
      );
      expect(sim(['--trace', TRACE, '--policy', 'precopy']).stdout).not.toContain('grew');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says which runs outlasted the trace, and how long a trace would replay them whole', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-sim-'));
    try {
      // 1 s of a 200-page process; at 1 Mbit/s (about 30 pages a second) pre-copy needs seconds.
      const file = path.join(dir, 'short.trace');
      const parts = [encodeTraceHeader({ intervalMs: 50, pageSize: 4096, meta: {} })];
      for (let i = 1; i <= 20; i++) parts.push(encodeTraceSample(i * 50, PageBitmap.fromIndices(200, [1, 2, 3])));
      fs.writeFileSync(file, Buffer.concat(parts));
      const args = ['--trace', file, '--policy', 'precopy', '--model-seconds', '0.5', '--bandwidth', '1mbit'];
      const j = sim([...args, '--json']);
      expect(j.code, j.stderr).toBe(0);
      const [pre] = JSON.parse(j.stdout);
      expect(pre.wrapped).toBe(true);
      const need = Math.ceil(0.5 + pre.totalMs / 1000);
      expect(need).toBeGreaterThan(1);
      const html = path.join(dir, 'short.html');
      const t = sim([...args, '--html', html]);
      expect(t.code, t.stderr).toBe(0);
      expect(fs.readFileSync(html, 'utf8')).toContain(`1 of 1 runs outlasted the trace and replayed it from its start again`);
      expect(fs.readFileSync(html, 'utf8')).toContain(`(forecopy-source record --seconds ${need})`);
      // The table marks the run in a column of its own, and so does the page.
      const lines = t.stdout.split('\n');
      const head = lines.findIndex((l) => l.startsWith('policy'));
      expect(lines[head]).toMatch(/ wrapped$/);
      expect(lines[head + 1]).toMatch(/^precopy .* yes$/);
      expect(fs.readFileSync(html, 'utf8')).toContain('<th>wrapped</th>');
      expect(lines[1]).toBe(
        `1 of 1 runs outlasted the trace and replayed it from its start again, as if the process began anew (the longest, precopy, ran ${(pre.totalMs / 1000).toFixed(1)} s where the trace has 0.5 s after the start): their figures count what the trace's start wrote once more. Record ${need} s or more (forecopy-source record --seconds ${need}) to replay them whole`,
      );
      // A run within the trace says nothing of it.
      const fits = sim(['--trace', TRACE, '--policy', 'precopy', '--model-seconds', '5']);
      expect(fits.code, fits.stderr).toBe(0);
      expect(fits.stdout).not.toContain('outlasted');
      expect(fits.stdout).not.toContain('wrapped');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("with --downtime-limit-ms stops by QEMU's rule with no data cap, as migrate does; auto-converge weighs each round or, as QEMU, each period", () => {
    const one = (extra: string[]) => {
      const r = sim(['--trace', TRACE, '--policy', 'precopy', '--model-seconds', '5', '--json', ...extra]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout)[0];
    };
    // 50 Mbit/s: the fixture's writer never fits 300 ms without a throttle.
    const slow = ['--bandwidth', '50mbit', '--downtime-limit-ms', '300'];
    expect(one(slow).stopReason).toBe('max-rounds');
    expect(one([...slow, '--max-factor', '3']).stopReason).toBe('max-factor');
    expect(one(['--bandwidth', '50mbit']).stopReason).toBe('max-factor'); // old Xen's rules keep their 3x
    // 200 Mbit/s and a 20 ms limit: rounds shorter than a second. Weighed every round, the
    // throttle rises within a few rounds and the rest converges in seconds; weighed over periods
    // of 1 s, as QEMU does, it rises every 2 s at most, and the rounds are paced near the round
    // cap so that it can still reach its highest: the rest converges, later.
    const fast = ['--bandwidth', '200mbit', '--downtime-limit-ms', '20', '--auto-converge', 'on'];
    const perRound = one(fast);
    const perPeriod = one([...fast, '--throttle-period-ms', '1000']);
    const firstRise = (row: { throttles: number[] }) => row.throttles.findIndex((t) => t > 0);
    expect(firstRise(perRound)).toBeGreaterThan(0);
    expect(firstRise(perPeriod)).toBeGreaterThan(firstRise(perRound));
    for (const row of [perRound, perPeriod]) expect(['min-remaining', 'downtime-limit']).toContain(row.stopReason);
    const steps = new Set(perPeriod.throttles).size - 1; // each took two periods of 1 s or more
    expect(perPeriod.totalMs).toBeGreaterThanOrEqual(steps * 2000);
    expect(perPeriod.totalMs).toBeGreaterThan(perRound.totalMs);
    expect(perPeriod.throttledMs).toBeGreaterThan(perRound.throttledMs);
    expect(sim(['--trace', TRACE, '--throttle-period-ms', '1000']).stderr).toBe(
      'forecopy-sim: --throttle-period-ms is a setting of auto-converge: add --auto-converge on\n',
    );
    expect(sim(['--trace', TRACE, '--auto-converge', 'on', '--throttle-period-ms', '-1']).stderr).toBe(
      'forecopy-sim: --throttle-period-ms must be a number of ms, 0 or more, got -1\n',
    );
    // The throttle slowing the process rather than thinning its writes: the same rule raises it,
    // and the rest converges; the rounds meet other writes than the thinned ones.
    const slowed = one([...fast, '--throttle-model', 'slow']);
    expect(['min-remaining', 'downtime-limit']).toContain(slowed.stopReason);
    expect(firstRise(slowed)).toBe(firstRise(perRound)); // nothing differs before the throttle
    expect(slowed.rounds.slice(0, firstRise(slowed))).toEqual(perRound.rounds.slice(0, firstRise(perRound)));
    expect(slowed.rounds.map((r: { pagesDirtied: number }) => r.pagesDirtied)).not.toEqual(
      perRound.rounds.map((r: { pagesDirtied: number }) => r.pagesDirtied),
    );
    expect(sim(['--trace', TRACE, '--throttle-model', 'slow']).stderr).toBe(
      'forecopy-sim: --throttle-model is a setting of auto-converge: add --auto-converge on\n',
    );
  });

  it('says what is wrong with bad input, in one line', () => {
    const r = sim(['--trace', path.join(ROOT, 'README.md')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^forecopy-sim: cannot read the trace .*README.md: not a forecopy trace \(bad magic\)\n$/);
    const p = sim(['--trace', TRACE, '--policy', 'magic']);
    expect(p.code).toBe(2);
    expect(p.stderr).toBe(
      'forecopy-sim: unknown policy magic: one of precopy, xen-skip, tpo, markov, forecast, markov+skip, oracle, oracle-unbounded\n',
    );
    for (const [flag, value, said] of [
      ['--max-rounds', '0', 'a whole number >= 1, got 0'],
      ['--max-rounds', 'many', 'a whole number >= 1, got NaN'],
      ['--min-remaining-pages', '-5', 'a whole number >= 0, got -5'],
      ['--max-factor', '-3', 'a number > 0, got -3'],
      ['--downtime-limit-ms', '0', 'a number > 0, got 0'],
      ['--model-seconds', '-1', 'a number >= 0, got -1'],
      ['--lwws-threshold', '7', 'in (0, 1], got 7'],
    ]) {
      const b = sim(['--trace', TRACE, '--policy', 'precopy', flag, value]);
      expect(b.code, flag).toBe(2);
      expect(b.stderr).toBe(`forecopy-sim: ${flag} must be ${said}\n`);
    }
    expect(sim(['--trace', TRACE, '--policy', ',']).stderr).toMatch(/^forecopy-sim: --policy names no policy: one or more of precopy,/);
    // An option given twice: the last one counts.
    expect(sim(['--trace', 'no-such.trace', '--trace', TRACE, '--policy', 'precopy']).code).toBe(0);
    const empty = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-sim-')), 'empty.trace');
    fs.writeFileSync(empty, encodeTraceHeader({ intervalMs: 50, pageSize: 4096, meta: {} }));
    const e = sim(['--trace', empty]);
    fs.rmSync(path.dirname(empty), { recursive: true, force: true });
    expect(e.code).toBe(2);
    expect(e.stderr).toBe(`forecopy-sim: the trace ${empty} has no samples: record for longer than one interval\n`);
    const w = sim(['--trace', TRACE, '--svg', path.join(ROOT, 'no-such-dir', 'x')]);
    expect(w.code).toBe(2);
    expect(w.stderr).toMatch(/^forecopy-sim: cannot write .*no-such-dir\/x-downtime\.svg: ENOENT\n$/);
  });
});

describe('bench/trace-costs.mjs (Table 1 on a recorded trace)', () => {
  it("measures the model's and the filter's costs over the trace's own samples", () => {
    const run = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bench/trace-costs.mjs'), ...args], { encoding: 'utf8' });
    const r = run(['--trace', TRACE, '--states', '64', '--model-seconds', '5', '--json']);
    expect(r.stderr).toBe('');
    const j = JSON.parse(r.stdout);
    expect(j.pages).toBe(16473);
    expect(j.states).toBe(64);
    expect(j.modelSamples).toBeGreaterThan(90); // 5 s of 50 ms samples
    expect(j.modelSamples).toBeLessThan(110);
    expect(j.rounds).toBe(Math.floor((j.samples - j.modelSamples) / 20));
    for (const k of ['modellingMsPerSample', 'buildMs', 'observeMsPerSample', 'forecastFilterMsPerRound']) expect(j[k]).toBeGreaterThan(0);
    expect(j.modelBytes).toBeGreaterThan(0);
    expect(j.heldPages).toBeGreaterThan(0); // the 1 MiB hot spot's LWWS is held back
    const bad = run(['--trace', path.join(ROOT, 'README.md')]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^trace-costs: cannot read .*README.md: not a forecopy trace/);
  });
});

describe("bench/acceptance.mjs (issue 14's acceptance on traces of one's own)", () => {
  it("runs the acceptance command and gives the verdicts forecopy-sim's rows call for", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-acc-'));
    const run = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bench/acceptance.mjs'), ...args], { encoding: 'utf8' });
    try {
      const r = run(['--rules', 'xen', '--jobs', '1', '--out', dir, `${TRACE}:5`]);
      expect(r.status, r.stderr).toBe(0);
      type R = {
        policy: string;
        states: number | null;
        pagesSent: number;
        downtimeMs: number;
        shareOfOracle: number | null;
        wrapped: boolean;
      };
      const rows = JSON.parse(fs.readFileSync(path.join(dir, 'mw-64-hotspot.xen.json'), 'utf8')) as R[];
      // The rows are the acceptance command's: forecopy-sim run directly gives the same.
      const direct = sim(['--trace', TRACE, '--bandwidth', '500mbit', '--model-seconds', '5', '--policy', 'forecast,precopy', '--json']);
      const d = JSON.parse(direct.stdout) as R[];
      for (const p of ['forecast', 'precopy'])
        expect(rows.find((x) => x.policy === p)?.pagesSent).toBe(d.find((x) => x.policy === p)?.pagesSent);
      expect(rows.filter((x) => x.policy === 'markov+skip').map((x) => x.states)).toEqual([64, 128, 256, 512, 1024]);
      // The verdicts, worked out here from the rows.
      const fc = rows.find((x) => x.policy === 'forecast') as R;
      const pre = rows.find((x) => x.policy === 'precopy') as R;
      const best = Math.min(...rows.filter((x) => ['xen-skip', 'tpo', 'markov', 'markov+skip'].includes(x.policy)).map((x) => x.pagesSent));
      const fewest = fc.pagesSent <= best ? 'yes' : `no: ${(fc.pagesSent - best).toLocaleString('en-US')} more`;
      const line = r.stdout.split('\n').find((l) => l.startsWith('| mw-64-hotspot |')) as string;
      expect(line).toContain(`| **${fc.pagesSent.toLocaleString('en-US')} / ${fc.downtimeMs.toFixed(1)}** |`);
      expect(line).toContain(`| ${fewest}; ${fc.downtimeMs <= pre.downtimeMs + 1e-9 ? 'yes' : 'no'}; `);
      const n = (ok: boolean) => (ok ? 1 : 0);
      expect(r.stdout).toContain(
        `Tally, every trace: fewest pages ${n(fc.pagesSent <= best)} of 1; downtime no higher than pre-copy's ${n(fc.downtimeMs <= pre.downtimeMs + 1e-9)} of 1;`,
      );
      expect(r.stdout).not.toContain("QEMU's rule");
      // A user's mistake is a message, not a stack.
      const bad = run([path.join(dir, 'none.trace')]);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/^acceptance: no such trace file: .*none.trace\n/);
      expect(bad.stderr).not.toContain('    at ');
      // A file that is not a trace: forecopy-sim's own message and exit code.
      const notTrace = run(['--rules', 'xen', path.join(ROOT, 'README.md')]);
      expect(notTrace.status).toBe(2);
      expect(notTrace.stderr).toMatch(/^acceptance: .*README.md \(xen\): forecopy-sim: cannot read the trace .*not a forecopy trace/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(rootSkipReason())('bench/record.mjs (programs recorded for the simulator)', () => {
  const c = new Cleanup();
  afterEach(() => c.run());
  const run = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'bench/record.mjs'), ...args], { encoding: 'utf8' });

  it('records each program of a workloads file, kills its process group after, and names the ones it could not', async () => {
    const dir = c.tmpdir();
    const pidFile = path.join(dir, 'mw.pid');
    const file = path.join(dir, 'programs.json');
    fs.writeFileSync(
      file,
      JSON.stringify([
        { name: 'mw', cmd: `${WORKLOADS}/mw --mb 8 --pattern seq --write-rate 5000 >/dev/null & echo $! > ${pidFile}; echo pid=$!; wait` },
        { name: 'quits', cmd: 'echo starting; exit 3' },
      ]),
    );
    const out = path.join(dir, 'traces');
    const r = run(['--workloads', file, '--out', out, '--seconds', '1', '--warmup', '0.5']);
    expect(r.status, r.stderr).toBe(1); // one program not recorded
    expect(r.stderr).toContain('[1/2] mw: 0.5 s, then 1 s recorded');
    expect(r.stderr).toMatch(/quits exited \(3\) before it printed pid=N/);
    expect(r.stderr).toMatch(/not recorded: quits\n$/);
    const { decodeTrace } = await import('@forecopy/filter');
    const t = decodeTrace(new Uint8Array(fs.readFileSync(path.join(out, 'mw.trace'))));
    expect(t.samples.length).toBeGreaterThanOrEqual(15);
    expect(t.samples.reduce((n, s) => n + s.pages.count(), 0)).toBeGreaterThan(2500);
    expect(fs.existsSync(path.join(out, 'quits.trace'))).toBe(false);
    const recorded = JSON.parse(fs.readFileSync(path.join(out, 'recorded.json'), 'utf8'));
    expect(recorded.programs.map((p: { name: string; recorded: boolean }) => [p.name, p.recorded])).toEqual([
      ['mw', true],
      ['quits', false],
    ]);
    // The program's group was killed: mw is gone (or a zombie, until its new parent reaps it).
    const pid = Number(fs.readFileSync(pidFile, 'utf8'));
    c.defer(() => {
      if (state() !== undefined && state() !== 'Z') process.kill(pid, 'SIGKILL'); // left running: a failure below; end it
    });
    const state = () =>
      /^State:\s+(\w)/m.exec(fs.existsSync(`/proc/${pid}/status`) ? fs.readFileSync(`/proc/${pid}/status`, 'utf8') : '')?.[1];
    for (let i = 0; i < 100 && state() !== undefined && state() !== 'Z'; i++) await new Promise((res) => setTimeout(res, 20));
    expect([undefined, 'Z']).toContain(state());
  });

  it('a mistake in its arguments is a message, not a stack', () => {
    const none = run(['--out', c.tmpdir()]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/^record: --workloads FILE is required\n/);
    const only = run(['--workloads', path.join(ROOT, 'bench/programs.json'), '--out', c.tmpdir(), '--only', 'nope']);
    expect(only.status).toBe(2);
    expect(only.stderr).toMatch(/^record: --only names no program of .*programs.json: nope\n/);
    const twice = path.join(c.tmpdir(), 'twice.json');
    fs.writeFileSync(
      twice,
      JSON.stringify([
        { name: 'a', cmd: 'echo pid=$$' },
        { name: 'a', cmd: 'echo pid=$$' },
      ]),
    );
    const dup = run(['--workloads', twice, '--out', c.tmpdir()]);
    expect(dup.status).toBe(2); // the second would overwrite the first's trace
    expect(dup.stderr).toMatch(/^record: "a" appears twice in .*twice.json\n/);
    for (const r of [none, only, dup]) expect(r.stderr).not.toContain('    at ');
  });
});

describe.skipIf(rootSkipReason())('forecopy-source record', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  it('records a live process into a trace the simulator reads, and leaves no tracking', async () => {
    const mw = await startMw(c, ['--mb', '16', '--pattern', 'seq', '--write-rate', '5000']);
    const out = path.join(c.tmpdir(), 'mw.trace');
    const r = await runSource(c, ['record', '--pid', String(mw.pid), '--seconds', '1', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`^trace of pid ${mw.pid}: \\d+ samples of 50 ms`));
    const { decodeTrace } = await import('@forecopy/filter');
    const t = decodeTrace(new Uint8Array(fs.readFileSync(out)));
    expect(t.samples.length).toBeGreaterThanOrEqual(15);
    const written = t.samples.reduce((n, s) => n + s.pages.count(), 0);
    expect(written).toBeGreaterThan(2500); // 5,000 pages/s for 1 s, sequential: distinct pages
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('interrupted, record removes its tracking from the process and says so', async () => {
    const mw = await startMw(c, ['--mb', '8', '--write-rate', '1000']);
    const rec = c.proc(
      start(process.execPath, [
        SOURCE_BIN,
        'record',
        '--pid',
        String(mw.pid),
        '--seconds',
        '60',
        '--out',
        path.join(c.tmpdir(), 'x.trace'),
      ]),
    );
    // Once it records (the process has its userfaultfd), Ctrl-C.
    await untilTracked(mw.pid, 5000);
    expect(leftovers(mw.pid).uffds).toBe(1);
    process.kill(rec.pid, 'SIGINT');
    expect(await rec.exited).toBe(130);
    expect(rec.stderrLines.filter(Boolean)).toEqual([`forecopy-source: interrupted (SIGINT); removed the tracking from process ${mw.pid}`]);
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('a second agent on a process already tracked is refused, and the first records on, whole', async () => {
    const mw = await startMw(c, ['--mb', '16', '--pattern', 'seq', '--write-rate', '5000']);
    const first = path.join(c.tmpdir(), 'first.trace');
    const rec = c.proc(start(process.execPath, [SOURCE_BIN, 'record', '--pid', String(mw.pid), '--seconds', '2', '--out', first]));
    await untilTracked(mw.pid, 5000);
    expect(leftovers(mw.pid).uffds).toBe(1);
    // Two trackers would re-arm each other's pages, and the second's ranges are refused: it had
    // recorded nothing and said nothing.
    for (const args of [
      ['record', '--pid', String(mw.pid), '--seconds', '1', '--out', path.join(c.tmpdir(), 'second.trace')],
      ['model', '--pid', String(mw.pid), '--seconds', '1', '--out', path.join(c.tmpdir(), 'second.model')],
    ]) {
      const second = await runSource(c, args);
      expect(second.code, args[0]).toBe(3);
      expect(second.stderr).toMatch(
        new RegExp(
          `^forecopy-source: process ${mw.pid} is already tracked by forecopy \\(a userfaultfd of another agent, fd \\d+\\): one agent at a time`,
        ),
      );
      expect(second.stderr.split('\n')).toHaveLength(1);
    }
    expect(fs.existsSync(path.join(c.tmpdir(), 'second.trace'))).toBe(false);
    expect(await rec.exited).toBe(0);
    const { decodeTrace } = await import('@forecopy/filter');
    const t = decodeTrace(new Uint8Array(fs.readFileSync(first)));
    const written = t.samples.reduce((n, s) => n + s.pages.count(), 0);
    expect(written).toBeGreaterThan(5000); // 5,000 pages/s for 2 s: the first saw every write
    expect(leftovers(mw.pid)).toEqual({ uffds: 0, tracerPid: 0 });
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('records the mappings a process makes and unmaps, so that the simulator counts only what is mapped', async () => {
    // A real program that allocates, fills and frees 40 MiB again and again: over glibc's largest
    // mmap threshold (32 MiB), so every buffer is a mapping of its own, made and unmapped.
    const script = [
      'import sys, time',
      'print("ready", flush=True)',
      'while True:',
      '    b = bytearray(40 << 20)',
      '    b[::4096] = b"x" * len(range(0, len(b), 4096))',
      '    time.sleep(0.15)',
      '    del b',
      '    time.sleep(0.05)',
    ].join('\n');
    const py = c.proc(start('/usr/bin/python3', ['-c', script]));
    await py.waitFor(/^ready/);
    const out = path.join(c.tmpdir(), 'churn.trace');
    const r = await runSource(c, ['record', '--pid', String(py.pid), '--seconds', '2', '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const { decodeTrace } = await import('@forecopy/filter');
    const t = decodeTrace(new Uint8Array(fs.readFileSync(out)));
    expect(t.version).toBe(2);
    const first = t.samples[0].pages.size;
    const died = t.samples.flatMap((s) => s.died ?? []);
    const diedPages = died.reduce((n, [a, b]) => n + b - a, 0);
    // About ten buffers of 10,240 pages came and went in 2 s; each one's indices are new.
    expect(t.totalPages - first).toBeGreaterThanOrEqual(3 * 10240);
    expect(diedPages).toBeGreaterThanOrEqual(2 * 10240);
    // A mapping that appeared during the trace counted as written when it appeared.
    const born = died.filter(([a]) => a >= first);
    expect(born.length).toBeGreaterThan(0);
    for (const [a] of born)
      expect(
        t.samples.some((s) => a < s.pages.size && s.pages.has(a)),
        `index ${a}`,
      ).toBe(true);
    const s = sim(['--trace', out, '--policy', 'precopy', '--model-seconds', '1', '--json']);
    expect(s.code, s.stderr).toBe(0);
    // Mapped when the simulated migration starts: the program's own pages and at most two buffers
    // (the page space holds every buffer's indices, five or more).
    expect(JSON.parse(s.stdout)[0].memoryPages).toBeLessThanOrEqual(first + 2 * 10240);
    expect(leftovers(py.pid)).toEqual({ uffds: 0, tracerPid: 0 });
  });
});
