import fs from 'node:fs';
import path from 'node:path';
import yargs, { type ArgumentsCamelCase, type Argv } from 'yargs';
import {
  FORECAST_MODES,
  MAX_STATES,
  MIN_STATES,
  MarkovPolicy,
  ModelBuilder,
  OraclePolicy,
  boundedOracle,
  POLICY_NAMES,
  XEN_DEFAULT_STOP_RULES,
  createPolicy,
  decodeTrace,
  isStateCount,
  simClock,
  simulate,
  type ForecastMode,
  type Policy,
  type SimReport,
  type Trace,
  QEMU_THROTTLE,
  type ThrottleParams,
  type ThrottleModel,
  type WriteTimes,
} from '@forecopy/filter';
import { defaultBatchPages } from '@forecopy/protocol';
import { numberFrom, parseBandwidth, parseThrottlePeriod, requireAutoConverge, roundOptions } from './units.js';
import { SIM_CHARTS, renderSimHtml, shareText, simChartSvg } from './report-html.js';
import { InputError, SourceError, fromYargs } from './errors.js';

// `forecopy-sim`: replays a recorded trace through the live agent's policy code over a modelled
// link. Deterministic: the same trace and flags give the same numbers.

/**
 * Every policy of the live agent; `markov+skip`, the paper's filter with Xen's per-batch skip
 * (`--policy markov --skip-redirtied`: the paper ran on Xen 3.3, whose pre-copy skips the pages
 * written again during the round, so its like-for-like baseline is xen-skip, as precopy is
 * markov's); and the clairvoyant oracle that only a trace makes possible.
 */
export const SIM_POLICIES = [...POLICY_NAMES, 'markov+skip', 'oracle', 'oracle-unbounded'] as const;
export type SimPolicyName = (typeof SIM_POLICIES)[number];
/** The default rows: each pair of a baseline and the paper's filter on it, then tpo and the bound. */
export const DEFAULT_SIM_POLICIES: readonly SimPolicyName[] = ['precopy', 'markov', 'xen-skip', 'markov+skip', 'tpo', 'forecast', 'oracle'];

function isSimPolicy(name: string): name is SimPolicyName {
  return SIM_POLICIES.some((p) => p === name);
}

interface Row extends SimReport {
  states: number | null;
  savingPages: number;
  shareOfOracle: number | null;
  /** The like-for-like baseline of a markov row: precopy, or xen-skip when it skips too. */
  baseline: 'precopy' | 'xen-skip' | null;
  /** Pages saved against that baseline (null for the other rows). */
  savingVsBaseline: number | null;
}

export interface SimulationOptions {
  policies: SimPolicyName[];
  states: number[];
  bandwidthBps: number;
  modelSeconds: number;
  forecast: ForecastMode;
  /** The `markov` rows skip too (`markov+skip` rows always do). */
  skipRedirtied: boolean;
  /** markov: rebuild the model once on a failed fit (ours), or disable the filter (the paper). */
  rebuild?: boolean;
  lwwsThreshold?: number;
  maxRounds: number;
  minRemainingPages: number;
  maxFactor: number;
  /** QEMU's stop rule: stop when the rest fits this many ms at the link rate (off when undefined). */
  downtimeLimitMs?: number;
  /** QEMU's auto-converge, as the live agent runs it. */
  autoConverge?: ThrottleParams;
  /** How the throttle meets the trace: it thins its writes (the default) or slows its clock. */
  throttleModel?: ThrottleModel;
  /** Where a round meets a sample's writes (TraceClock; default 'spread'). */
  writeTimes?: WriteTimes;
}

/** The paper's model of the trace's first `startMs`, at S states. */
function modelOf(trace: Trace, startMs: number, states: number, lwwsThreshold: number | undefined) {
  const b = new ModelBuilder(trace.totalPages, { states, ...(lwwsThreshold !== undefined ? { lwwsThreshold } : {}) });
  for (const s of trace.samples) if (s.atMs <= startMs) b.observe(s.pages);
  return b.build();
}

