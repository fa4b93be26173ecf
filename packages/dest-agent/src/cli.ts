import fs from 'node:fs';
import yargs, { type ArgumentsCamelCase, type Argv } from 'yargs';
import { pino } from 'pino';
import { MAX_STREAMS, SecurityConfigError, isLoopback, loadSecurity, terminalLogStream } from '@forecopy/protocol';
import { checkWritableFile, prepareDir } from '@forecopy/linux';
import { DestError, EXIT, ListenError, UserError } from './errors.js';
import { listen, type ListenOptions } from './server.js';

/** The arguments a command's handler gets from its option builder. */
type ArgsOf<B> = B extends (y: Argv) => Argv<infer T> ? ArgumentsCamelCase<T> : never;

/** listen: fault injection for the tests (hidden from --help). */
function faultOptions<T>(y: Argv<T>) {
  return y
    .option('test-fail-restore', { type: 'boolean', hidden: true, describe: 'fault injection: the restore fails' })
    .option('test-corrupt-state', { type: 'boolean', hidden: true, describe: 'fault injection: damage the received process state' })
    .option('test-die-during-restore', {
      type: 'boolean',
      hidden: true,
      describe: 'fault injection: die in the middle of the restore',
    })
    .option('test-corrupt-pages', { type: 'number', hidden: true, describe: 'fault injection: damage pages after the final round' })
    .option('test-corrupt-in-transit', {
      type: 'number',
      hidden: true,
      describe: 'fault injection: damage raw pages of the final round as they arrive',
    })
    .option('test-die-at-stop-and-copy', {
      type: 'boolean',
      hidden: true,
      describe: 'fault injection: die when the source freezes',
    })
    .option('test-drop-committed', { type: 'boolean', hidden: true, describe: 'fault injection: do not answer Commit' })
    .option('test-die-when-committed', {
      type: 'boolean',
      hidden: true,
      describe: 'fault injection: die (SIGKILL) once the image is final, before answering Commit',
    })
    .option('test-delay-hello-ack', { type: 'number', hidden: true, describe: 'fault injection: answer Hello this many ms late' });
}

function listenOptions(y: Argv) {
  return faultOptions(y)
    .option('port', { type: 'number', default: 7070, describe: 'TCP port (0 = any free port, printed on stdout)' })
    .option('host', { type: 'string', default: '127.0.0.1', describe: 'address to listen on' })
    .option('image-dir', { type: 'string', demandOption: true, describe: 'where images are written (one directory per migration)' })
    .option('once', { type: 'boolean', default: false, describe: 'exit after one migration: 0 if it verified, 1 if not' })
    .option('max-sessions', { type: 'number', default: 4, describe: 'migrations served at once; more are refused' })
    .option('max-image-gb', { type: 'number', default: 64, describe: 'largest image accepted' })
    .option('credit', { type: 'number', default: 32, describe: 'page batches the source may have in flight (on each stream)' })
    .option('max-streams', {
      type: 'number',
      default: MAX_STREAMS,
      describe: 'connections one migration may send pages on (forecopy-source --streams), its own included; 1 refuses extra ones',
    })
    .option('psk-file', { type: 'string', describe: 'pre-shared key (hex or raw bytes): the source must hold the same' })
    .option('tls-cert', { type: 'string', describe: "mutual TLS: this agent's certificate (PEM)" })
    .option('tls-key', { type: 'string', describe: 'mutual TLS: its private key (PEM)' })
    .option('tls-ca', { type: 'string', describe: "mutual TLS: the CA that signed the source's certificate" })
    .option('insecure', {
      type: 'boolean',
      default: false,
      describe: 'allow plain TCP on a non-loopback address (no authentication, no encryption)',
    })
    .option('restore', {
      type: 'boolean',
      default: false,
      describe: 'rebuild each migrated process here and run it once the source let go of its copy',
    })
    .option('image-only', {
      type: 'boolean',
      default: false,
      describe: 'keep memory image files only, run nothing (the default without --restore)',
    })
    .option('stdin', {
      type: 'string',
      describe: "--restore: the restored process's standard input, where it was a pipe or terminal (default /dev/null)",
    })
    .option('stdout', {
      type: 'string',
      describe: '--restore: its standard output, where it was a pipe, terminal or socket (default DIR/<session>/stdout.log)',
    })
    .option('stderr', { type: 'string', describe: '--restore: its standard error, likewise (default DIR/<session>/stderr.log)' })
    .option('pid-file', { type: 'string', describe: "--restore: write the restored process's pid here once it runs" })
    .option('once-linger-ms', {
      type: 'number',
      default: 15_000,
      hidden: true,
      describe: 'with --once: how long to answer queries after an unconfirmed handover',
    })
    .option('log-level', { choices: ['debug', 'info', 'warn', 'error'], default: 'info' })
    .example('$0 listen --port 7070 --image-dir /var/lib/forecopy', 'serve migrations on 127.0.0.1:7070, keeping memory images')
    .example(
      '$0 listen --host 10.0.0.2 --port 7070 --image-dir /var/lib/forecopy --psk-file key --restore --pid-file app.pid',
      'move processes here: each runs on at this host, its output in DIR/<session>/stdout.log',
    )
    .example(
      '$0 listen --host 10.0.0.2 --port 7070 --image-dir ./images --psk-file key --once',
      'take one authenticated migration on another interface, exit 0 when it verified',
    );
}

