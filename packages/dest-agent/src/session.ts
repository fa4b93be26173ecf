import { uncompressSync } from 'lz4-napi';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import xxhash from 'xxhash-wasm';
import {
  MessageChannel,
  MessageType,
  PAGE_KIND,
  PAGE_SIZE,
  PROTOCOL_VERSION,
  abort,
  batchAck,
  helloAck,
  mismatch,
  roundAck,
  verified,
  committed,
  type Message,
} from '@forecopy/protocol';
import { ImageStore, LayoutError } from './image-store.js';

/**
 * One migration, destination side: a state machine over the messages of one connection.
 *
 *   HELLO ──Hello──▶ IDLE ──RoundStart──▶ ROUND ──RoundEnd──▶ IDLE ...
 *                     │ StopAndCopy
 *                     ▼
 *                   FROZEN ──RoundStart(final)──▶ FINAL ──RoundEnd──▶ CHECKSUMS ──all pages──▶ VERIFIED
 *                                                                                          │ Commit
 *                                                                                          ▼
 *   (a new connection) HELLO ──Query──▶ answer Committed or Abort                        DONE
 *
 * Anything out of order, or a page outside the announced layout, is a protocol error: the session
 * answers Abort, discards its partial image and ends; the listener keeps serving.
 */
export type SessionState = 'HELLO' | 'IDLE' | 'ROUND' | 'FROZEN' | 'FINAL' | 'CHECKSUMS' | 'VERIFIED' | 'DONE';

/** What became of sessions that reached Verified, shared by all connections of a listener. */
export type PendingSessions = Map<string, 'pending' | 'committed' | 'discarded'>;

export class SessionProtocolError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'SessionProtocolError';
  }
}

export interface SessionOptions {
  imageDir: string;
  credit: number;
  maxImageBytes: number;
  log: Logger;
  /** Fault injection for tests: flip a byte in this many pages after the final round. */
  corruptPages?: number;
  /** Fault injection for tests: the whole agent dies (exit 137) when the source freezes. */
  dieAtStopAndCopy?: boolean;
  /** Fault injection for tests: commit, but do not answer Committed (a lost answer). */
  dropCommitted?: boolean;
  /** Fault injection: answer Hello this many milliseconds late (the source's sampler runs on). */
  delayHelloAckMs?: number;
  pending: PendingSessions;
  /** Accept only Query connections (a --once listener lingering after its migration). */
  queriesOnly?: boolean;
  replyTimeoutMs?: number;
}

export interface SessionOutcome {
  verified: boolean;
  sessionId?: string;
  imagePath?: string;
  pages?: number;
  mismatched?: number;
  error?: string;
  /** Committed, but the source did not confirm it read the answer: it may come back and ask. */
  answerMayBeLost?: boolean;
}

const MAX_MISMATCH_LISTED = 16;

