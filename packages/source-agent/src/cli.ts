import fs from 'node:fs';
import yargs, { type ArgumentsCamelCase, type Argv } from 'yargs';
import { pino, type Logger } from 'pino';
import {
  MAX_PAGES_PER_BATCH,
  MAX_STREAMS,
  SecurityConfigError,
  defaultBatchPages,
  VERIFY_MODES,
  loadSecurity,
  terminalLogStream,
} from '@forecopy/protocol';
import {
  FORECAST_MODES,
  MAX_STATES,
  MIN_STATES,
  POLICY_NAMES,
  XEN_DEFAULT_STOP_RULES,
  isStateCount,
  type StopRules,
} from '@forecopy/filter';
import { AUTO_CONVERGE_DEFAULTS, type AutoConvergeOptions } from './migration/auto-converge.js';
import { THROTTLE_METHODS, TRACKER_CHOICES, checkWritableFile, prepareDir } from '@forecopy/linux';
import { AFTER_ACTIONS, migrate } from './migrate.js';
import { formatReport, type MigrationReport } from './report.js';
import { renderHtml } from './report-html.js';
import { startUi } from './ui-server.js';
import type { UiEvent } from './ui-events.js';
import { numberFrom, parseBandwidth, parseHostPort, parseThrottlePeriod, roundOptions, waitFor, wholeAtLeast } from './units.js';
import { InputError, ProcessError, SourceError, UsageError, VerificationError, fromYargs } from './errors.js';
import { cleanupProcess } from './cleanup.js';
import { asSourceError } from './errno-map.js';
import { installInterruptHandlers } from './interrupt.js';
import { recordTrace } from './record.js';
import { makePolicyFactory, writeModel } from './policy-setup.js';
import { clearProgress, progressPrinter } from './progress.js';
import { requireProcess } from './process-checks.js';
import { checkProcess, notMigratable, resolveSession } from './resolve.js';

// `forecopy-source`: the source agent's command line. Every user mistake ends in one sentence
// and a non-zero exit code (errors.ts lists them); stack traces are for bugs.

const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
/** Where a source records the handovers it has not finished (forecopy-source resolve reads them). */
const DEFAULT_STATE_DIR = '/var/lib/forecopy/source';
/** --streams: one connection unless asked (see BENCHMARKS.md, line rate: more did not help on 2 cores). */
const DEFAULT_STREAMS = 1;

export function makeLogger(level: string): Logger {
  const tty = process.stderr.isTTY;
  return pino({ level, base: { pid: process.pid }, name: 'forecopy-source' }, tty ? terminalLogStream() : pino.destination(2));
}

const positiveInt = (name: string) => wholeAtLeast(name, 1);
/** A file option given twice: the last one counts, not an array of both (report's files.. stay a list). */
const lastOf = (v: string | string[]): string => (Array.isArray(v) ? String(v.at(-1)) : v);
const uiPort = (v: number) => {
  if (!(Number.isInteger(v) && v >= 0 && v < 65536)) throw new InputError(`--ui must be a port from 0 to 65535, got ${v}`);
  return v;
};

/** The arguments a command's handler gets from its option builder. */
type ArgsOf<B> = B extends (y: Argv) => Argv<infer T> ? ArgumentsCamelCase<T> : never;

/** migrate: the pre-copy policy and the dirty tracking it works from. */
function policyOptions<T>(y: Argv<T>) {
  return y
    .option('policy', { choices: POLICY_NAMES, default: 'precopy' as const, describe: 'pre-copy policy (data filter)' })
    .option('interval-ms', {
      type: 'number',
      default: 50,
      coerce: waitFor('interval-ms', 'ms', { whole: true }),
      describe: 'dirty sampling interval',
    })
    .option('states', { type: 'number', default: 256, describe: 'markov: number of regions/states S (64..1024)' })
    .option('model-seconds', {
      type: 'number',
      default: 10,
      coerce: waitFor('model-seconds', 's', { zero: true }),
      describe:
        'markov: how long to model before migrating; forecast: how long it watches before migrating (it keeps learning during the migration)',
    })
    .option('model', { type: 'string', describe: 'markov: load a saved model instead of modelling' })
    .option('lwws-threshold', { type: 'number', describe: "markov: share of a state's samples a page must be written in to join its LWWS" })
    .option('forecast', {
      choices: FORECAST_MODES,
      default: 'chain' as const,
      describe: "markov: the paper's most-probable chain, or expected state visits (see BENCHMARKS.md)",
    })
    .option('skip-redirtied', {
      type: 'boolean',
      default: false,
      describe: "markov: also skip pages written again during the round (Xen's to_skip)",
    })
    .option('tracker', { choices: TRACKER_CHOICES, default: 'auto' as const, describe: 'dirty page tracker' });
}