export function runSimulations(trace: Trace, o: SimulationOptions): Row[] {
  const pageRate = o.bandwidthBps / 8 / trace.pageSize;
  const startMs = o.modelSeconds * 1000;
  const stopRules = {
    maxRounds: o.maxRounds,
    minRemainingPages: o.minRemainingPages,
    maxFactor: o.maxFactor,
    ...(o.downtimeLimitMs !== undefined ? { downtimeLimitMs: o.downtimeLimitMs } : {}),
  };
  const simOpts = {
    pageRate,
    stopRules,
    startMs,
    batchPages: defaultBatchPages(o.bandwidthBps), // as the live sender's default
    ...(o.autoConverge ? { autoConverge: o.autoConverge } : {}),
    ...(o.writeTimes ? { writeTimes: o.writeTimes } : {}),
    ...(o.throttleModel ? { throttleModel: o.throttleModel } : {}),
  };
  // forecast learns online: it is shown the modelling window's samples (the window markov's model is built from).
  const run = (p: Policy, warmup = false) => simulate(trace, p, { ...simOpts, ...(warmup ? { warmupFromMs: -1 } : {}) });
  const base = run(createPolicy('precopy'));
  // The bound: the fewest pages of a clairvoyant filter at a downtime no higher than pre-copy's.
  const oracle = boundedOracle(trace, simOpts, base.downtimeMs, base);
  let xen: SimReport | null = null;
  const xenSkip = () => (xen ??= run(createPolicy('xen-skip')));
  const rows: Row[] = [];
  const add = (r: SimReport, states: number | null, name = r.policy) => {
    const saving = base.pagesSent - r.pagesSent;
    const baseline = states === null ? null : name === 'markov+skip' ? 'xen-skip' : 'precopy';
    const vs = baseline === 'xen-skip' ? xenSkip().pagesSent - r.pagesSent : baseline ? saving : null;
    rows.push({
      ...r,
      policy: name,
      states,
      savingPages: saving,
      shareOfOracle: null, // below, once the bound is known
      baseline,
      savingVsBaseline: vs,
    });
  };
  for (const name of o.policies) {
    if (name === 'precopy') add(base, null);
    else if (name === 'oracle') add(oracle, null);
    else if (name === 'oracle-unbounded') {
      const clock = simClock(trace, simOpts);
      add(simulate(trace, new OraclePolicy(clock, pageRate), simOpts, clock), null, name);
    } else if (name === 'xen-skip') add(xenSkip(), null);
    else if (name === 'markov' || name === 'markov+skip') {
      const skip = name === 'markov+skip' || o.skipRedirtied;
      for (const S of o.states) {
        const policy = new MarkovPolicy(modelOf(trace, startMs, S, o.lwwsThreshold), {
          intervalMs: trace.intervalMs,
          initialPageRate: pageRate,
          forecast: o.forecast,
          skipRedirtied: skip,
          ...(o.rebuild !== undefined ? { rebuild: o.rebuild } : {}),
        });
        add(run(policy), S, skip ? 'markov+skip' : 'markov');
      }
    } else if (name === 'forecast') {
      const policy = createPolicy('forecast', {
        totalPages: trace.totalPages,
        intervalMs: trace.intervalMs,
        initialPageRate: pageRate,
        stopRules,
      });
      add(run(policy, true), null);
    } else add(run(createPolicy(name, { totalPages: trace.totalPages })), null);
  }
  return withBound(rows, oracle, base);
}

/**
 * The bound is the clairvoyant variants' best, or a row's at no more downtime than pre-copy's if
 * that sends fewer (a clairvoyant filter can do what an online one does); every row's share of
 * the oracle's saving is measured against it.
 */
function withBound(rows: Row[], oracle: SimReport & { variant: string }, base: SimReport): Row[] {
  let bound: SimReport & { variant: string } = oracle;
  for (const r of rows) {
    if (r.policy === 'oracle' || r.policy === 'oracle-unbounded' || r.downtimeMs > base.downtimeMs + 1e-9) continue;
    if (r.pagesSent < bound.pagesSent) {
      const { states, savingPages, shareOfOracle, baseline, savingVsBaseline, ...report } = r;
      const as = `${r.policy}${states === null ? '' : ` S = ${states}`}`;
      bound = { ...report, policy: 'oracle', variant: `as ${as} (no clairvoyant variant tried sent fewer at pre-copy's downtime)` };
    }
  }
  const best = base.pagesSent - bound.pagesSent;
  return rows.map((r) => {
    const row = r.policy === 'oracle' ? { ...r, ...bound, savingPages: base.pagesSent - bound.pagesSent } : r;
    return { ...row, shareOfOracle: best > 0 ? row.savingPages / best : null };
  });
}

