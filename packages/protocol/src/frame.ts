/**
 * The forecopy wire protocol, version 1.
 *
 *   source                                         destination
 *     │── Hello (magic, version, session, layout) ───▶│  creates the image; a destination that
 *     │   [restore: what a restore needs]             │  restores checks `restore` first
 *     │   [verify: full | incremental]                │  incremental: hash each page written
 *     │◀────────────── HelloAck (credit[, restore]) ──│  restore: it will rebuild the process
 *     │── RoundStart 1 ──────────────────────────────▶│
 *     │── PageBatch ─────────────────────────────────▶│  applies the pages
 *     │◀───────────────────────────── BatchAck (+1) ──│  one credit back per batch
 *     │   ... at most `credit` batches unacknowledged ...
 *     │── RoundEnd 1 ────────────────────────────────▶│
 *     │◀──────────────────────────────── RoundAck 1 ──│
 *     │   ... rounds 2..n, the same way ...
 *     │── StopAndCopy (the process is frozen) ───────▶│
 *     │── RoundStart n+1 (final) ─ PageBatch... ─────▶│
 *     │── RoundEnd n+1 ──────────────────────────────▶│
 *     │◀────────────────────────────── RoundAck n+1 ──│  stopCopyMs ends here: the final pages are in
 *     │── ProcessState (state; payload: pages ───────▶│  only when HelloAck.restore: checks the
 *     │   of the non-migrated mappings)               │  state, hashes it as the source did
 *     │── Checksums (xxh64 per page, in chunks; ─────▶│  hashes its image, compares; the first
 *     │   the first one carries stateHash)            │  Checksums: stateHash too
 *     │   or, with verify = incremental:              │
 *     │── Digest (of the page hashes as sent ────────▶│  compares with its digest of the pages
 *     │   [, stateHash])                              │  as written (PageHashes)
 *     │◀──── Verified | Mismatch[ (state, digest)] ──│  image verified, not yet final
 *     │── Commit ────────────────────────────────────▶│  the handover: make it final; a restoring
 *     │                                               │  one rebuilds the process, holds it stopped
 *     │◀────── Committed[ (restoredPid, restoreMs)] ──│  only now does the source let go
 *     │   without a restore, the session ends here; with one, the source kills its
 *     │   frozen copy and waits until it is gone, then:
 *     │── Release (session) ─────────────────────────▶│  lets the restored process run
 *     │◀─────────── Resolved (running, pid, reason) ──│  the process runs again, at the destination
 *     │   either side may send Abort (code, reason) at any time and close
 *
 * [ ] marks optional fields.
 *
 * Restore (the destination says so in HelloAck.restore: forecopy-dest listen --restore): the
 * source captures the frozen process's state during stop-and-copy and, after the final RoundAck
 * and before Checksums, sends it in ProcessState: the header is the state as a map (packages/linux
 * ProcessState), the payload the pages of the non-migrated mappings that the state lists
 * (`contents`). Without HelloAck.restore there is no ProcessState, no stateHash and no Release.
 * Both agents hash packMap(state) followed by the payload (xxh64; the destination packs the map
 * it decoded again, which gives the same bytes); the first Checksums carries the source's hash as
 * stateHash, and a destination whose own differs answers Mismatch with `state: true`. On Commit a
 * restoring destination rebuilds the process and holds it stopped, and Committed names it
 * (restoredPid, restoreMs). The source kills its copy, waits until it is gone and sends Release;
 * the destination lets the restored one run and answers Resolved. Never two running copies: from
 * StopAndCopy until Release the process runs nowhere.
 *
 * On a new connection the first message is one of these two exchanges, and the connection ends
 * with the answer:
 *
 *   source                                         destination
 *     │── Query (session) ───────────────────────────▶│  what became of the session?
 *     │◀───────── Committed[ (restoredPid)] | Abort ──│  Abort: the image is discarded for good
 *
 *     │── Release (session) | Discard (session) ─────▶│  the source's copy is gone | runs on
 *     │◀─────────── Resolved (running, pid, reason) ──│  the restored one runs | was ended
 *
 * Query: when Committed does not arrive, the source asks with the session id; the destination
 * answers Committed (with restoredPid when it holds a restored process), or Abort after
 * discarding the pending image for good, so that a late Commit can no longer make it final: the
 * answer is the truth. Release | Discard: when Resolved does not arrive, the source sends Release
 * again on new connections until its timeout, then names `forecopy-source resolve`, which sends
 * Release when the original is gone from the source host and Discard when it still runs there
 * (same pid, same start time). The destination answers Resolved either way: running false, with a
 * reason, when it ended its copy or the copy was already gone.
 *
 * Versioning: Hello carries the protocol version. An agent accepts its own version and the one
 * immediately before it (version 1 has none before it); any other version is rejected with
 * E_UNSUPPORTED_VERSION before a page flows.
 *
 * Frame: u32 BE length of what follows | u8 message type | u32 BE header length |
 *        msgpack header (a map) | raw payload (page data, checksums, process contents).
 * The payload is never copied into the header's buffer: `encodeMessage` returns the two parts
 * for a gathered write.
 */
