import type { MigrationReport } from './report.js';

// The source agent's errors, all in this file: one class each, with a stable `code` (sent to the
// destination in Abort, and kept in logs) and the exit code forecopy-source ends with. A user
// mistake is reported as one sentence; a stack trace is for bugs only. Both command lines
// (cli.ts, sim-cli.ts) map an error to its exit code by `instanceof SourceError` and `exitCode`
// alone: any other error is a bug (exit 1).

/** The exit codes of forecopy-source, as the README's table "Exit codes of forecopy-source" says. */
export const SOURCE_EXIT_CODES = {
  0: 'migrated and verified',
  1: 'internal error (a bug: please report it with the output)',
  2: 'bad arguments or input files (an unreadable or damaged --model)',
  3: 'the process cannot be migrated: no such pid, not permitted to trace it, or it holds what cannot move (`check` names it)',
  4: 'this kernel cannot track dirty pages (see Requirements)',
  5: 'the destination could not be reached, refused the authentication, went silent for `--timeout` seconds, or the connection failed',
  6: 'the destination found pages that differ from the frozen source (the process runs on at the source)',
  7: 'the destination aborted the migration',
  8: 'the process exited during the migration',
  9: 'in doubt: verified, but the destination could not be reached to confirm the handover; the process runs on here, and the message says how to settle it: the image to delete, or the `forecopy-source resolve` to run (RELIABILITY.md)',
  10: 'the destination could not restore the process (the message says why); the process runs on at the source',
} as const;
export type SourceExitCode = keyof typeof SOURCE_EXIT_CODES;

/** Each error code and the exit code it ends forecopy-source with. */
export const SOURCE_ERROR_CODES = {
  E_SOURCE: 1,
  E_USAGE: 2,
  E_INPUT: 2,
  E_PROCESS: 3,
  E_TRACKING: 4,
  E_CONNECTION: 5,
  E_MISMATCH: 6,
  E_DEST_ABORT: 7,
  E_PROCESS_EXITED: 8,
  E_IN_DOUBT: 9,
  E_NOT_MIGRATABLE: 3,
  E_RESTORE: 10,
} as const satisfies Record<string, SourceExitCode>;
export type SourceErrorCode = keyof typeof SOURCE_ERROR_CODES;

/** Something the source agent can explain in one sentence; a subclass per exit code. */
export class SourceError extends Error {
  /** The code of the class; an instance's `code` and `exitCode` follow from it. */
  static readonly errorCode: SourceErrorCode = 'E_SOURCE';
  readonly code: SourceErrorCode;
  readonly exitCode: SourceExitCode;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = new.target.errorCode;
    this.exitCode = SOURCE_ERROR_CODES[this.code];
  }
}

/** The command line was not understood (yargs said why); forecopy-source adds a hint to --help. */
export class UsageError extends SourceError {
  static override readonly errorCode = 'E_USAGE';
}

/** A bad option or input file (exit code 2, like a usage error). */
export class InputError extends SourceError {
  static override readonly errorCode = 'E_INPUT';
}

/** No such process, not permitted to trace it, or it is this agent itself. */
export class ProcessError extends SourceError {
  static override readonly errorCode = 'E_PROCESS';
}

/** This kernel cannot track dirty pages (with the tracker asked for). */
export class TrackingError extends SourceError {
  static override readonly errorCode = 'E_TRACKING';
}

/** The destination could not be reached, refused us, went silent, or broke the protocol. */
export class ConnectionError extends SourceError {
  static override readonly errorCode = 'E_CONNECTION';
}

/** The destination found pages that differ from the frozen source; `report` says which. */
export class VerificationError extends SourceError {
  static override readonly errorCode = 'E_MISMATCH';
  constructor(
    message: string,
    readonly report: MigrationReport,
  ) {
    super(message);
  }
}

/** The destination sent Abort. */
export class DestinationAbortError extends SourceError {
  static override readonly errorCode = 'E_DEST_ABORT';
}

/** The process exited while it was being migrated. */
export class ProcessExitedError extends SourceError {
  static override readonly errorCode = 'E_PROCESS_EXITED';
}

/** The process holds what cannot move (a socket, a child...); `blockers` names each, one a line. */
export class NotMigratableError extends SourceError {
  static override readonly errorCode = 'E_NOT_MIGRATABLE';
  constructor(
    readonly pid: number,
    readonly blockers: readonly string[],
  ) {
    super(`process ${pid} cannot be migrated:\n${blockers.map((b) => `  ${b}`).join('\n')}`);
  }
}

/** The destination could not rebuild the process; it runs on here. */
export class RestoreFailedError extends SourceError {
  static override readonly errorCode = 'E_RESTORE';
}

/** Verified, but whether the destination made its image final could not be learnt. */
export class InDoubtError extends SourceError {
  static override readonly errorCode = 'E_IN_DOUBT';
}

/**
 * What a yargs `.fail()` handler receives, as the error to end with: a message of its own is a
 * usage error; an error thrown by a `coerce` function reaches us as a YError that kept only its
 * message, an input error; anything else (thrown by a command) goes on as it is.
 */
export function fromYargs(message: string | null, err: Error | undefined): Error {
  // One line: yargs puts the details of a bad choice on an indented line of their own.
  if (!err) return new UsageError(message?.replace(/\s*\n\s*/g, ' ') ?? 'the command line was not understood');
  if (err.name === 'YError') return new InputError(err.message, { cause: err });
  return err;
}