const list = (v: string) =>
  String(v)
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/** The stop rules and auto-converge: old Xen's by default, QEMU's with --downtime-limit-ms. */
function stopOptions<T>(y: Argv<T>) {
  return roundOptions(y)
    .option('max-factor', {
      type: 'number',
      coerce: numberFrom('max-factor', 0, true),
      describe: `stop when this multiple of the memory was sent (default ${XEN_DEFAULT_STOP_RULES.maxFactor}; none with --downtime-limit-ms, as migrate's QEMU rule)`,
    })
    .option('downtime-limit-ms', {
      type: 'number',
      coerce: numberFrom('downtime-limit-ms', 0, true),
      describe:
        "QEMU's rule, as migrate's default: stop when the rest fits this many ms at the link rate (the round cap stays; the data cap goes unless --max-factor)",
    })
    .option('auto-converge', {
      choices: ['on', 'off'] as const,
      default: 'off' as const,
      describe: "QEMU's auto-converge, as migrate runs it: a throttled process writes the throttle's share less",
    })
    .option('throttle-model', {
      choices: ['thin', 'slow'] as const,
      describe:
        "auto-converge: how the throttle meets the trace. thin, the default: each sample taken under it keeps the throttle's share less of its writes, at random; slow: the process runs at the share it leaves, as a CPU quota slows a program that computes, so that each 50 ms sample holds less of the trace's time and a write comes later, not never (a program paced by the clock may not be slowed at all: README)",
    })
    .option('throttle-period-ms', {
      type: 'number',
      describe:
        'auto-converge: weigh writes against sends over periods of more than this many ms, as QEMU does (1000; rounds are then paced near the round cap so that the throttle can still rise); 0, the default: every round',
    })
    .option('write-times', {
      choices: ['spread', 'stamp'] as const,
      default: 'spread' as const,
      describe:
        "where a round meets a sample's writes: spread over the sample's interval, as a process writes while it runs; stamp: all at the sample's end, as earlier versions counted them (a round shorter than a sample met all of them or none)",
    });
}

