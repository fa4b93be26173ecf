/**
 * Every error of the destination agent, one class each with a stable `code` (documented in
 * DEST_ERROR_CODES) and the exit code of `forecopy-dest` it maps to. Decisions are made on the
 * class or the code, never on the message, which is for people.
 *
 * A failed migration answers the source with Abort carrying the error's code: one of
 * DEST_ERROR_CODES, or of the protocol's PROTOCOL_ERROR_CODES (E_CHANNEL_TIMEOUT when the source
 * falls silent), or a system error code (EIO) when the disk fails other than by filling up.
 */

/** The exit codes of `forecopy-dest`. */
export const EXIT = Object.freeze({
  /** Served; with --once: the one migration verified and was committed. */
  ok: 0,
  /** With --once: the migration did not verify (or any failure of it); also an internal error. */
  failed: 1,
  /** Bad arguments (UserError). */
  usage: 2,
  /** The port could not be opened (ListenError). */
  listen: 3,
});

/** The base of the destination's errors; thrown as is for a failure no subclass names. */
export class DestError extends Error {
  readonly code: string = 'E_DEST';
  readonly exitCode: number = EXIT.failed;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The source broke the protocol of a session; the code says how. */
export type SessionProtocolCode =
  | 'E_ORDER'
  | 'E_UNEXPECTED'
  | 'E_PAGE_SIZE'
  | 'E_BUSY'
  | 'E_COUNT'
  | 'E_RANGE'
  | 'E_BAD_PAGE'
  | 'E_NO_COMMIT'
  | 'E_STREAM';

export class SessionProtocolError extends DestError {
  constructor(
    override readonly code: SessionProtocolCode,
    message: string,
  ) {
    super(message);
  }
}

/** The layout a source announced cannot be an image here (see ImageStore.applyLayout). */
export class LayoutError extends DestError {
  override readonly code = 'E_LAYOUT';
}

/** Writing the image failed with ENOSPC or EDQUOT. */
export class DiskFullError extends DestError {
  override readonly code = 'E_DISK_FULL';
  constructor(imageDir: string, options?: { cause?: unknown }) {
    super(`the destination's disk is full (writing the image under ${imageDir})`, options);
  }

  /** Whether `e` is the system's "no space left" or "quota exceeded". */
  static isDiskFull(e: unknown): boolean {
    const code = (e as { code?: unknown } | null)?.code;
    return code === 'ENOSPC' || code === 'EDQUOT';
  }
}

/** A bad argument to forecopy-dest: one sentence on stderr, exit code 2. */
export class UserError extends DestError {
  override readonly code = 'E_USAGE';
  override readonly exitCode = EXIT.usage;
}

/** The listening socket could not be opened: exit code 3. */
export class ListenError extends DestError {
  override readonly code = 'E_LISTEN';
  override readonly exitCode = EXIT.listen;
}

/** The code a failed session reports (log, `.failed.json`, Abort): its own, else E_DEST. */
export function failureCode(e: Error & { code?: string }): string {
  return e instanceof DestError ? e.code : (e.code ?? 'E_DEST');
}

export const DEST_ERROR_CODES: Readonly<Record<string, string>> = Object.freeze({
  E_DEST: 'the destination failed for a reason of its own, named in the message',
  E_ORDER:
    'a message came out of order: a second Hello, a round or batch out of sequence, a final round without StopAndCopy, Checksums before the final round ended, or a Query that did not open its connection',
  E_UNEXPECTED: 'a message a source never sends to a destination at that point (an answer, or Commit before Verified)',
  E_PAGE_SIZE: "the source's page size is not the one this destination supports",
  E_BUSY:
    'the destination runs --max-sessions migrations already, or a --once destination took its one migration and now answers only queries',
  E_STREAM:
    'a data stream of the migration (--streams) failed or closed while pages were still to come, or a StreamJoin named a stream the session does not expect',
  E_LAYOUT: 'the announced layout cannot be an image: a segment twice, overlapping or changing shape, or larger than --max-image-gb allows',
  E_COUNT: 'a round ended announcing another number of pages than arrived',
  E_RANGE: 'a page or a checksum lies outside the announced layout, or a page got two checksums',
  E_BAD_PAGE: 'a page is of an unknown kind, or its lz4 block does not hold exactly one page',
  E_NO_COMMIT:
    'after Verified the source did not commit the handover (it sent something else, closed, fell silent, or a Query settled the session first); the image is discarded',
  E_NOT_COMMITTED: 'the answer to a Query for a session this destination did not make final, and never will',
  E_DISK_FULL: "the destination's disk or quota filled up while it wrote the image; the partial image is discarded",
  E_USAGE: 'forecopy-dest was given bad arguments (exit code 2)',
  E_LISTEN: 'forecopy-dest could not open its port: in use, or not an address of this host (exit code 3)',
});
