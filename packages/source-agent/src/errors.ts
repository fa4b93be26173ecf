/**
 * The source agent's errors, one class each with a stable `code` and an exit code of its own.
 * A user mistake is reported as one sentence; a stack trace is for bugs only.
 *
 * Exit codes (documented in the README):
 *   0  migrated and verified
 *   2  bad arguments or input files (yargs, InputError)
 *   3  the process cannot be migrated (no such pid, not permitted, gone)
 *   4  the kernel cannot track dirty pages
 *   5  the destination could not be reached or the connection failed
 *   6  the destination reported a checksum mismatch (the process was left running)
 *   7  the destination aborted the migration
 *   8  the process exited during the migration
 *   9  in doubt: verified, but whether the destination made its image final could not be learnt
 *      (the process was left running here; check the destination)
 *   1  anything else
 */
export class SourceError extends Error {
  readonly code: string = 'E_SOURCE';
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** A bad option or input file (exit code 2, like a usage error). */
export class InputError extends SourceError {
  override readonly code = 'E_INPUT';
  override readonly exitCode = 2;
}

export class ProcessError extends SourceError {
  override readonly code = 'E_PROCESS';
  override readonly exitCode = 3;
}

export class TrackingError extends SourceError {
  override readonly code = 'E_TRACKING';
  override readonly exitCode = 4;
}

export class ConnectionError extends SourceError {
  override readonly code = 'E_CONNECTION';
  override readonly exitCode = 5;
}

export class VerificationError extends SourceError {
  override readonly code = 'E_MISMATCH';
  override readonly exitCode = 6;
}

export class DestinationAbortError extends SourceError {
  override readonly code = 'E_DEST_ABORT';
  override readonly exitCode = 7;
}

export class InDoubtError extends SourceError {
  override readonly code = 'E_IN_DOUBT';
  override readonly exitCode = 9;
}

export class ProcessExitedError extends SourceError {
  override readonly code = 'E_PROCESS_EXITED';
  override readonly exitCode = 8;
}