/** migrate: when the rounds stop (old Xen's rules or QEMU's), and auto-converge. */
function stopOptions<T>(y: Argv<T>) {
  return roundOptions(y)
    .option('max-factor', {
      type: 'number',
      coerce: numberFrom('max-factor', 0, true),
      describe: `stop when this multiple of the memory was sent (default ${XEN_DEFAULT_STOP_RULES.maxFactor} with --stop-rule xen, none with downtime)`,
    })
    .option('stop-rule', {
      choices: STOP_RULES,
      default: 'downtime' as const,
      describe: `xen: old Xen's rules (rounds, remaining pages, ${XEN_DEFAULT_STOP_RULES.maxFactor}x the memory); downtime (the default): QEMU's, stop when the rest and the downtime's fixed costs fit --downtime-limit-ms (default ${DEFAULT_DOWNTIME_LIMIT_MS})`,
    })
    .option('downtime-limit-ms', {
      type: 'number',
      describe: `QEMU's rule: stop when the rest, sent at the measured rate, plus the freeze, verification and handover fit in this many ms (default ${DEFAULT_DOWNTIME_LIMIT_MS} with --stop-rule downtime)`,
    })
    .option('auto-converge', {
      choices: ['on', 'off'] as const,
      default: 'on' as const,
      describe: "QEMU's auto-converge: slow the process down while it writes faster than the link carries",
    })
    .option('throttle-by', {
      choices: THROTTLE_METHODS,
      default: AUTO_CONVERGE_DEFAULTS.method,
      describe:
        "auto-converge: cgroup (a CPU quota in a cgroup of the process's own), ptrace (QEMU's timing: the process runs 10 ms, then is held in a ptrace-stop 10 ms x p / (100 - p)), auto (cgroup where one can be made)",
    })
    .option('throttle-initial', {
      type: 'number',
      default: AUTO_CONVERGE_DEFAULTS.initial,
      describe: 'auto-converge: the first throttle, in percent',
    })
    .option('throttle-increment', {
      type: 'number',
      default: AUTO_CONVERGE_DEFAULTS.increment,
      describe: 'auto-converge: added each time it is raised',
    })
    .option('throttle-max', { type: 'number', default: AUTO_CONVERGE_DEFAULTS.max, describe: 'auto-converge: the most, in percent' })
    .option('throttle-period-ms', {
      type: 'number',
      describe:
        'auto-converge: weigh writes against sends over periods of more than this many ms, as QEMU does (1000; rounds are then paced near the round cap so that the throttle can still rise); 0, the default: every round',
    });
}

/** migrate: the link to the destination (pacing, compression, authentication, timeout). */
function channelOptions<T>(y: Argv<T>) {
  return y
    .option('bandwidth', { type: 'string', default: '0', describe: 'pace the sender, e.g. 500mbit, 1gbit, 60MB; 0 = unpaced' })
    .option('compress', { type: 'boolean', default: true, describe: 'lz4 pages where it pays (--no-compress to turn off)' })
    .option('batch-pages', {
      type: 'number',
      describe: `pages per PageBatch frame (1..${MAX_PAGES_PER_BATCH}); default: what 17 ms of --bandwidth carries, 256 at least (256 at 500mbit), ${MAX_PAGES_PER_BATCH} unpaced`,
    })
    .option('streams', {
      type: 'number',
      default: DEFAULT_STREAMS,
      describe: `connections to send pages on, as QEMU's multifd channels (1..${MAX_STREAMS}; the destination may accept fewer)`,
    })
    .option('psk-file', { type: 'string', describe: "pre-shared key (hex or raw bytes), the same as the destination's" })
    .option('tls-cert', { type: 'string', describe: "mutual TLS: this agent's certificate (PEM)" })
    .option('tls-key', { type: 'string', describe: 'mutual TLS: its private key (PEM)' })
    .option('tls-ca', { type: 'string', describe: "mutual TLS: the CA that signed the destination's certificate" })
    .option('timeout', {
      type: 'number',
      default: 30,
      coerce: waitFor('timeout', 's', { whole: true }),
      describe: 'seconds to wait for the destination (an answer, an acknowledgement, room to send) before giving up',
    });
}