type ListenArgs = ArgsOf<typeof listenOptions>;

/** The checks yargs cannot make: ranges, and flags that only make sense together. */
function checkListenArgs(a: ListenArgs): void {
  if (!(Number.isInteger(a.port) && a.port >= 0 && a.port < 65536)) throw new UserError(`--port must be between 0 and 65535`);
  if (!(Number.isInteger(a.credit) && a.credit >= 1 && a.credit <= 1024))
    throw new UserError(`--credit must be a whole number from 1 to 1024, got ${a.credit}`);
  if (!(Number.isInteger(a['max-streams']) && a['max-streams'] >= 1 && a['max-streams'] <= MAX_STREAMS))
    throw new UserError(`--max-streams must be a whole number from 1 to ${MAX_STREAMS}`);
  if (a.restore && a['image-only']) throw new UserError(`--restore and --image-only exclude each other: a process or an image`);
  for (const f of ['stdin', 'stdout', 'stderr', 'pid-file'] as const) {
    if (a[f] !== undefined && !a.restore) throw new UserError(`--${f} only applies with --restore`);
  }
  if (a.stdin !== undefined && !fs.existsSync(a.stdin)) throw new UserError(`--stdin ${a.stdin} does not exist`);
  if (!(Number.isInteger(a['max-sessions']) && a['max-sessions'] >= 1))
    throw new UserError(`--max-sessions must be a whole number >= 1, got ${a['max-sessions']}`);
  if (!(a['max-image-gb'] > 0 && Number.isFinite(a['max-image-gb'])))
    throw new UserError(`--max-image-gb must be a number > 0, got ${a['max-image-gb']}`);
  // Paths it will write, at once: not when a migration has already handed the process over.
  const dir = prepareDir(a['image-dir']);
  if (dir !== null) throw new UserError(`--image-dir: ${dir}`);
  for (const f of ['stdout', 'stderr', 'pid-file'] as const) {
    const why = a[f] !== undefined ? checkWritableFile(a[f]) : null;
    if (why !== null) throw new UserError(`--${f}: ${why}`);
  }
}

/**
 * The channel's security from --psk-file / --tls-*; a bad file is a user error. Without any,
 * only a loopback address (or --insecure) is allowed.
 */
function securityOf(a: ListenArgs): ReturnType<typeof loadSecurity> {
  let security: ReturnType<typeof loadSecurity>;
  try {
    security = loadSecurity({ tlsCert: a['tls-cert'], tlsKey: a['tls-key'], tlsCa: a['tls-ca'], pskFile: a['psk-file'] });
  } catch (e) {
    if (e instanceof SecurityConfigError) throw new UserError(e.message);
    throw e;
  }
  if (!security && !isLoopback(a.host) && !a.insecure) {
    throw new UserError(
      `listening on ${a.host} without authentication would let anyone send pages: give --psk-file or --tls-cert/--tls-key/--tls-ca (on both agents), or --insecure on a network you trust`,
    );
  }
  return security;
}

