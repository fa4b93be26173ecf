import {
  LZ4_PAGE_BOUND,
  MAGIC,
  MAX_CHECKSUMS_PER_FRAME,
  MAX_MAPPINGS,
  MAX_MISMATCH_PAGES,
  MAX_PAGES_PER_BATCH,
  MAX_STREAMS,
  MAX_RANGES_PER_BATCH,
  PAGE_KIND,
  PAGE_SIZE,
  SUPPORTED_VERSIONS,
} from './constants.js';
import {
  BadHeaderError,
  BadMagicError,
  BadPayloadError,
  InvalidMessageTypeError,
  LimitExceededError,
  UnknownMessageTypeError,
  UnsupportedVersionError,
} from './errors.js';
import { RangeTable } from './range-table.js';

/**
 * The messages of the forecopy protocol: numbered types (0 is never valid, so a zeroed frame
 * means nothing), a typed header each, built only through the named factories below and checked
 * field by field when decoded (`validateMessage`).
 */
export enum MessageType {
  Invalid = 0,
  Hello = 1,
  HelloAck = 2,
  RoundStart = 3,
  PageBatch = 4,
  BatchAck = 5,
  RoundEnd = 6,
  RoundAck = 7,
  StopAndCopy = 8,
  Checksums = 9,
  Verified = 10,
  Mismatch = 11,
  Abort = 12,
  /** Source to destination, after Verified: the handover happens; make the image final. */
  Commit = 13,
  /** Destination to source: the image is final (answer to Commit or Query). */
  Committed = 14,
  /** Source to destination, on a new connection: what became of this session? */
  Query = 15,
  /**
   * Source to destination, after the final round and before Checksums, when the destination
   * restores: the frozen process's state (header) and the pages of its non-migrated mappings
   * that are not their files' (payload).
   */
  ProcessState = 16,
  /**
   * Source to destination: its own copy of the process is gone; let the restored one run. Sent
   * after Committed on the migration's connection, or first on a new one (a retry, or resolve).
   */
  Release = 17,
  /** Source to destination, first on a new connection (resolve): its own copy runs on; end the restored one. */
  Discard = 18,
  /** Destination to source: what became of the restored process (answers Release and Discard). */
  Resolved = 19,
  /**
   * Source to destination, after the final round, instead of Checksums when Hello.verify is
   * 'incremental': one digest over the hashes of every live page as last sent (PageHashes).
   */
  Digest = 20,
  /**
   * Source to destination, first on an extra connection of a migration (`--streams N`): this
   * connection carries PageBatch frames of the session named, as data stream `stream` (1..N-1;
   * stream 0 is the session's own connection). Answered with a HelloAck granting the stream's
   * credit, or Abort.
   */
  StreamJoin = 21,
}

/** One migrated address range of the source process. */
export interface Mapping {
  /** Unique in the session; a segment's shape never changes under its id. */
  id: number;
  start: number;
  pages: number;
  /** /proc/PID/maps permissions, e.g. 'rw-p'. */
  prot: string;
  offset: number;
  name: string;
  migrated: boolean;
  /** First page index of this mapping in the session's linear page space. */
  indexBase: number;
}