function migrateOptions(y: Argv) {
  const target = y
    .option('pid', { type: 'number', demandOption: true, coerce: positiveInt('pid'), describe: 'process to migrate' })
    .option('to', { type: 'string', demandOption: true, describe: 'destination agent, HOST:PORT' });
  return channelOptions(stopOptions(policyOptions(target)))
    .option('after', {
      choices: AFTER_ACTIONS,
      default: 'kill' as const,
      describe: "the source process's fate once the destination verified",
    })
    .option('report', { type: 'string', coerce: lastOf, describe: 'write the JSON report to this file' })
    .option('verify', {
      choices: ['auto', ...VERIFY_MODES] as const,
      default: 'auto' as const,
      describe:
        'full: hash the frozen memory again and compare every page; incremental: compare one digest of the pages as sent and as written (trusts the dirty tracker; see README); auto: full where it takes at most a quarter of the downtime limit',
    })
    .option('image-only', {
      type: 'boolean',
      default: false,
      describe: 'move the memory image only: with --after kill, no copy of the process runs at the end',
    })
    .option('state-dir', {
      type: 'string',
      coerce: lastOf,
      default: DEFAULT_STATE_DIR,
      describe: 'where handovers in progress are recorded (for resolve)',
    })
    .option('ui', { type: 'number', coerce: uiPort, describe: 'serve a live dashboard on http://127.0.0.1:PORT/ during the migration' })
    .option('test-die-when-frozen', { type: 'boolean', hidden: true, describe: 'fault injection: die right after freezing' })
    .option('test-die-when-restored', {
      type: 'boolean',
      hidden: true,
      describe: 'fault injection: die once the destination holds the restored process',
    })
    .option('log-level', { choices: LOG_LEVELS, default: 'warn' as const })
    .example(
      '$0 migrate --pid 4242 --to 10.0.0.2:7070 --psk-file /etc/forecopy/key',
      'move process 4242 with plain pre-copy over an authenticated, encrypted channel (killed here once verified there)',
    )
    .example(
      '$0 migrate --pid 4242 --to 127.0.0.1:7070 --policy markov --bandwidth 500mbit --after resume --report r.json',
      "the paper's filter at the paper's link rate; keep the process running",
    )
    .example(
      '$0 migrate --pid 4242 --to dest:7070 --bandwidth 1gbit --downtime-limit-ms 100',
      'a process that writes faster than the link: auto-converge slows it down until the rest fits 100 ms of downtime',
    )
    .example(
      '$0 migrate --pid 4242 --to 10.0.0.2:7070 --psk-file key --streams 4',
      'pages go out on 4 authenticated connections (as QEMU multifd), for a link one TCP connection cannot fill',
    )
    .example(
      '$0 migrate --pid 4242 --to dest:7070 --stop-rule xen --auto-converge off --after resume',
      "old Xen's stop rules (30 rounds, 50 pages, 3x the memory) and no throttle, as before issue 13",
    );
}

const STOP_RULES = ['xen', 'downtime'] as const;
const DEFAULT_DOWNTIME_LIMIT_MS = 300;

/**
 * --stop-rule xen: old Xen's rules (and QEMU's too, with --downtime-limit-ms); downtime: QEMU's,
 * with no cap on the data sent, the round cap as the last resort.
 */