function simOptions(y: Argv) {
  const policies = y
    .option('trace', { type: 'string', demandOption: true, describe: 'trace file from forecopy-source record' })
    .option('policy', {
      type: 'string',
      default: DEFAULT_SIM_POLICIES.join(','),
      describe: `comma-separated: ${SIM_POLICIES.join(', ')} (markov+skip: markov --skip-redirtied, beside xen-skip)`,
    })
    .option('states', { type: 'string', default: '256', describe: 'markov: S, or a comma-separated sweep (64,128,256,512,1024)' })
    .option('bandwidth', { type: 'string', default: '500mbit', describe: 'the modelled link, e.g. 500mbit, 1gbit, 60MB (bytes/s)' })
    .option('model-seconds', {
      type: 'number',
      default: 10,
      coerce: numberFrom('model-seconds', 0, false),
      describe: 'markov models the first N seconds; every policy starts migrating there',
    })
    .option('forecast', {
      choices: FORECAST_MODES,
      default: 'chain' as const,
      describe: 'markov: forecast mode (see forecopy-source migrate --help)',
    })
    .option('skip-redirtied', {
      type: 'boolean',
      default: false,
      describe: "markov: the markov rows also skip pages written again during the round (Xen's to_skip), as markov+skip does",
    })
    .option('rebuild', {
      choices: ['on', 'off'] as const,
      describe:
        'markov: on a failed fit test rebuild the model once from the last 20 samples (ours), or disable the filter (off, the paper)',
    })
    .option('lwws-threshold', {
      type: 'number',
      coerce: (v: number) => {
        if (!(v > 0 && v <= 1)) throw new InputError(`--lwws-threshold must be in (0, 1], got ${v}`);
        return v;
      },
      describe: 'markov: LWWS threshold (default 0.25)',
    });
  return stopOptions(policies)
    .option('json', { type: 'boolean', default: false, describe: 'print JSON instead of a table' })
    .option('csv', { type: 'string', describe: 'also write the rows as CSV to this file' })
    .option('html', { type: 'string', describe: 'also write a self-contained HTML page with the charts (Fig. 4-6 analogs)' })
    .option('svg', {
      type: 'string',
      describe: 'also write the three charts as SVG files: PREFIX-downtime.svg, PREFIX-time.svg, PREFIX-pages.svg',
    })
    .example('$0 --trace mw.trace', 'every policy at 500 Mbit/s, markov with S = 256')
    .example('$0 --trace mw.trace --policy markov,oracle --states 64,128,256,512,1024 --csv sweep.csv', "the paper's sweep of S")
    .example('$0 --trace mw.trace --states 64,256,1024 --svg out/mw', 'charts as out/mw-downtime.svg, out/mw-time.svg, out/mw-pages.svg')
    .example(
      '$0 --trace mw.trace --downtime-limit-ms 300 --auto-converge on',
      "migrate's defaults: QEMU's rule, auto-converge weighed every round",
    )
    .example(
      '$0 --trace mw.trace --downtime-limit-ms 300 --auto-converge on --throttle-period-ms 1000',
      'auto-converge weighed over periods of 1 s, as QEMU does',
    )
    .example(
      '$0 --trace mw.trace --downtime-limit-ms 300 --auto-converge on --throttle-model slow',
      "migrate's defaults, the throttle slowing the process rather than thinning its writes",
    );
}

type SimArgs = ArgumentsCamelCase<ReturnType<typeof simOptions> extends Argv<infer T> ? T : never>;

/** The options checked and the trace read: what `runSimulations` needs. */
function simInputs(a: SimArgs): { trace: Trace; options: SimulationOptions } {
  const policies = list(a.policy).map((p) => {
    if (!isSimPolicy(p)) throw new InputError(`unknown policy ${p}: one of ${SIM_POLICIES.join(', ')}`);
    return p;
  });
  if (policies.length === 0) throw new InputError(`--policy names no policy: one or more of ${SIM_POLICIES.join(', ')}`);
  const states = list(a.states).map(Number);
  if (states.length === 0) throw new InputError('--states names no S: one or more of 64..1024, comma-separated');
  if (!states.every(isStateCount))
    throw new InputError(`--states must be whole numbers from ${MIN_STATES} to ${MAX_STATES}, got ${a.states}`);
  const trace = readTrace(a.trace);
  const bw = parseBandwidth(a.bandwidth);
  if (bw <= 0) throw new InputError('--bandwidth must be a rate for the simulation (e.g. 500mbit)');
  const periodMs = parseThrottlePeriod(a['throttle-period-ms'], a['auto-converge'] === 'on');
  if (a['throttle-model']) requireAutoConverge('throttle-model', a['auto-converge'] === 'on');
  const options: SimulationOptions = {
    policies,
    states,
    bandwidthBps: bw,
    modelSeconds: a['model-seconds'],
    forecast: a.forecast,
    skipRedirtied: a['skip-redirtied'],
    ...(a.rebuild !== undefined ? { rebuild: a.rebuild === 'on' } : {}),
    ...(a['lwws-threshold'] !== undefined ? { lwwsThreshold: a['lwws-threshold'] } : {}),
    maxRounds: a['max-rounds'],
    minRemainingPages: a['min-remaining-pages'],
    maxFactor: a['max-factor'] ?? (a['downtime-limit-ms'] !== undefined ? Number.POSITIVE_INFINITY : XEN_DEFAULT_STOP_RULES.maxFactor),
    ...(a['downtime-limit-ms'] !== undefined ? { downtimeLimitMs: a['downtime-limit-ms'] } : {}),
    ...(a['auto-converge'] === 'on' ? { autoConverge: { ...QEMU_THROTTLE, periodMs } } : {}),
    writeTimes: a['write-times'],
    ...(a['throttle-model'] ? { throttleModel: a['throttle-model'] } : {}),
  };
  return { trace, options };
}