export interface HelloHeader {
  magic: string;
  version: number;
  sessionId: string;
  pageSize: number;
  totalPages: number;
  policy: string;
  layout: Mapping[];
  /**
   * What a destination that restores checks before the first page (packages/linux
   * RestorePreview: every mapping's range, the files that must exist, the vDSO's fingerprint).
   * Carried as a map; the destination validates its fields.
   */
  restore?: Record<string, unknown>;
  /**
   * 'incremental': both agents hash each page as they send and write it, and verification is one
   * digest (Digest); absent or 'full': the frozen memory is hashed again (Checksums).
   */
  verify?: VerifyMode;
  /** Connections the source would like to send pages on (1, or absent, = this one only). */
  streams?: number;
}
/** How the image is verified: see HelloHeader.verify. */
export type VerifyMode = 'full' | 'incremental';
export const VERIFY_MODES: readonly VerifyMode[] = ['full', 'incremental'];
export interface HelloAckHeader {
  version: number;
  sessionId: string;
  /** PageBatch frames the source may have unacknowledged. */
  credit: number;
  /** 0 = the protocol's default. */
  maxFrameBytes: number;
  /** The destination will rebuild the process and run it (forecopy-dest --restore). */
  restore?: boolean;
  /** Connections the destination accepts for this session (at most Hello.streams; absent = 1). */
  streams?: number;
  /** With streams > 1: the secret each extra connection names in its StreamJoin. */
  streamToken?: string;
}
export interface StreamJoinHeader {
  sessionId: string;
  /** HelloAck.streamToken of the session. */
  token: string;
  /** 1..streams-1. */
  stream: number;
}
export interface RoundStartHeader {
  round: number;
  final: boolean;
  plannedPages: number;
  /** Present when the layout changed since it was last announced. */
  layout?: Mapping[];
}
export interface PageBatchHeader {
  round: number;
  seq: number;
  ranges: RangeTable;
  /** One byte per page: PAGE_KIND.RAW, LZ4 or ZERO. */
  kinds: Uint8Array;
  /** Payload bytes of each non-zero page, in order. */
  lengths: number[];
}
export interface BatchAckHeader {
  seq: number;
  credit: number;
}
export interface RoundEndHeader {
  round: number;
  pagesSent: number;
  batches: number;
}
export interface RoundAckHeader {
  round: number;
  pagesApplied: number;
}
export interface StopAndCopyHeader {
  round: number;
}
export interface ChecksumsHeader {
  algorithm: 'xxh64';
  firstPage: number;
  count: number;
  /**
   * On the first Checksums of a restore only: xxh64 of packMap(state) followed by the payload of
   * the ProcessState sent, as 16 lower-case hex digits.
   */
  stateHash?: string;
}
export interface ProcessStateHeader {
  /** packages/linux ProcessState, as a map; the destination validates its fields. */
  state: Record<string, unknown>;
}
export interface CommittedHeader {
  sessionId: string;
  /** The restored process's pid at the destination, held stopped until Release. */
  restoredPid?: number;
  /** How long the restore took at the destination. */
  restoreMs?: number;
}
export interface ResolvedHeader {
  sessionId: string;
  /** The restored process runs (Release) or was ended (Discard, or it was already gone). */
  running: boolean;
  pid: number;
  reason: string;
}
export interface VerifiedHeader {
  pages: number;
}
export interface MismatchHeader {
  mismatched: number;
  firstPages: number[];
  /** The process state (restore) differs from what the source sent. */
  state?: boolean;
  /** Incremental verification: the digests differ (which pages, the digest does not say). */
  digest?: boolean;
}
export interface DigestHeader {
  algorithm: 'xxh64-of-page-hashes';
  /** Live pages the digest covers. */
  pages: number;
  /** 16 hex digits. */
  digest: string;
  /** xxh64 of the ProcessState sent (restore), as on Checksums. */
  stateHash?: string;
}
export interface AbortHeader {
  code: string;
  reason: string;
}
export interface SessionRefHeader {
  sessionId: string;
}