function stopRulesOf(a: ArgsOf<typeof migrateOptions>): StopRules {
  const xen = a['stop-rule'] === 'xen';
  const limit = a['downtime-limit-ms'] ?? (xen ? undefined : DEFAULT_DOWNTIME_LIMIT_MS);
  if (limit !== undefined && !(limit > 0)) throw new InputError(`--downtime-limit-ms must be > 0, got ${limit}`);
  return {
    maxRounds: a['max-rounds'],
    minRemainingPages: a['min-remaining-pages'],
    maxFactor: a['max-factor'] ?? (xen ? XEN_DEFAULT_STOP_RULES.maxFactor : Number.POSITIVE_INFINITY),
    ...(limit !== undefined ? { downtimeLimitMs: limit } : {}),
  };
}

function autoConvergeOf(a: ArgsOf<typeof migrateOptions>): AutoConvergeOptions {
  const pct = (name: 'throttle-initial' | 'throttle-increment' | 'throttle-max') => {
    const v = a[name];
    if (!(Number.isInteger(v) && v >= 1 && v <= 99)) throw new InputError(`--${name} must be a whole number from 1 to 99, got ${v}`);
    return v;
  };
  return {
    enabled: a['auto-converge'] === 'on',
    method: a['throttle-by'],
    initial: pct('throttle-initial'),
    increment: pct('throttle-increment'),
    max: pct('throttle-max'),
    periodMs: parseThrottlePeriod(a['throttle-period-ms'], a['auto-converge'] === 'on'),
  };
}

/** The channel's security from --psk-file / --tls-*; a bad file is an input error. */
function securityOf(a: { 'tls-cert'?: string; 'tls-key'?: string; 'tls-ca'?: string; 'psk-file'?: string }) {
  try {
    return loadSecurity({ tlsCert: a['tls-cert'], tlsKey: a['tls-key'], tlsCa: a['tls-ca'], pskFile: a['psk-file'] });
  } catch (e) {
    if (e instanceof SecurityConfigError) throw new InputError(e.message);
    throw e;
  }
}

async function runMigrate(a: ArgsOf<typeof migrateOptions>): Promise<void> {
  const { host, port } = parseHostPort(a.to);
  const bandwidthBps = parseBandwidth(a.bandwidth);
  const batchPages = a['batch-pages'] ?? defaultBatchPages(bandwidthBps);
  if (!(Number.isInteger(batchPages) && batchPages >= 1 && batchPages <= MAX_PAGES_PER_BATCH))
    throw new InputError(`--batch-pages must be a whole number from 1 to ${MAX_PAGES_PER_BATCH}`);
  if (!(Number.isInteger(a.streams) && a.streams >= 1 && a.streams <= MAX_STREAMS))
    throw new InputError(`--streams must be a whole number from 1 to ${MAX_STREAMS}`);
  const security = securityOf(a);
  // Paths it will write, before the process is touched: not after it was frozen, or killed.
  if (a.report !== undefined) writable('--report', checkWritableFile(a.report));
  if (a['state-dir'] !== DEFAULT_STATE_DIR) writable('--state-dir', prepareDir(a['state-dir']));
  const log = makeLogger(a['log-level']);
  const report: MigrationReport = await withDashboard(a.ui, (onEvent) =>
    migrate({
      security,
      ...(onEvent ? { onEvent } : {}),
      dieWhenFrozen: a['test-die-when-frozen'],
      dieWhenRestored: a['test-die-when-restored'],
      imageOnly: a['image-only'],
      verify: a.verify,
      stateDir: a['state-dir'],
      replyTimeoutMs: a.timeout * 1000,
      pid: a.pid,
      host,
      port,
      stopRules: stopRulesOf(a),
      autoConverge: autoConvergeOf(a),
      bandwidthBps,
      after: a.after,
      intervalMs: a['interval-ms'],
      compress: a.compress,
      batchPages,
      streams: a.streams,
      tracker: a.tracker,
      makePolicy: makePolicyFactory({
        policy: a.policy,
        states: a.states,
        modelSeconds: a['model-seconds'],
        modelFile: a.model,
        lwwsThreshold: a['lwws-threshold'],
        intervalMs: a['interval-ms'],
        bandwidthBps,
        forecast: a.forecast,
        skipRedirtied: a['skip-redirtied'],
        stopRules: stopRulesOf(a),
      }),
      log,
      onProgress: progressPrinter(),
    }).catch((e: unknown) => {
      if (e instanceof VerificationError && a.report) writeJson(a.report, e.report);
      throw e;
    }),
  );
  clearProgress();
  if (a.report) writeJson(a.report, report);
  process.stdout.write(`${formatReport(report)}\n`);
}