import { Packr, Unpackr } from 'msgpackr';
import { FRAME_PREFIX_BYTES, MAX_FRAME_BYTES, MAX_HEADER_BYTES } from './constants.js';
import { BadHeaderError, FrameTooLargeError, FrameTruncatedError, LimitExceededError, ProtocolError } from './errors.js';
import { headerToWire, MessageType, payloadBytes, validateMessage, type Message } from './messages.js';

const packr = new Packr({ useRecords: false });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true });

/**
 * Encodes a message as [prefix + header, ...its payload's pieces (none empty)], or, given
 * `parts`, as [prefix + header, ...parts]: the payload in pieces, for a gathered write that copies
 * none of them (the message's own payload is then ignored).
 */
export function encodeMessage(m: Message, parts?: readonly Buffer[]): Buffer[] {
  const header = packr.pack(headerToWire(m));
  if (header.length > MAX_HEADER_BYTES)
    throw new LimitExceededError(`a ${m.type} header of ${header.length} bytes exceeds ${MAX_HEADER_BYTES}`);
  const payload = parts ?? (m.type === MessageType.PageBatch ? m.payload : m.payload ? [m.payload] : []);
  const frameLen = 1 + 4 + header.length + payloadBytes(payload);
  if (frameLen > MAX_FRAME_BYTES) throw new FrameTooLargeError(`a frame of ${frameLen} bytes exceeds ${MAX_FRAME_BYTES}`);
  const head = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + header.length);
  head.writeUInt32BE(frameLen, 0);
  head.writeUInt8(m.type, 4);
  head.writeUInt32BE(header.length, 5);
  header.copy(head, FRAME_PREFIX_BYTES);
  return [head, ...payload.filter((p) => p.length > 0)];
}

/**
 * A map as msgpack, the way headers are packed. Both agents hash a ProcessState in this form
 * (the destination packs what it decoded again), so the hash covers what was understood, not
 * only what was received.
 */
export function packMap(map: Record<string, unknown>): Buffer {
  return packr.pack(map);
}

/**
 * Decodes a frame body (everything after the u32 length), given whole or in pieces laid end to
 * end (views of the socket's chunks): only the header is joined where it spans pieces.
 */
export function decodeFrameBody(body: Buffer | readonly Buffer[]): Message {
  const parts = Buffer.isBuffer(body) ? [body] : body;
  const size = payloadBytes(parts);
  if (size < 5) throw new BadHeaderError(`a frame of ${size} bytes is too short`);
  const prefix = joined(sliceParts(parts, 0, 5));
  const type = prefix.readUInt8(0);
  const hlen = prefix.readUInt32BE(1);
  if (hlen > MAX_HEADER_BYTES) throw new LimitExceededError(`a header of ${hlen} bytes exceeds ${MAX_HEADER_BYTES}`);
  if (5 + hlen > size) throw new BadHeaderError(`header length ${hlen} runs past the frame`);
  let header: unknown;
  try {
    header = unpackr.unpack(joined(sliceParts(parts, 5, 5 + hlen)));
  } catch (e) {
    throw new BadHeaderError(`the header is not valid msgpack: ${(e as Error).message}`);
  }
  return validateMessage(type, header, sliceParts(parts, 5 + hlen, size));
}