export type Message =
  | { type: MessageType.Hello; header: HelloHeader; payload?: undefined }
  | { type: MessageType.HelloAck; header: HelloAckHeader; payload?: undefined }
  | { type: MessageType.RoundStart; header: RoundStartHeader; payload?: undefined }
  /**
   * A PageBatch's payload is in pieces: as the source gathered them, or as the socket delivered
   * them (a frame that spans several reads is not joined). `payloadBytes` gives its length.
   */
  | { type: MessageType.PageBatch; header: PageBatchHeader; payload: readonly Buffer[] }
  | { type: MessageType.BatchAck; header: BatchAckHeader; payload?: undefined }
  | { type: MessageType.RoundEnd; header: RoundEndHeader; payload?: undefined }
  | { type: MessageType.RoundAck; header: RoundAckHeader; payload?: undefined }
  | { type: MessageType.StopAndCopy; header: StopAndCopyHeader; payload?: undefined }
  | { type: MessageType.Checksums; header: ChecksumsHeader; payload: Buffer }
  | { type: MessageType.Verified; header: VerifiedHeader; payload?: undefined }
  | { type: MessageType.Mismatch; header: MismatchHeader; payload?: undefined }
  | { type: MessageType.Abort; header: AbortHeader; payload?: undefined }
  | { type: MessageType.Commit; header: SessionRefHeader; payload?: undefined }
  | { type: MessageType.Committed; header: CommittedHeader; payload?: undefined }
  | { type: MessageType.Query; header: SessionRefHeader; payload?: undefined }
  | { type: MessageType.ProcessState; header: ProcessStateHeader; payload: Buffer }
  | { type: MessageType.Release; header: SessionRefHeader; payload?: undefined }
  | { type: MessageType.Discard; header: SessionRefHeader; payload?: undefined }
  | { type: MessageType.Resolved; header: ResolvedHeader; payload?: undefined }
  | { type: MessageType.Digest; header: DigestHeader; payload?: undefined }
  | { type: MessageType.StreamJoin; header: StreamJoinHeader; payload?: undefined };

// ---- factories -------------------------------------------------------------------------------

export const hello = (h: HelloHeader): Message => ({ type: MessageType.Hello, header: h });
export const helloAck = (h: HelloAckHeader): Message => ({ type: MessageType.HelloAck, header: h });
export const streamJoin = (h: StreamJoinHeader): Message => ({ type: MessageType.StreamJoin, header: h });
export const roundStart = (h: RoundStartHeader): Message => ({ type: MessageType.RoundStart, header: h });
export const pageBatch = (h: PageBatchHeader, payload: Buffer | readonly Buffer[]): Message => ({
  type: MessageType.PageBatch,
  header: h,
  payload: Buffer.isBuffer(payload) ? [payload] : payload,
});
export const batchAck = (h: BatchAckHeader): Message => ({ type: MessageType.BatchAck, header: h });
export const roundEnd = (h: RoundEndHeader): Message => ({ type: MessageType.RoundEnd, header: h });
export const roundAck = (h: RoundAckHeader): Message => ({ type: MessageType.RoundAck, header: h });
export const stopAndCopy = (h: StopAndCopyHeader): Message => ({ type: MessageType.StopAndCopy, header: h });
export const checksums = (h: ChecksumsHeader, payload: Buffer): Message => ({ type: MessageType.Checksums, header: h, payload });
export const verified = (h: VerifiedHeader): Message => ({ type: MessageType.Verified, header: h });
export const mismatch = (h: MismatchHeader): Message => ({ type: MessageType.Mismatch, header: h });
export const abort = (h: AbortHeader): Message => ({ type: MessageType.Abort, header: h });
export const commit = (h: SessionRefHeader): Message => ({ type: MessageType.Commit, header: h });
export const committed = (h: CommittedHeader): Message => ({ type: MessageType.Committed, header: h });
export const query = (h: SessionRefHeader): Message => ({ type: MessageType.Query, header: h });
export const processState = (h: ProcessStateHeader, payload: Buffer): Message => ({ type: MessageType.ProcessState, header: h, payload });
export const release = (h: SessionRefHeader): Message => ({ type: MessageType.Release, header: h });
export const discard = (h: SessionRefHeader): Message => ({ type: MessageType.Discard, header: h });
export const resolved = (h: ResolvedHeader): Message => ({ type: MessageType.Resolved, header: h });
export const digest = (h: DigestHeader): Message => ({ type: MessageType.Digest, header: h });

/** The length of a payload in pieces. */
export function payloadBytes(parts: readonly Buffer[]): number {
  let n = 0;
  for (const p of parts) n += p.length;
  return n;
}

// ---- wire form of headers --------------------------------------------------------------------

/** The header as it goes into msgpack (RangeTable flattened, byte arrays as Buffers). */
export function headerToWire(m: Message): Record<string, unknown> {
  if (m.type === MessageType.PageBatch) {
    const h = m.header;
    return {
      round: h.round,
      seq: h.seq,
      ranges: h.ranges.toWire(),
      kinds: Buffer.from(h.kinds.buffer, h.kinds.byteOffset, h.kinds.byteLength),
      lengths: h.lengths,
    };
  }
  return m.header as unknown as Record<string, unknown>;
}