function modelOptions(y: Argv) {
  return y
    .option('pid', { type: 'number', demandOption: true, coerce: positiveInt('pid') })
    .option('out', { type: 'string', coerce: lastOf, demandOption: true, describe: 'model file to write' })
    .option('seconds', { type: 'number', default: 10, coerce: waitFor('seconds', 's'), describe: 'how long to observe' })
    .option('states', { type: 'number', default: 256 })
    .option('interval-ms', { type: 'number', default: 50, coerce: waitFor('interval-ms', 'ms', { whole: true }) })
    .option('lwws-threshold', { type: 'number' })
    .option('tracker', { choices: TRACKER_CHOICES, default: 'auto' as const })
    .option('log-level', { choices: LOG_LEVELS, default: 'warn' as const })
    .option('watch', {
      type: 'boolean',
      default: false,
      describe: 'keep watching until SIGINT/SIGTERM: model a sliding window, rewrite --out atomically as it goes',
    })
    .option('window-minutes', {
      type: 'number',
      default: 10,
      describe: '--watch: the model covers the last N minutes (at least N/2: two halves, the older dropped as a new one fills)',
    })
    .option('every-seconds', {
      type: 'number',
      default: 5,
      coerce: waitFor('every-seconds', 's'),
      describe: '--watch: rewrite the model file this often',
    })
    .example(
      '$0 model --pid 4242 --seconds 20 --out app.model',
      'learn the write pattern now, migrate later with --policy markov --model app.model',
    )
    .example('$0 model --pid 4242 --watch --out app.model', 'keep a mature model of the last minutes fresh while the process runs');
}

/** An input error naming the option when `why` (from checkWritableFile, prepareDir) says the path cannot be used. */
function writable(option: string, why: string | null): void {
  if (why !== null) throw new InputError(`${option}: ${why}`);
}

async function runModel(a: ArgsOf<typeof modelOptions>): Promise<void> {
  // Checked before the process is touched (the model is built after tracking starts).
  if (!isStateCount(a.states)) throw new InputError(`--states must be a whole number from ${MIN_STATES} to ${MAX_STATES}, got ${a.states}`);
  const t = a['lwws-threshold'];
  if (t !== undefined && !(t > 0 && t <= 1)) throw new InputError(`--lwws-threshold must be in (0, 1], got ${t}`);
  writable('--out', checkWritableFile(a.out));
  const summary = await writeModel({
    pid: a.pid,
    out: a.out,
    seconds: a.seconds,
    states: a.states,
    intervalMs: a['interval-ms'],
    lwwsThreshold: a['lwws-threshold'],
    tracker: a.tracker,
    log: makeLogger(a['log-level']),
    onProgress: progressPrinter(),
    ...(a.watch
      ? {
          watch: {
            windowMinutes: a['window-minutes'],
            everySeconds: a['every-seconds'],
            print: (l: string) => process.stderr.write(`${l}\n`),
          },
        }
      : {}),
  }).catch((e: unknown) => Promise.reject(asSourceError(e, a.pid)));
  printSummary(summary);
}

function recordOptions(y: Argv) {
  return y
    .option('pid', { type: 'number', demandOption: true, coerce: positiveInt('pid') })
    .option('seconds', { type: 'number', demandOption: true, coerce: waitFor('seconds', 's'), describe: 'how long to record' })
    .option('interval-ms', { type: 'number', default: 50, coerce: waitFor('interval-ms', 'ms', { whole: true }) })
    .option('out', { type: 'string', coerce: lastOf, demandOption: true, describe: 'trace file to write' })
    .option('tracker', { choices: TRACKER_CHOICES, default: 'auto' as const })
    .option('ui', { type: 'number', coerce: uiPort, describe: 'serve a live dashboard on http://127.0.0.1:PORT/ while recording' })
    .option('log-level', { choices: LOG_LEVELS, default: 'warn' as const })
    .example('$0 record --pid 4242 --seconds 60 --out app.trace', 'then: forecopy-sim --trace app.trace');
}