function readTrace(file: string): Trace {
  let trace: Trace;
  try {
    trace = decodeTrace(new Uint8Array(fs.readFileSync(file)));
  } catch (e) {
    throw new InputError(`cannot read the trace ${file}: ${(e as Error).message}`);
  }
  if (trace.samples.length === 0) throw new InputError(`the trace ${file} has no samples: record for longer than one interval`);
  return trace;
}

/** The files asked for: --csv, --svg (one per chart), --html. */
function writeOutputs(a: SimArgs, rows: Row[], trace: Trace, wraps: string | null): void {
  if (a.csv) writeOut(a.csv, toCsv(rows));
  if (a.svg)
    for (const c of SIM_CHARTS)
      writeOut(`${a.svg}-${c.key}.svg`, simChartSvg(rows, `${c.title}: ${path.basename(a.trace)}, ${a.bandwidth}`, c.value, c.unit, true));
  if (a.html)
    writeOut(
      a.html,
      renderSimHtml(
        rows,
        `${a.trace}: ${trace.samples.length} samples of ${trace.intervalMs} ms, ${trace.totalPages} pages; link ${a.bandwidth}; modelled, deterministic${wraps ? `. ${wraps}` : ''}`,
      ),
    );
}

function runSim(a: SimArgs): void {
  const { trace, options } = simInputs(a);
  const rows = runSimulations(trace, options);
  const wraps = wrapNote(rows, trace, options.modelSeconds * 1000);
  writeOutputs(a, rows, trace, wraps);
  process.stdout.write(a.json ? `${JSON.stringify(rows, null, 2)}\n` : `${toTable(rows, trace, a.bandwidth, wraps)}\n`);
}

export async function simMain(argv: string[]): Promise<number> {
  try {
    await simOptions(
      yargs(argv)
        .scriptName('forecopy-sim')
        .usage(
          '$0 --trace FILE [options]\n\nReplays a dirty trace (forecopy-source record) through the pre-copy policies\nover a modelled link.',
        ),
    )
      .strict()
      // An option given twice: the last one counts (as with most commands), not an array of both.
      .parserConfiguration({ 'duplicate-arguments-array': false })
      .fail((msg, err) => {
        throw fromYargs(msg, err);
      })
      .help()
      .version(false)
      .wrap(null)
      .command('$0', 'simulate', () => {}, runSim)
      .parseAsync();
  } catch (e) {
    if (!(e instanceof SourceError)) {
      process.stderr.write(`forecopy-sim: internal error: ${(e as Error).stack}\n`);
      return 1;
    }
    process.stderr.write(`forecopy-sim: ${e.message}\n`);
    return e.exitCode;
  }
  return 0;
}