type Obj = Record<string, unknown>;

function uint(o: Obj, k: string, max = Number.MAX_SAFE_INTEGER): number {
  const v = o[k];
  if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) > max) {
    throw new BadHeaderError(`field '${k}' must be a whole number from 0 to ${max}, got ${JSON.stringify(v)}`);
  }
  return v as number;
}
function int(o: Obj, k: string): number {
  const v = o[k];
  if (!Number.isSafeInteger(v)) throw new BadHeaderError(`field '${k}' must be a whole number, got ${JSON.stringify(v)}`);
  return v as number;
}
function str(o: Obj, k: string, maxLen = 4096): string {
  const v = o[k];
  if (typeof v !== 'string' || v.length > maxLen) throw new BadHeaderError(`field '${k}' must be a string of at most ${maxLen} characters`);
  return v;
}
function nonNegative(o: Obj, k: string): number {
  const v = o[k];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw new BadHeaderError(`field '${k}' must be a number from 0`);
  return v;
}
function bool(o: Obj, k: string): boolean {
  const v = o[k];
  if (typeof v !== 'boolean') throw new BadHeaderError(`field '${k}' must be true or false`);
  return v;
}
function uintArray(o: Obj, k: string, maxLen: number, maxVal = Number.MAX_SAFE_INTEGER): number[] {
  const v = o[k];
  if (!Array.isArray(v)) throw new BadHeaderError(`field '${k}' must be an array`);
  if (v.length > maxLen) throw new LimitExceededError(`field '${k}' has ${v.length} entries, more than ${maxLen}`);
  for (const x of v)
    if (!Number.isSafeInteger(x) || x < 0 || x > maxVal)
      throw new BadHeaderError(`field '${k}' must hold whole numbers from 0 to ${maxVal}`);
  return v as number[];
}

function map(o: Obj, k: string): Record<string, unknown> {
  const v = o[k];
  if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array)
    throw new BadHeaderError(`field '${k}' must be a map`);
  return v as Record<string, unknown>;
}
function sessionIdOf(o: Obj): string {
  const sessionId = str(o, 'sessionId', 32);
  if (!/^[0-9a-f]{32}$/.test(sessionId)) throw new BadHeaderError('sessionId must be 32 lower-case hex characters');
  return sessionId;
}

function layout(o: Obj, k: string): Mapping[] {
  const v = o[k];
  if (!Array.isArray(v)) throw new BadHeaderError(`field '${k}' must be an array of mappings`);
  if (v.length > MAX_MAPPINGS) throw new LimitExceededError(`the layout has ${v.length} mappings, more than ${MAX_MAPPINGS}`);
  return v.map((m: unknown, i: number) => {
    if (typeof m !== 'object' || m === null) throw new BadHeaderError(`mapping ${i} is not a map`);
    const mo = m as Obj;
    return {
      id: uint(mo, 'id'),
      start: uint(mo, 'start'),
      pages: uint(mo, 'pages'),
      prot: str(mo, 'prot', 8),
      offset: uint(mo, 'offset'),
      name: str(mo, 'name'),
      migrated: bool(mo, 'migrated'),
      indexBase: int(mo, 'indexBase'),
    };
  });
}

/** Checks one message type's header (and payload), returning the typed message. */
type Validator = (o: Obj, payload: Buffer, type: MessageType) => Message;

/** A message that carries no payload: refuses one before `check` reads the header. */
const headerOnly =
  (check: (o: Obj, type: MessageType) => Message): Validator =>
  (o, payload, type) => {
    if (payload.length !== 0) throw new BadPayloadError(`${MessageType[type]} carries no payload, got ${payload.length} bytes`);
    return check(o, type);
  };