async function runRecord(a: ArgsOf<typeof recordOptions>): Promise<void> {
  writable('--out', checkWritableFile(a.out));
  const summary = await withDashboard(a.ui, (onEvent) =>
    recordTrace({
      pid: a.pid,
      seconds: a.seconds,
      intervalMs: a['interval-ms'],
      out: a.out,
      tracker: a.tracker,
      log: makeLogger(a['log-level']),
      onProgress: progressPrinter(),
      ...(onEvent ? { onEvent } : {}),
    }).catch((e: unknown) => Promise.reject(asSourceError(e, a.pid))),
  );
  printSummary(summary);
}

function cleanupOptions(y: Argv) {
  return y
    .option('pid', { type: 'number', demandOption: true, coerce: positiveInt('pid') })
    .example('$0 cleanup --pid 4242', 'after a forecopy-source was killed mid-migration');
}

function runCleanup(a: ArgsOf<typeof cleanupOptions>): void {
  requireProcess(a.pid);
  try {
    process.stdout.write(`${cleanupProcess(a.pid)}\n`);
  } catch (e) {
    if ((e as { code?: string }).code === 'EPERM')
      throw new ProcessError(`not permitted to trace process ${a.pid}: run as root or with CAP_SYS_PTRACE`);
    throw e;
  }
}

function checkOptions(y: Argv) {
  return y
    .option('pid', { type: 'number', demandOption: true, coerce: positiveInt('pid'), describe: 'process to check' })
    .option('json', { type: 'boolean', default: false, describe: 'print the verdict as JSON' })
    .example('$0 check --pid 4242', 'can 4242 be moved and restored? exit 0 if so, 3 if not, naming each blocker')
    .example(
      '$0 check --pid 4242 --json',
      '{"pid":4242,"migratable":false,"blockers":[{"kind":"fd","id":3,"message":"fd 3: a TCP socket"}]}',
    );
}

function runCheck(a: ArgsOf<typeof checkOptions>): void {
  const verdict = checkProcess(a.pid);
  if (a.json) process.stdout.write(`${JSON.stringify(verdict)}\n`);
  else if (verdict.migratable) process.stdout.write(`process ${a.pid} can be migrated and restored\n`);
  if (!verdict.migratable) {
    // --json: the verdict on stdout is the answer; the exit code says it too, with no message.
    if (a.json) process.exitCode = notMigratable(verdict).exitCode;
    else throw notMigratable(verdict);
  }
}

function resolveOptions(y: Argv) {
  return y
    .option('session', { type: 'string', demandOption: true, describe: 'the session id the in-doubt message named' })
    .option('to', { type: 'string', demandOption: true, describe: 'the destination agent, HOST:PORT' })
    .option('state-dir', { type: 'string', default: DEFAULT_STATE_DIR, describe: 'where migrate recorded the handover' })
    .option('psk-file', { type: 'string' })
    .option('tls-cert', { type: 'string' })
    .option('tls-key', { type: 'string' })
    .option('tls-ca', { type: 'string' })
    .option('timeout', {
      type: 'number',
      default: 30,
      coerce: waitFor('timeout', 's', { whole: true }),
      describe: 'seconds to keep trying to reach the destination',
    })
    .example(
      '$0 resolve --session 3f2a... --to 10.0.0.2:7070 --psk-file /etc/forecopy/key',
      'after a source agent died mid-handover: one copy runs, the other is ended',
    );
}

async function runResolve(a: ArgsOf<typeof resolveOptions>): Promise<void> {
  const { host, port } = parseHostPort(a.to);
  const line = await resolveSession({
    sessionId: a.session,
    host,
    port,
    security: securityOf(a),
    stateDir: a['state-dir'],
    timeoutMs: a.timeout * 1000,
  });
  process.stdout.write(`${line}\n`);
}