/** Writes an output file; a path that cannot be written is the user's to fix, not a crash. */
function writeOut(file: string, data: string): void {
  try {
    fs.writeFileSync(file, data);
  } catch (e) {
    throw new InputError(`cannot write ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function toCsv(rows: Row[]): string {
  const head =
    'policy,states,downtime_ms,total_ms,pages_sent,rounds,stop_reason,saving_pages,share_of_oracle,wrapped,baseline,saving_vs_baseline,throttled_ms,pages_resent';
  return `${[
    head,
    ...rows.map((r) =>
      [
        r.policy,
        r.states ?? '',
        r.downtimeMs.toFixed(3),
        r.totalMs.toFixed(3),
        r.pagesSent,
        r.rounds.length,
        r.stopReason,
        r.savingPages,
        r.shareOfOracle === null ? '' : r.shareOfOracle.toFixed(4),
        r.wrapped,
        r.baseline ?? '',
        r.savingVsBaseline ?? '',
        r.throttledMs.toFixed(3),
        r.pagesResent,
      ].join(','),
    ),
  ].join('\n')}\n`;
}

/**
 * Which runs outlasted the trace, and how long a trace would have to be for the longest to fit:
 * a run that wraps replays the trace's start again as if the process did it all over, so its
 * figures are as much the trace's length as the policy (a 1.5 GB process at 500 Mbit/s migrates
 * for a minute; a 20 s trace leaves 10 s after a 10 s model).
 */
function wrapNote(rows: Row[], trace: Trace, startMs: number): string | null {
  const wrapped = rows.filter((r) => r.wrapped);
  if (wrapped.length === 0) return null;
  const longest = wrapped.reduce((a, b) => (b.totalMs > a.totalMs ? b : a));
  const left = Math.max(0, (trace.samples.at(-1)?.atMs ?? 0) - startMs) / 1000;
  const need = Math.ceil((startMs + longest.totalMs) / 1000);
  const name = `${longest.policy}${longest.states === null ? '' : ` S = ${longest.states}`}`;
  return (
    `${wrapped.length} of ${rows.length} runs outlasted the trace and replayed it from its start again, as if the process began anew ` +
    `(the longest, ${name}, ran ${(longest.totalMs / 1000).toFixed(1)} s where the trace has ${left.toFixed(1)} s after the start): ` +
    `their figures count what the trace's start wrote once more. Record ${need} s or more (forecopy-source record --seconds ${need}) to replay them whole`
  );
}

/** `wraps`: which runs outlasted the trace (wrapNote), or null. */
function toTable(rows: Row[], trace: Trace, bw: string, wraps: string | null): string {
  const head = [
    'policy',
    'S',
    'downtime ms',
    'total ms',
    'pages sent',
    'sent again',
    'rounds',
    'stopped by',
    'saved vs precopy',
    'of oracle',
    'saved vs its baseline',
  ];
  const body = rows.map((r) => [
    r.policy,
    r.states === null ? '' : String(r.states),
    r.downtimeMs.toFixed(1),
    r.totalMs.toFixed(0),
    r.pagesSent.toLocaleString('en-US'),
    r.pagesResent.toLocaleString('en-US'),
    String(r.rounds.length),
    r.stopReason,
    r.savingPages.toLocaleString('en-US'),
    shareText(r.shareOfOracle),
    r.savingVsBaseline === null ? '' : `${r.savingVsBaseline.toLocaleString('en-US')} vs ${r.baseline}`,
  ]);
  if (rows.some((r) => r.throttles.length > 0 && r.throttledMs > 0)) {
    head.push('throttled ms');
    for (const [i, r] of rows.entries()) body[i].push(r.throttledMs.toFixed(0));
  }
  // Which runs the wrap note speaks of: their figures count the trace's start twice.
  if (wraps) {
    head.push('wrapped');
    for (const [i, r] of rows.entries()) body[i].push(r.wrapped ? 'yes' : '');
  }
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmt = (row: string[]) => row.map((c, i) => (i < 2 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const note = `trace: ${trace.samples.length} samples of ${trace.intervalMs} ms, ${trace.totalPages.toLocaleString('en-US')} pages; link ${bw}`;
  const first = trace.samples[0]?.pages.size ?? trace.totalPages;
  const died = trace.samples.reduce((n, x) => n + (x.died ?? []).reduce((m, [a, b]) => m + b - a, 0), 0);
  const n = (x: number) => x.toLocaleString('en-US');
  const growth =
    first < trace.totalPages || died > 0
      ? `the process mapped ${n(first)} pages when the trace began and ${n(trace.totalPages - first)} more during it${died > 0 ? `; ${n(died)} were unmapped` : ''}: round 1 sends the pages mapped at the start, a mapping counts as written when it appears${trace.version === 1 ? ' (this version 1 trace does not say which mappings vanished: they count as mapped to its end)' : died > 0 ? ', and pages no longer mapped are not sent' : ''}`
      : null;
  const variants = rows.flatMap((r) =>
    'variant' in r
      ? [`${r.policy}: ${String(r.variant)}; "of oracle" is each row's share of its saving (downtime no higher than pre-copy's)`]
      : [],
  );
  return [
    note,
    ...(growth ? [growth] : []),
    ...(wraps ? [wraps] : []),
    '',
    fmt(head),
    ...body.map(fmt),
    ...(variants.length ? ['', ...variants] : []),
  ].join('\n');
}