/** What --restore and its flags ask for; null = keep memory images only. */
function restoreSettings(a: ListenArgs): ListenOptions['restore'] {
  return a.restore
    ? {
        stdin: a.stdin,
        stdout: a.stdout,
        stderr: a.stderr,
        pidFile: a['pid-file'],
        failForTest: a['test-fail-restore'],
        corruptStateForTest: a['test-corrupt-state'],
        dieDuringForTest: a['test-die-during-restore'],
      }
    : null;
}

/** `listen`: serves until stopped (or, with --once, one migration); returns the exit code. */
async function runListen(a: ListenArgs): Promise<number> {
  checkListenArgs(a);
  const security = securityOf(a);
  const tty = process.stderr.isTTY;
  const log = pino({ level: a['log-level'], name: 'forecopy-dest' }, tty ? terminalLogStream() : pino.destination(2));
  const { done } = listen({
    host: a.host,
    port: a.port,
    imageDir: a['image-dir'],
    once: a.once,
    maxSessions: a['max-sessions'],
    credit: a.credit,
    maxStreams: a['max-streams'],
    maxImageBytes: a['max-image-gb'] * 2 ** 30,
    log,
    corruptPages: a['test-corrupt-pages'],
    corruptInTransit: a['test-corrupt-in-transit'],
    dieAtStopAndCopy: a['test-die-at-stop-and-copy'],
    dropCommitted: a['test-drop-committed'],
    dieWhenCommitted: a['test-die-when-committed'],
    delayHelloAckMs: a['test-delay-hello-ack'],
    restore: restoreSettings(a),
    lingerMs: a['once-linger-ms'],
    security,
    onListening: (addr) => {
      process.stdout.write(`forecopy-dest listening on ${addr.address}:${addr.port}\n`);
    },
  });
  const stop = () => process.exit(0);
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  const result = await done.catch((e: NodeJS.ErrnoException) => {
    throw listenError(e, a.host, a.port);
  });
  if (!a.once) return EXIT.ok;
  return result.sessions.some((s) => s.verified) ? EXIT.ok : EXIT.failed;
}

/** The one line (and exit code) a failed command ends with: a user's mistake, or a bug. */
function reportError(e: unknown): number {
  const err = e as Error;
  if (err instanceof DestError) {
    const hint = err instanceof UserError ? `\nRun 'forecopy-dest --help' for the commands and examples.` : '';
    process.stderr.write(`forecopy-dest: ${err.message}${hint}\n`);
    return err.exitCode;
  }
  process.stderr.write(`forecopy-dest: internal error: ${err.stack ?? err}\n`);
  return EXIT.failed;
}

/**
 * `forecopy-dest`: the destination agent's command line.
 * Exit codes (EXIT in errors.ts): 0 served (with --once: one verified migration), 1 the migration
 * did not verify (--once) or an internal error, 2 bad arguments, 3 the port could not be opened.
 */
export async function main(argv: string[]): Promise<number> {
  let code: number = EXIT.ok;
  try {
    await yargs(argv)
      .scriptName('forecopy-dest')
      .usage('$0 <command> [options]\n\nThe destination agent of forecopy: receives a live migration and rebuilds the memory image.')
      .command('listen', 'Accept migrations and rebuild each memory image under --image-dir', listenOptions, async (a) => {
        code = await runListen(a);
      })
      .demandCommand(1, 'name a command: listen')
      .strict()
      // An option given twice: the last one counts (as with most commands), not an array of both.
      .parserConfiguration({ 'duplicate-arguments-array': false })
      .fail((msg, err) => {
        throw err ?? new UserError(msg.replace(/\s*\n\s*/g, ' ')); // one line (a bad choice's details are on a line of their own)
      })
      .example('$0 listen --port 7070 --image-dir /var/lib/forecopy', 'serve migrations on 127.0.0.1:7070')
      .help()
      .alias('h', 'help')
      .version(false)
      .wrap(null)
      .parseAsync();
  } catch (e) {
    code = reportError(e);
  }
  return code;
}

/** Why the port could not be opened, in the user's terms (by the system's error code). */
function listenError(e: NodeJS.ErrnoException, host: string, port: number): ListenError {
  if (e.code === 'EADDRINUSE') return new ListenError(`port ${port} on ${host} is already in use`, { cause: e });
  if (e.code === 'EADDRNOTAVAIL') return new ListenError(`${host} is not an address of this host`, { cause: e });
  return new ListenError(`cannot listen on ${host}:${port}: ${e.message}`, { cause: e });
}