export async function runSession(channel: MessageChannel, opts: SessionOptions): Promise<SessionOutcome> {
  const { log } = opts;
  let state: SessionState = 'HELLO';
  let store: ImageStore | null = null;
  let round = 0;
  let batchSeq = -1;
  let roundPages = 0;
  let sessionId: string | undefined;
  const t0 = performance.now();
  let frozenAt = 0;
  let finalAppliedMs = 0;
  const rounds: Array<{ round: number; pages: number; final: boolean }> = [];
  const checked = { pages: 0, mismatched: 0, first: [] as number[] };
  let checkedBitmap: Uint8Array | null = null;
  const timeout = opts.replyTimeoutMs ?? 120_000;
  const hasher = await xxhash();
  const scratch = Buffer.allocUnsafe(1024 * PAGE_SIZE);

  const fail = (code: string, msg: string): never => {
    throw new SessionProtocolError(code, msg);
  };

  try {
    for (;;) {
      const m: Message = await channel.next(timeout);
      switch (m.type) {
        case MessageType.Hello: {
          if (state !== 'HELLO') fail('E_ORDER', 'a second Hello in one session');
          if (opts.queriesOnly) fail('E_BUSY', 'this destination took its one migration (--once) and answers only queries now');
          sessionId = m.header.sessionId;
          if (m.header.pageSize !== PAGE_SIZE) fail('E_PAGE_SIZE', `page size ${m.header.pageSize} is not supported (only ${PAGE_SIZE})`);
          store = new ImageStore(opts.imageDir, m.header.sessionId, opts.maxImageBytes);
          store.applyLayout(m.header.layout);
          log.info({ session: sessionId, pages: store.pages, segments: store.segments().length, policy: m.header.policy }, 'migration started');
          if (opts.delayHelloAckMs) await new Promise((r) => setTimeout(r, opts.delayHelloAckMs));
          await channel.send(helloAck({ version: PROTOCOL_VERSION, sessionId: m.header.sessionId, credit: opts.credit, maxFrameBytes: 0 }));
          state = 'IDLE';
          break;
        }
        case MessageType.StopAndCopy: {
          if (state !== 'IDLE') fail('E_ORDER', `StopAndCopy in state ${state}`);
          if (m.header.round !== round + 1) fail('E_ORDER', `StopAndCopy for round ${m.header.round} after round ${round}`);
          frozenAt = performance.now();
          state = 'FROZEN';
          log.info({ session: sessionId, round: m.header.round }, 'the source froze the process: stop-and-copy');
          if (opts.dieAtStopAndCopy) process.exit(137);
          break;
        }
        case MessageType.RoundStart: {
          if (state !== 'IDLE' && state !== 'FROZEN') fail('E_ORDER', `RoundStart in state ${state}`);
          if (m.header.round !== round + 1) fail('E_ORDER', `round ${m.header.round} follows round ${round}`);
          if (m.header.final !== (state === 'FROZEN')) fail('E_ORDER', `a final round must follow StopAndCopy`);
          if (m.header.layout) store!.applyLayout(m.header.layout);
          round = m.header.round;
          roundPages = 0;
          state = m.header.final ? 'FINAL' : 'ROUND';
          break;
        }
        case MessageType.PageBatch: {
          if (state !== 'ROUND' && state !== 'FINAL') fail('E_ORDER', `PageBatch in state ${state}`);
          if (m.header.round !== round) fail('E_ORDER', `PageBatch of round ${m.header.round} during round ${round}`);
          if (m.header.seq <= batchSeq) fail('E_ORDER', `PageBatch seq ${m.header.seq} after ${batchSeq}`);
          batchSeq = m.header.seq;
          roundPages += applyBatch(store!, m, scratch);
          await channel.send(batchAck({ seq: m.header.seq, credit: 1 }));
          break;
        }
        case MessageType.RoundEnd: {
          if (state !== 'ROUND' && state !== 'FINAL') fail('E_ORDER', `RoundEnd in state ${state}`);
          if (m.header.round !== round) fail('E_ORDER', `RoundEnd of round ${m.header.round} during round ${round}`);
          if (m.header.pagesSent !== roundPages) {
            fail('E_COUNT', `round ${round} announced ${m.header.pagesSent} pages but ${roundPages} arrived`);
          }
          rounds.push({ round, pages: roundPages, final: state === 'FINAL' });
          if (state === 'FINAL') {
            finalAppliedMs = performance.now() - frozenAt;
            for (let i = 0; i < (opts.corruptPages ?? 0); i++) {
              const segs = store!.segments();
              const s = segs[i % segs.length];
              store!.corruptPage(s.indexBase + Math.floor(s.pages / 2));
            }
            state = 'CHECKSUMS';
            checkedBitmap = new Uint8Array(store!.segments().reduce((n, s) => Math.max(n, s.indexBase + s.pages), 0));
          } else state = 'IDLE';
          await channel.send(roundAck({ round, pagesApplied: roundPages }));
          break;
        }
        case MessageType.Checksums: {
          if (state !== 'CHECKSUMS') fail('E_ORDER', `Checksums in state ${state}`);
          const { firstPage, count } = m.header;
          const seg = store!.segmentOf(firstPage);
          if (!seg || firstPage + count > seg.indexBase + seg.pages) fail('E_RANGE', `checksums for pages ${firstPage}..${firstPage + count - 1} outside the layout`);
          const want = m.payload!;
          for (let done = 0; done < count; done += 1024) {
            const n = Math.min(1024, count - done);
            store!.readPages(firstPage + done, n, scratch);
            for (let i = 0; i < n; i++) {
              const p = firstPage + done + i;
              if (checkedBitmap![p]) fail('E_RANGE', `page ${p} has two checksums`);
              checkedBitmap![p] = 1;
              const h = hasher.h64Raw(scratch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
              checked.pages++;
              if (h !== want.readBigUInt64LE((done + i) * 8)) {
                checked.mismatched++;
                if (checked.first.length < MAX_MISMATCH_LISTED) checked.first.push(p);
              }
            }
          }
          if (checked.pages === store!.pages) {
            const totalMs = performance.now() - t0;
            if (checked.mismatched === 0) {
              // Verified, but not final: the image becomes final only when the source commits
              // the handover (Commit). Until then a Query from the source may discard it.
              await channel.send(verified({ pages: checked.pages }));
              log.info({ session: sessionId, pages: checked.pages }, 'migration verified; waiting for the handover');
              state = 'VERIFIED';
              opts.pending.set(sessionId!, 'pending');
              let commitMsg: Message | null = null;
              try {
                commitMsg = await channel.next(timeout);
              } catch {
                commitMsg = null;
              }
              if (!commitMsg || commitMsg.type !== MessageType.Commit || commitMsg.header.sessionId !== sessionId || opts.pending.get(sessionId!) !== 'pending') {
                opts.pending.set(sessionId!, 'discarded');
                throw new SessionProtocolError('E_NO_COMMIT', 'the source did not commit the handover');
              }
              const imagePath = store!.commit({
                sessionId,
                verified: true,
                pages: checked.pages,
                pageSize: PAGE_SIZE,
                checksum: 'xxh64 per page',
                rounds,
                timings: { totalMs, finalRoundAppliedMs: finalAppliedMs },
                finishedAt: new Date().toISOString(),
              });
              opts.pending.set(sessionId!, 'committed');
              log.info({ session: sessionId, pages: checked.pages, imagePath }, 'migration committed');
              state = 'DONE';
              // The source closes once it has read Committed. If it does not, our answer may be
              // lost and it may come back with a Query: say so (the listener lingers for it).
              let heard = false;
              if (!opts.dropCommitted) {
                await channel.send(committed({ sessionId: sessionId! })).catch(() => {});
                heard = await channel.next(timeout).then(
                  () => false,
                  (e: Error & { code?: string }) => e.message === 'the peer closed the connection',
                );
              }
              channel.close();
              return { verified: true, sessionId, imagePath, pages: checked.pages, answerMayBeLost: !heard };
            }
            await channel.send(mismatch({ mismatched: checked.mismatched, firstPages: checked.first }));
            store!.discard({ sessionId, verified: false, reason: 'checksum mismatch', mismatched: checked.mismatched, firstPages: checked.first });
            log.error({ session: sessionId, mismatched: checked.mismatched, first: checked.first }, 'checksum mismatch');
            state = 'DONE';
            channel.close();
            return { verified: false, sessionId, mismatched: checked.mismatched, error: 'checksum mismatch' };
          }
          break;
        }
        case MessageType.Query: {
          // A source that lost our answer to Commit asks what became of its session. The answer
          // must be final: a pending image is discarded here, so a late Commit cannot revive it.
          if (state !== 'HELLO') fail('E_ORDER', 'Query must open a connection');
          const id = m.header.sessionId;
          const status = opts.pending.get(id);
          const final = fs.existsSync(path.join(opts.imageDir, id, 'manifest.json'));
          if (status === 'pending') opts.pending.set(id, 'discarded');
          if (final && status !== 'pending') await channel.send(committed({ sessionId: id }));
          else await channel.send(abort({ code: 'E_NOT_COMMITTED', reason: `session ${id} was not made final here` }));
          log.info({ session: id, committed: final && status !== 'pending' }, 'answered a query');
          channel.close();
          return { verified: false };
        }
        default:
          fail('E_UNEXPECTED', `unexpected ${MessageType[m.type] ?? m.type} in state ${state}`);
      }
    }
  } catch (e) {
    let err = e as Error & { code?: string };
    if (err.code === 'ENOSPC' || err.code === 'EDQUOT') {
      err = Object.assign(new Error(`the destination's disk is full (writing the image under ${opts.imageDir})`), { code: 'E_DISK_FULL' });
    }
    const code = err instanceof LayoutError ? 'E_LAYOUT' : (err.code ?? 'E_DEST');
    log.error({ session: sessionId, code, err: err.message, state }, 'migration failed');
    store?.discard({ sessionId, verified: false, reason: err.message, code, state });
    if (!channel.closed) {
      await channel.send(abort({ code, reason: err.message })).catch(() => {});
    }
    channel.close();
    return { verified: false, sessionId, error: err.message };
  }
}

/** Writes a batch's pages into the image; returns how many pages it held. */
function applyBatch(store: ImageStore, m: Extract<Message, { type: MessageType.PageBatch }>, scratch: Buffer): number {
  const { ranges, kinds, lengths } = m.header;
  const payload = m.payload ?? Buffer.alloc(0);
  let k = 0; // page position in the batch
  let li = 0; // position in lengths
  let off = 0; // position in payload
  for (const [start, count] of ranges.entries()) {
    // A run of indices may cross from one segment into the next (segments lie end to end).
    for (let done = 0; done < count; ) {
      const p = start + done;
      const seg = store.segmentOf(p);
      if (!seg) throw new SessionProtocolError('E_RANGE', `page ${p} is outside the announced layout`);
      const n = Math.min(count - done, seg.indexBase + seg.pages - p, scratch.length / PAGE_SIZE);
      for (let i = 0; i < n; i++, k++) {
        const dst = scratch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        const kind = kinds[k];
        if (kind === PAGE_KIND.ZERO) {
          dst.fill(0);
          continue;
        }
        const len = lengths[li++];
        const src = payload.subarray(off, off + len);
        off += len;
        if (kind === PAGE_KIND.RAW) src.copy(dst);
        else if (kind === PAGE_KIND.LZ4) {
          // lz4-napi blocks carry their decompressed size first (u32 LE): refuse anything but a
          // page before the decompressor allocates for it.
          if (src.length < 4 || src.readUInt32LE(0) !== PAGE_SIZE) {
            throw new SessionProtocolError('E_BAD_PAGE', 'an lz4 page does not announce a size of one page');
          }
          const out = uncompressSync(src);
          if (out.length !== PAGE_SIZE) throw new SessionProtocolError('E_BAD_PAGE', `an lz4 page decompressed to ${out.length} bytes`);
          out.copy(dst);
        } else throw new SessionProtocolError('E_BAD_PAGE', `unknown page kind ${kind}`);
      }
      store.writePages(p, n, scratch);
      done += n;
    }
  }
  return k;
}