function reportOptions(y: Argv) {
  return y
    .positional('files', { type: 'string', array: true, demandOption: true, describe: 'JSON reports; several are shown side by side' })
    .option('html', { type: 'string', demandOption: true, describe: 'HTML file to write' })
    .example('$0 report precopy.json markov.json --html compare.html', 'two migrations side by side');
}

function runReport(a: ArgsOf<typeof reportOptions>): void {
  const reports = a.files.map((f) => {
    try {
      const r = JSON.parse(fs.readFileSync(f, 'utf8')) as MigrationReport;
      if (!Array.isArray(r.rounds) || typeof r.policy !== 'string') throw new Error('not a forecopy report');
      return r;
    } catch (e) {
      throw new InputError(`cannot read the report ${f}: ${(e as Error).message}`);
    }
  });
  fs.writeFileSync(a.html, renderHtml(reports));
  process.stdout.write(`wrote ${a.html}\n`);
}

export function buildCli(argv: string[]): Argv {
  return yargs(argv)
    .scriptName('forecopy-source')
    .usage('$0 <command> [options]\n\nThe source agent of forecopy: live-migrates the memory of a running process\nto a forecopy-dest.')
    .command('migrate', 'Migrate the memory of a live process to a destination agent', migrateOptions, runMigrate)
    .command('model', 'Watch a process and save its Markov model of memory-write states (for migrate --model)', modelOptions, runModel)
    .command('record', 'Record which pages a process writes in each interval, for forecopy-sim', recordOptions, runRecord)
    .command('check', 'Say whether a process can be migrated and restored, naming what stops it (exit 0 yes, 3 no)', checkOptions, runCheck)
    .command(
      'resolve',
      'Finish a handover a source agent could not (it died, or lost the destination): exactly one copy runs',
      resolveOptions,
      runResolve,
    )
    .command('cleanup', 'Remove what a killed source agent left in a process (its userfaultfd)', cleanupOptions, runCleanup)
    .command(
      'report <files..>',
      'Render migration reports (--report JSON files) as a self-contained HTML page with charts',
      reportOptions,
      runReport,
    )
    .demandCommand(1, 'name a command: migrate, check, resolve, model, record, cleanup or report')
    .strict()
    .help()
    .alias('h', 'help')
    .version(false)
    .example('$0 migrate --pid 4242 --to 10.0.0.2:7070', 'move a process to the host where forecopy-dest listens')
    .example('$0 record --pid 4242 --seconds 60 --out app.trace', 'record its writes, then compare policies with forecopy-sim')
    .example('$0 migrate --help', 'every option of migrate, with examples')
    .wrap(null);
}

/** Runs the CLI; never throws. Returns the exit code. */
export async function main(argv: string[]): Promise<number> {
  installInterruptHandlers('forecopy-source');
  try {
    await buildCli(argv)
      .fail((msg, err) => {
        throw fromYargs(msg, err);
      })
      .parseAsync();
    return typeof process.exitCode === 'number' ? process.exitCode : 0; // check --json sets it
  } catch (e) {
    if (!(e instanceof SourceError)) {
      process.stderr.write(`forecopy-source: internal error: ${(e as Error).stack ?? e}\n`);
      return 1;
    }
    process.stderr.write(`forecopy-source: ${e.message}\n`);
    if (e instanceof UsageError) process.stderr.write(`Run 'forecopy-source --help' for the commands and examples.\n`);
    return e.exitCode;
  }
}

/** Runs `task` with the live dashboard on `port` when one is asked for (--ui), closed afterwards. */
async function withDashboard<T>(port: number | undefined, task: (onEvent: ((e: UiEvent) => void) | undefined) => Promise<T>): Promise<T> {
  const ui = port !== undefined ? await startUi(port).catch((e: Error) => Promise.reject(new InputError(e.message))) : null;
  if (ui) process.stderr.write(`dashboard: ${ui.url}\n`);
  try {
    return await task(ui ? (e) => ui.publish(e) : undefined);
  } finally {
    await ui?.close();
  }
}

function printSummary(line: string): void {
  clearProgress();
  process.stdout.write(`${line}\n`);
}

function writeJson(file: string, value: unknown): void {
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}