function validateHello(o: Obj): Message {
  const magic = str(o, 'magic', 16);
  if (magic !== MAGIC) throw new BadMagicError(`bad magic ${JSON.stringify(magic)}: the peer is not a forecopy agent`);
  const version = uint(o, 'version', 0xffff);
  if (!SUPPORTED_VERSIONS.includes(version)) {
    throw new UnsupportedVersionError(`protocol version ${version} is not supported (this agent speaks ${SUPPORTED_VERSIONS.join(', ')})`);
  }
  const sessionId = str(o, 'sessionId', 32);
  if (!/^[0-9a-f]{32}$/.test(sessionId)) throw new BadHeaderError(`sessionId must be 32 lower-case hex characters`);
  const h: HelloHeader = {
    magic,
    version,
    sessionId,
    pageSize: uint(o, 'pageSize'),
    totalPages: uint(o, 'totalPages'),
    policy: str(o, 'policy', 64),
    layout: layout(o, 'layout'),
  };
  if (o.restore !== undefined) h.restore = map(o, 'restore');
  if (o.verify !== undefined) {
    const v = str(o, 'verify', 16);
    if (!(VERIFY_MODES as readonly string[]).includes(v))
      throw new BadHeaderError(`verify must be one of ${VERIFY_MODES.join(', ')}, got ${v}`);
    h.verify = v as VerifyMode;
  }
  if (o.streams !== undefined) h.streams = streamCount(o);
  return { type: MessageType.Hello, header: h };
}

function validateHelloAck(o: Obj): Message {
  const sessionId = str(o, 'sessionId', 32);
  const h: HelloAckHeader = {
    version: uint(o, 'version', 0xffff),
    sessionId,
    credit: uint(o, 'credit', 1 << 20),
    maxFrameBytes: uint(o, 'maxFrameBytes'),
  };
  if (o.restore !== undefined) h.restore = bool(o, 'restore');
  if (o.streams !== undefined) h.streams = streamCount(o);
  if (o.streamToken !== undefined) h.streamToken = hex32(o, 'streamToken');
  return { type: MessageType.HelloAck, header: h };
}

/** Connections of one migration: 1..MAX_STREAMS. */
function streamCount(o: Obj): number {
  const n = uint(o, 'streams', MAX_STREAMS);
  if (n < 1) throw new BadHeaderError(`streams must be from 1 to ${MAX_STREAMS}`);
  return n;
}
function hex32(o: Obj, k: string): string {
  const v = str(o, k, 32);
  if (!/^[0-9a-f]{32}$/.test(v)) throw new BadHeaderError(`${k} must be 32 lower-case hex characters`);
  return v;
}
function validateStreamJoin(o: Obj): Message {
  const h: StreamJoinHeader = { sessionId: sessionIdOf(o), token: hex32(o, 'token'), stream: uint(o, 'stream', MAX_STREAMS - 1) };
  if (h.stream < 1) throw new BadHeaderError("an extra stream is numbered from 1 (0 is the session's own connection)");
  return { type: MessageType.StreamJoin, header: h };
}

function validateRoundStart(o: Obj): Message {
  const h: RoundStartHeader = { round: uint(o, 'round'), final: bool(o, 'final'), plannedPages: uint(o, 'plannedPages') };
  if (o.layout !== undefined) h.layout = layout(o, 'layout');
  if (h.round < 1) throw new BadHeaderError('rounds are numbered from 1');
  return { type: MessageType.RoundStart, header: h };
}

function validatePageBatch(o: Obj, payload: readonly Buffer[]): Message {
  const ranges = RangeTable.fromWire(o.ranges);
  if (ranges.rangeCount > MAX_RANGES_PER_BATCH)
    throw new LimitExceededError(`a batch has ${ranges.rangeCount} ranges, more than ${MAX_RANGES_PER_BATCH}`);
  const pages = ranges.pages();
  if (pages > MAX_PAGES_PER_BATCH) throw new LimitExceededError(`a batch has ${pages} pages, more than ${MAX_PAGES_PER_BATCH}`);
  const kinds = o.kinds;
  if (!(kinds instanceof Uint8Array)) throw new BadHeaderError(`field 'kinds' must be bytes`);
  if (kinds.length !== pages) throw new BadHeaderError(`field 'kinds' has ${kinds.length} entries for ${pages} pages`);
  const lengths = uintArray(o, 'lengths', MAX_PAGES_PER_BATCH, LZ4_PAGE_BOUND);
  checkPageLengths(kinds, lengths, payload);
  return {
    type: MessageType.PageBatch,
    header: { round: uint(o, 'round'), seq: uint(o, 'seq', 0xffffffff), ranges, kinds, lengths },
    payload,
  };
}