/** Bytes from..to of `parts` laid end to end, as views of them (none copied). */
function sliceParts(parts: readonly Buffer[], from: number, to: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0;
  for (const p of parts) {
    const s = Math.max(from - at, 0);
    const e = Math.min(to - at, p.length);
    if (e > s) out.push(s === 0 && e === p.length ? p : p.subarray(s, e));
    at += p.length;
    if (at >= to) break;
  }
  return out;
}

/** One buffer of `parts`: the only one itself, or a copy of them joined. */
function joined(parts: readonly Buffer[]): Buffer {
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

type DecoderState = 'READ_LENGTH' | 'READ_BODY';

/**
 * Incremental frame decoder: feed it chunks as TCP delivers them (a frame split over many chunks
 * or many frames in one chunk). Bounded: a length over `maxFrameBytes` is refused as soon as its
 * four bytes arrive, before any of the body is buffered. After an error it stays failed.
 *
 * A frame's payload is views of the chunks it arrived in, none copied: a PageBatch keeps it in
 * those pieces; the other messages' payloads are joined into one buffer where they span chunks.
 */
export class FrameDecoder {
  private state: DecoderState = 'READ_LENGTH';
  private chunks: Buffer[] = [];
  private buffered = 0;
  private need = 4;
  private failed: ProtocolError | null = null;
  readonly maxFrameBytes: number;

  constructor(opts: { maxFrameBytes?: number } = {}) {
    this.maxFrameBytes = opts.maxFrameBytes || MAX_FRAME_BYTES;
  }

  push(chunk: Buffer): Message[] {
    if (this.failed) throw this.failed;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: Message[] = [];
    try {
      while (this.buffered >= this.need) {
        if (this.state === 'READ_LENGTH') {
          const len = this.consume(4).readUInt32BE(0);
          if (len > this.maxFrameBytes) throw new FrameTooLargeError(`a frame announces ${len} bytes, more than ${this.maxFrameBytes}`);
          if (len < 5) throw new BadHeaderError(`a frame announces ${len} bytes, too short for a type and header length`);
          this.need = len;
          this.state = 'READ_BODY';
        } else {
          out.push(decodeFrameBody(this.take(this.need)));
          this.need = 4;
          this.state = 'READ_LENGTH';
        }
      }
    } catch (e) {
      this.failed = e instanceof ProtocolError ? e : new BadHeaderError((e as Error).message);
      this.chunks = [];
      throw this.failed;
    }
    return out;
  }

  /** The stream ended: throws if it ended inside a frame. */
  end(): void {
    if (this.failed) return;
    if (this.buffered > 0) {
      this.failed = new FrameTruncatedError(
        `the stream ended inside a frame (${this.buffered} bytes of ${this.state === 'READ_LENGTH' ? 4 : this.need} buffered)`,
      );
      throw this.failed;
    }
  }

  /** Takes n bytes off the front of the queued chunks, as one buffer (copied where they span chunks). */
  private consume(n: number): Buffer {
    return joined(this.take(n));
  }

  /** Takes n bytes off the front of the queued chunks, as views of them (none copied). */
  private take(n: number): Buffer[] {
    this.buffered -= n;
    const out: Buffer[] = [];
    for (let left = n; left > 0; ) {
      const c = this.chunks[0];
      if (c.length <= left) {
        out.push(c);
        this.chunks.shift();
        left -= c.length;
      } else {
        out.push(c.subarray(0, left));
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    return out;
  }
}