/** Each non-zero page of a batch has one length, fitting its kind; together they fill the payload. */
function checkPageLengths(kinds: Uint8Array, lengths: number[], payload: readonly Buffer[]): void {
  let li = 0;
  let sum = 0;
  for (let i = 0; i < kinds.length; i++) {
    const k = kinds[i];
    if (k === PAGE_KIND.ZERO) continue;
    if (li >= lengths.length) throw new BadPayloadError(`'lengths' has fewer entries than non-zero pages`);
    const len = lengths[li++];
    if (k === PAGE_KIND.RAW && len !== PAGE_SIZE) throw new BadPayloadError(`a raw page has ${len} bytes, not ${PAGE_SIZE}`);
    if (k === PAGE_KIND.LZ4 && (len < 1 || len > LZ4_PAGE_BOUND)) throw new BadPayloadError(`an lz4 page has ${len} bytes`);
    if (k !== PAGE_KIND.RAW && k !== PAGE_KIND.LZ4) throw new BadHeaderError(`unknown page kind ${k}`);
    sum += len;
  }
  if (li !== lengths.length) throw new BadPayloadError(`'lengths' has ${lengths.length} entries for ${li} non-zero pages`);
  const bytes = payloadBytes(payload);
  if (sum !== bytes) throw new BadPayloadError(`page lengths add up to ${sum} bytes, the payload has ${bytes}`);
}

function validateChecksums(o: Obj, payload: Buffer): Message {
  const algorithm = str(o, 'algorithm', 16);
  if (algorithm !== 'xxh64') throw new BadHeaderError(`checksum algorithm ${algorithm} is not supported (xxh64)`);
  const count = uint(o, 'count', MAX_CHECKSUMS_PER_FRAME);
  if (payload.length !== count * 8)
    throw new BadPayloadError(`${count} checksums need ${count * 8} bytes, the payload has ${payload.length}`);
  const h: ChecksumsHeader = { algorithm, firstPage: uint(o, 'firstPage'), count };
  if (o.stateHash !== undefined) h.stateHash = hex16(o, 'stateHash');
  return { type: MessageType.Checksums, header: h, payload };
}
function hex16(o: Obj, k: string): string {
  const v = str(o, k, 16);
  if (!/^[0-9a-f]{16}$/.test(v)) throw new BadHeaderError(`${k} must be 16 lower-case hex characters`);
  return v;
}
function validateDigest(o: Obj): Message {
  const algorithm = str(o, 'algorithm', 32);
  if (algorithm !== 'xxh64-of-page-hashes')
    throw new BadHeaderError(`digest algorithm ${algorithm} is not supported (xxh64-of-page-hashes)`);
  const h: DigestHeader = { algorithm, pages: uint(o, 'pages'), digest: hex16(o, 'digest') };
  if (o.stateHash !== undefined) h.stateHash = hex16(o, 'stateHash');
  return { type: MessageType.Digest, header: h };
}

function validateMismatch(o: Obj): Message {
  const h: MismatchHeader = { mismatched: uint(o, 'mismatched'), firstPages: uintArray(o, 'firstPages', MAX_MISMATCH_PAGES) };
  if (o.state !== undefined) h.state = bool(o, 'state');
  if (o.digest !== undefined) h.digest = bool(o, 'digest');
  return { type: MessageType.Mismatch, header: h };
}

/** Commit, Query, Release and Discard: a session id only. */
function validateSessionRef(o: Obj, type: MessageType): Message {
  return { type: type as MessageType.Commit, header: { sessionId: sessionIdOf(o) } };
}

function validateCommitted(o: Obj): Message {
  const h: CommittedHeader = { sessionId: sessionIdOf(o) };
  if (o.restoredPid !== undefined) h.restoredPid = uint(o, 'restoredPid', 0x7fffffff);
  if (o.restoreMs !== undefined) h.restoreMs = nonNegative(o, 'restoreMs');
  return { type: MessageType.Committed, header: h };
}

function validateResolved(o: Obj): Message {
  return {
    type: MessageType.Resolved,
    header: { sessionId: sessionIdOf(o), running: bool(o, 'running'), pid: uint(o, 'pid', 0x7fffffff), reason: str(o, 'reason', 4096) },
  };
}

/** The check of each valid message type. */
const VALIDATORS: Record<Exclude<MessageType, MessageType.Invalid | MessageType.PageBatch>, Validator> = {
  [MessageType.Hello]: headerOnly(validateHello),
  [MessageType.HelloAck]: headerOnly(validateHelloAck),
  [MessageType.RoundStart]: headerOnly(validateRoundStart),
  [MessageType.BatchAck]: headerOnly((o) => ({
    type: MessageType.BatchAck,
    header: { seq: uint(o, 'seq', 0xffffffff), credit: uint(o, 'credit', 1 << 20) },
  })),
  [MessageType.RoundEnd]: headerOnly((o) => ({
    type: MessageType.RoundEnd,
    header: { round: uint(o, 'round'), pagesSent: uint(o, 'pagesSent'), batches: uint(o, 'batches') },
  })),
  [MessageType.RoundAck]: headerOnly((o) => ({
    type: MessageType.RoundAck,
    header: { round: uint(o, 'round'), pagesApplied: uint(o, 'pagesApplied') },
  })),
  [MessageType.StopAndCopy]: headerOnly((o) => ({ type: MessageType.StopAndCopy, header: { round: uint(o, 'round') } })),
  [MessageType.Checksums]: validateChecksums,
  [MessageType.Verified]: headerOnly((o) => ({ type: MessageType.Verified, header: { pages: uint(o, 'pages') } })),
  [MessageType.Mismatch]: headerOnly(validateMismatch),
  [MessageType.Abort]: headerOnly((o) => ({
    type: MessageType.Abort,
    header: { code: str(o, 'code', 64), reason: str(o, 'reason', 4096) },
  })),
  [MessageType.Commit]: headerOnly(validateSessionRef),
  [MessageType.Committed]: headerOnly(validateCommitted),
  [MessageType.Query]: headerOnly(validateSessionRef),
  [MessageType.ProcessState]: (o, payload) => ({ type: MessageType.ProcessState, header: { state: map(o, 'state') }, payload }),
  [MessageType.Release]: headerOnly(validateSessionRef),
  [MessageType.Discard]: headerOnly(validateSessionRef),
  [MessageType.Resolved]: headerOnly(validateResolved),
  [MessageType.Digest]: headerOnly(validateDigest),
  [MessageType.StreamJoin]: headerOnly(validateStreamJoin),
};

/**
 * Checks a decoded header and payload (its pieces laid end to end) of `type` and returns the
 * typed message. Throws a ProtocolError naming what is wrong.
 */
export function validateMessage(type: number, raw: unknown, payload: readonly Buffer[]): Message {
  if (type === MessageType.Invalid) throw new InvalidMessageTypeError('message type 0 is never valid');
  if (!(type in MessageType) || typeof MessageType[type] !== 'string') throw new UnknownMessageTypeError(`unknown message type ${type}`);
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new BadHeaderError(`the header of ${MessageType[type]} is not a map`);
  if (type === MessageType.PageBatch) return validatePageBatch(raw as Obj, payload);
  const validate = Object.hasOwn(VALIDATORS, type) ? VALIDATORS[type as keyof typeof VALIDATORS] : undefined;
  if (!validate) throw new UnknownMessageTypeError(`unknown message type ${type}`);
  // Only a PageBatch keeps its payload in pieces: the others' are joined (small, and rare).
  return validate(raw as Obj, payload.length === 1 ? payload[0] : Buffer.concat(payload), type);
}
