import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import xxhash from 'xxhash-wasm';
import {
  PAGE_KIND,
  DEST_UNSET,
  PageHashes,
  ChannelClosedError,
  type MessageChannel,
  MessageType,
  PAGE_SIZE,
  PROTOCOL_VERSION,
  MAX_STREAMS,
  abort,
  batchAck,
  committed,
  helloAck,
  mismatch,
  resolved,
  roundAck,
  verified,
  type Message,
} from '@forecopy/protocol';
import type { RestoredProcess } from '@forecopy/linux';
import type { HuskImage } from './husk-image.js';
import {
  prepareRestore,
  readRecord,
  receiveState,
  resolveHeld,
  runRestore,
  type ReceivedState,
  type RestoreSettings,
} from './restore-step.js';
import { applyBatch } from './apply-batch.js';
import { DataStreams, type Lane, type StreamJoiners } from './streams.js';
import { DiskFullError, SessionProtocolError, failureCode, type SessionProtocolCode } from './errors.js';
import { ImageStore, type PageStore } from './image-store.js';

/**
 * One migration, destination side: a state machine over the messages of one connection. Each
 * state has one handler (`Session.states`), which takes the next message and names the next
 * state, or ends the session with its outcome.
 *
 *   HELLO ──Hello──▶ IDLE ──RoundStart──▶ ROUND ──RoundEnd──▶ IDLE ...
 *     │               │                   ⟲ PageBatch
 *     │ Query         │ StopAndCopy
 *     ▼               ▼
 *   answer          FROZEN ──RoundStart(final)──▶ FINAL ──RoundEnd──▶ CHECKSUMS
 *   Committed                                     ⟲ PageBatch         ⟲ ProcessState (restore), Checksums
 *   or Abort; end                                                         │ all pages checked (or one Digest)
 *                                      ┌───────── a page differs ─────────┤
 *                                      ▼                                  ▼ all match: answer Verified
 *                              answer Mismatch; end                    VERIFIED
 *                                                                         │ Commit: the image becomes final
 *                                            with --restore ┌─────────────┤
 *                                                           ▼             ▼
 *                          RESTORE: rebuild the process, hold it     DONE: answer Committed; end
 *                                                           │              when the source closes
 *                                                           ▼
 *                          HELD: answer Committed(restoredPid); on Release (or Discard) answer
 *                                Resolved; end. The source gone: the process stays stopped.
 *
 * A Query opens a connection of its own: a source that lost our answer to Commit asks what became
 * of its session. Verified is not final: only Commit makes the image final; anything else in
 * VERIFIED (another message, silence, a closed connection, or a Query that came first) discards
 * the image (E_NO_COMMIT). Release and Discard may also open a connection of their own
 * (forecopy-source resolve): they act on the held process the session directory records.
 *
 * Anything out of order, or a page outside the announced layout, is a protocol error: the session
 * answers Abort, discards its partial image and ends; the listener keeps serving.
 */
export type SessionState = 'HELLO' | 'IDLE' | 'ROUND' | 'FROZEN' | 'FINAL' | 'CHECKSUMS' | 'VERIFIED' | 'RESTORE' | 'HELD' | 'DONE';

/** What became of sessions that reached Verified, shared by all connections of a listener. */
export type PendingSessions = Map<string, 'pending' | 'committed' | 'discarded'>;
export type { StreamJoiners } from './streams.js';

export interface SessionOptions {
  imageDir: string;
  credit: number;
  maxImageBytes: number;
  log: Logger;
  /** Fault injection for tests: flip a byte in this many pages after the final round. */
  corruptPages?: number;
  /** Fault injection for tests: flip a byte in this many raw pages of the final round as they arrive. */
  corruptInTransit?: number;
  /** Fault injection for tests: the whole agent dies (exit 137) when the source freezes. */
  dieAtStopAndCopy?: boolean;
  /** Fault injection for tests: commit, but do not answer Committed (a lost answer). */
  dropCommitted?: boolean;
  /** Fault injection for tests: die (SIGKILL) once the image is final, before answering Commit. */
  dieWhenCommitted?: boolean;
  /** Fault injection: answer Hello this many milliseconds late (the source's sampler runs on). */
  delayHelloAckMs?: number;
  pending: PendingSessions;
  /** Accept only Query connections (a --once listener lingering after its migration). */
  queriesOnly?: boolean;
  /** Rebuild the process and run it (forecopy-dest listen --restore); else keep image files. */
  restore?: RestoreSettings | null;
  replyTimeoutMs?: number;
  /** Connections a migration may send pages on, its own included (`--max-streams`; 1 = no extra ones). */
  maxStreams?: number;
  /** Where a session that takes extra connections registers (the listener's). */
  joiners?: StreamJoiners;
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
  /** The restored process's pid (with --restore), and whether it runs (Release came). */
  restoredPid?: number;
  running?: boolean;
}

export async function runSession(channel: MessageChannel, opts: SessionOptions): Promise<SessionOutcome> {
  const startedAt = performance.now();
  const hasher = await xxhash();
  return new Session(channel, opts, hasher, startedAt).run();
}

/** The next state, or the session's end. */
type Step = SessionState | SessionOutcome;

interface StateHandler {
  /**
   * On entering the state, before its first message: nothing to wait in it for a message, or the
   * next step at once (a state whose work needs no message names the state after it).
   */
  enter?: () => Promise<Step | undefined>;
  /** The next message, received in this state. */
  message: (m: Message) => Promise<Step>;
  /** Receiving in this state failed (closed, timed out, aborted); by default the session fails. */
  channelFailed?: (e: Error) => Promise<Step>;
}

type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;
type Hasher = Awaited<ReturnType<typeof xxhash>>;

const MAX_MISMATCH_LISTED = 16;
/** Pages read and hashed at a time; also the size of the scratch buffer pages pass through. */
const CHUNK_PAGES = 1024;

class Session {
  private state: SessionState = 'HELLO';
  private sessionId: string | undefined;
  private store: PageStore | null = null;
  /** With --restore: the process state received after the final round. */
  private received: ReceivedState | null = null;
  private restored: RestoredProcess | null = null;
  private restoreMs = 0;
  private stateMatches = true;
  /** Incremental verification (Hello.verify): the hash of each page as written. */
  private written: PageHashes | null = null;
  private digestDiffers = false;
  private round = 0;
  private roundPages = 0;
  private frozenAt = 0;
  private finalAppliedMs = 0;
  /** From the session's start to the verdict on the checksums (the manifest's timings.totalMs). */
  private verdictAtMs = 0;
  private readonly rounds: Array<{ round: number; pages: number; final: boolean }> = [];
  private readonly checked = { pages: 0, mismatched: 0, first: [] as number[] };
  private checkedBitmap: Uint8Array | null = null;
  private imagePath: string | undefined;
  private readonly timeout: number;
  private readonly scratch = Buffer.allocUnsafe(CHUNK_PAGES * PAGE_SIZE);
  /** The extra connections pages arrive on (`--streams`); null: the session's own only. */
  private streams: DataStreams | null = null;
  /** Stream 0: the session's own connection. */
  private readonly ownLane: Lane;
  /** Waits (`until`) woken by a round's start, a batch applied, or a stream's failure. */
  private wakers: Array<() => void> = [];
  /** A data stream failed while pages were still to come on it: the session fails with this. */
  private streamFailure: Error | null = null;

  /** The diagram above, one entry per state. */
  private readonly states: Record<SessionState, StateHandler> = {
    HELLO: { message: (m) => this.inHello(m) },
    IDLE: { message: (m) => this.inIdle(m) },
    ROUND: { message: (m) => this.inRound(m) },
    FROZEN: { message: (m) => this.inFrozen(m) },
    // FINAL takes what ROUND takes; its RoundEnd leads to CHECKSUMS instead of IDLE.
    FINAL: { message: (m) => this.inRound(m) },
    CHECKSUMS: { message: (m) => this.inChecksums(m) },
    VERIFIED: { message: (m) => this.inVerified(m), channelFailed: () => this.noCommit() },
    // With --restore, between VERIFIED and DONE: the process is rebuilt and held stopped; it
    // runs when the source says its own copy is gone (Release).
    RESTORE: { enter: () => this.restoreProcess(), message: (m) => this.outOfOrder(m) },
    HELD: {
      enter: () => this.answerCommitted(),
      message: (m) => this.inHeld(m),
      channelFailed: async () => this.leftHeld(),
    },
    DONE: {
      enter: () => this.answerCommitted(),
      // The source closes once it has read Committed. Anything else (a message, a timeout, a
      // broken connection) leaves our answer in doubt: it may come back with a Query.
      message: async () => this.handedOver(false),
      channelFailed: async (e) => this.handedOver(e instanceof ChannelClosedError && e.peerEnded),
    },
  };

  constructor(
    private readonly channel: MessageChannel,
    private readonly opts: SessionOptions,
    private readonly hasher: Hasher,
    private readonly startedAt: number,
  ) {
    this.timeout = opts.replyTimeoutMs ?? 120_000;
    this.ownLane = { stream: 0, channel, seq: -1 };
  }

  async run(): Promise<SessionOutcome> {
    try {
      for (;;) {
        const from = this.state;
        const end = await this.follow(await this.receiveIn(this.states[from]), from);
        if (end) return end;
      }
    } catch (e) {
      return this.fail(this.streamFailure ?? (e as Error & { code?: string }));
    } finally {
      if (this.sessionId && this.streams) this.opts.joiners?.delete(this.sessionId);
      this.streams?.close();
    }
  }

  /**
   * Takes the step a handler named in state `from`: an outcome ends the session; another state is
   * entered, and its `enter` may move on at once. Staying in `from` enters nothing.
   */
  private async follow(step: Step, from: SessionState): Promise<SessionOutcome | undefined> {
    while (typeof step === 'string') {
      this.state = step;
      if (step === from) return undefined;
      const next = await this.states[step].enter?.();
      if (!next) return undefined;
      [from, step] = [step, next];
    }
    return step;
  }

  /** Waits for the next message and hands it, or the channel's failure, to the state's handler. */
  private async receiveIn(handler: StateHandler): Promise<Step> {
    let m: Message;
    try {
      if (this.streamFailure) throw this.streamFailure; // a data stream failed while this loop was busy
      m = await this.channel.next(this.timeout);
    } catch (e) {
      if (!handler.channelFailed) throw e;
      return handler.channelFailed(e as Error);
    }
    return handler.message(m);
  }

  // ── HELLO ────────────────────────────────────────────────────────────────────────────────

  private async inHello(m: Message): Promise<Step> {
    if (m.type === MessageType.Query) return this.answerQuery(m);
    if (m.type === MessageType.Release || m.type === MessageType.Discard) return this.answerResolve(m);
    if (m.type !== MessageType.Hello) return this.outOfOrder(m);
    const { opts } = this;
    if (opts.queriesOnly) refuse('E_BUSY', 'this destination took its one migration (--once) and answers only queries now');
    this.sessionId = m.header.sessionId;
    if (m.header.pageSize !== PAGE_SIZE) refuse('E_PAGE_SIZE', `page size ${m.header.pageSize} is not supported (only ${PAGE_SIZE})`);
    if (m.header.verify === 'incremental') this.written = new PageHashes(DEST_UNSET);
    if (opts.restore) {
      this.store = prepareRestore(m.header.restore, opts.imageDir, m.header.sessionId, opts.maxImageBytes, m.header.layout);
    } else {
      this.store = new ImageStore(opts.imageDir, m.header.sessionId, opts.maxImageBytes);
      this.store.applyLayout(m.header.layout);
    }
    const { pages } = this.store;
    opts.log.info({ session: this.sessionId, pages, segments: this.store.segments().length, policy: m.header.policy }, 'migration started');
    if (opts.delayHelloAckMs) await new Promise((r) => setTimeout(r, opts.delayHelloAckMs));
    const streams = this.openStreams(m.header.streams ?? 1);
    await this.channel.send(
      helloAck({
        version: PROTOCOL_VERSION,
        sessionId: m.header.sessionId,
        credit: opts.credit,
        maxFrameBytes: 0,
        restore: !!opts.restore,
        ...(streams ? { streams: streams.count, streamToken: streams.token } : {}),
      }),
    );
    return 'IDLE';
  }

  /**
   * Takes extra connections for this session when its source asks for them (Hello.streams), at
   * most `--max-streams` in all; returns them, or null for the session's own connection only.
   */
  private openStreams(asked: number): DataStreams | null {
    const count = Math.min(asked, this.opts.maxStreams ?? MAX_STREAMS);
    if (count <= 1 || !this.opts.joiners || !this.sessionId) return null;
    const streams = new DataStreams(
      count,
      this.sessionId,
      this.opts.credit,
      async (b, lane) => {
        await this.applyPages(b, lane);
      },
      (e) => this.streamFailed(e),
    );
    this.opts.joiners.set(this.sessionId, (ch, j) => streams.join(ch, j));
    this.streams = streams;
    return streams;
  }

  /**
   * A data stream failed. While pages may still come (up to the final round's RoundEnd) the
   * session fails with it: whatever waits is woken to see it. Afterwards it does not matter.
   */
  private streamFailed(e: Error): void {
    if (!['HELLO', 'IDLE', 'ROUND', 'FROZEN', 'FINAL'].includes(this.state) || this.streamFailure) return;
    this.streamFailure = e;
    this.wake();
    this.channel.interrupt(e);
  }

  /** Wakes every `until`. */
  private wake(): void {
    for (const w of this.wakers.splice(0)) w();
  }

  /**
   * Waits until `done()` holds (checked each time a round starts or a batch is applied), at
   * most the session's timeout; throws a failed stream's error, or `late()` on the timeout.
   */
  private async until(done: () => boolean, late: () => Error): Promise<void> {
    const deadline = performance.now() + this.timeout;
    while (!done()) {
      if (this.streamFailure) throw this.streamFailure;
      const left = deadline - performance.now();
      if (left <= 0) throw late();
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wakers.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.streamFailure) throw this.streamFailure;
  }

  /**
   * The Query path: a source that lost our answer to Commit asks what became of its session. The
   * answer must be final: a pending image is discarded here, so a late Commit cannot revive it.
   */
  private async answerQuery(m: MessageOf<MessageType.Query>): Promise<SessionOutcome> {
    const { pending, imageDir, log } = this.opts;
    const id = m.header.sessionId;
    const status = pending.get(id);
    const final = fs.existsSync(path.join(imageDir, id, 'manifest.json'));
    if (status === 'pending') pending.set(id, 'discarded');
    const isCommitted = final && status !== 'pending';
    const held = isCommitted ? readRecord(path.join(imageDir, id)) : null;
    if (isCommitted) await this.channel.send(committed({ sessionId: id, ...(held ? { restoredPid: held.pid } : {}) }));
    else await this.channel.send(abort({ code: 'E_NOT_COMMITTED', reason: `session ${id} was not made final here` }));
    log.info({ session: id, committed: isCommitted }, 'answered a query');
    this.channel.close();
    return { verified: false };
  }

  // ── IDLE, FROZEN: between rounds ─────────────────────────────────────────────────────────

  private async inIdle(m: Message): Promise<Step> {
    if (m.type === MessageType.RoundStart) return this.startRound(m);
    if (m.type === MessageType.StopAndCopy) return this.freeze(m);
    return this.outOfOrder(m);
  }

  private async inFrozen(m: Message): Promise<Step> {
    if (m.type === MessageType.RoundStart) return this.startRound(m);
    return this.outOfOrder(m);
  }

  private freeze(m: MessageOf<MessageType.StopAndCopy>): SessionState {
    if (m.header.round !== this.round + 1) refuse('E_ORDER', `StopAndCopy for round ${m.header.round} after round ${this.round}`);
    this.frozenAt = performance.now();
    this.opts.log.info({ session: this.sessionId, round: m.header.round }, 'the source froze the process: stop-and-copy');
    if (this.opts.dieAtStopAndCopy) process.exit(137);
    return 'FROZEN';
  }

  private startRound(m: MessageOf<MessageType.RoundStart>): SessionState {
    const { round, final, layout } = m.header;
    if (round !== this.round + 1) refuse('E_ORDER', `round ${round} follows round ${this.round}`);
    if (final !== (this.state === 'FROZEN')) refuse('E_ORDER', `a final round must follow StopAndCopy`);
    if (layout) this.store!.applyLayout(layout);
    this.round = round;
    this.roundPages = 0;
    this.state = final ? 'FINAL' : 'ROUND';
    this.wake(); // batches of this round that came first on other streams
    return this.state;
  }

  // ── ROUND, FINAL: pages flow ─────────────────────────────────────────────────────────────

  private async inRound(m: Message): Promise<Step> {
    if (m.type === MessageType.PageBatch) return this.applyPages(m);
    if (m.type === MessageType.RoundEnd) return this.endRound(m);
    return this.outOfOrder(m);
  }

  /**
   * A batch, from the session's own connection or a data stream (`lane`). A stream's batch may
   * come before its round's RoundStart has been read here: it waits for it. Seqs rise on each
   * stream; BatchAck goes back on the batch's own connection.
   */
  private async applyPages(m: MessageOf<MessageType.PageBatch>, lane = this.ownLane): Promise<SessionState> {
    if (lane !== this.ownLane) {
      await this.until(
        () => this.round >= m.header.round,
        () =>
          new SessionProtocolError('E_ORDER', `a PageBatch of round ${m.header.round} on stream ${lane.stream}, but no such round started`),
      );
    }
    if (m.header.round !== this.round || (this.state !== 'ROUND' && this.state !== 'FINAL'))
      refuse('E_ORDER', `PageBatch of round ${m.header.round} during round ${this.round} (${this.state})`);
    if (m.header.seq <= lane.seq) refuse('E_ORDER', `PageBatch seq ${m.header.seq} after ${lane.seq}`);
    lane.seq = m.header.seq;
    if (this.opts.corruptInTransit && this.state === 'FINAL') this.damageInTransit(m);
    const written = this.written;
    this.roundPages += applyBatch(
      this.store!,
      m,
      this.scratch,
      written ? (p, page) => written.set(p, this.hasher.h64Raw(page)) : undefined,
    );
    this.wake(); // a RoundEnd may wait for this round's last pages
    await lane.channel.send(batchAck({ seq: m.header.seq, credit: 1 }));
    return this.state;
  }

  private async endRound(m: MessageOf<MessageType.RoundEnd>): Promise<SessionState> {
    const { round } = this;
    const final = this.state === 'FINAL';
    if (m.header.round !== round) refuse('E_ORDER', `RoundEnd of round ${m.header.round} during round ${round}`);
    // With data streams the round's last batches may still be on their way on the others.
    if (this.streams) {
      await this.until(
        () => this.roundPages >= m.header.pagesSent,
        () => new SessionProtocolError('E_COUNT', `round ${round} announced ${m.header.pagesSent} pages but ${this.roundPages} arrived`),
      );
    }
    const { roundPages } = this;
    if (m.header.pagesSent !== roundPages)
      refuse('E_COUNT', `round ${round} announced ${m.header.pagesSent} pages but ${roundPages} arrived`);
    this.rounds.push({ round, pages: roundPages, final });
    if (final) this.endFinalRound();
    // The round is over once counted: a RoundAck that cannot be sent fails in the next state.
    this.state = final ? 'CHECKSUMS' : 'IDLE';
    await this.channel.send(roundAck({ round, pagesApplied: roundPages }));
    return this.state;
  }

  /** The image is complete (downtime ends here): prepare the checksums' comparison. */
  private endFinalRound(): void {
    const store = this.store!;
    this.finalAppliedMs = performance.now() - this.frozenAt;
    for (let i = 0; i < (this.opts.corruptPages ?? 0); i++) {
      const segs = store.segments();
      const s = segs[i % segs.length];
      store.corruptPage(s.indexBase + Math.floor(s.pages / 2));
    }
    this.checkedBitmap = new Uint8Array(store.segments().reduce((n, s) => Math.max(n, s.indexBase + s.pages), 0));
  }

  // ── CHECKSUMS ────────────────────────────────────────────────────────────────────────────

  private async inChecksums(m: Message): Promise<Step> {
    if (m.type === MessageType.ProcessState && this.opts.restore && !this.received && this.checked.pages === 0) {
      this.received = receiveState(m.header.state, m.payload, (b) => this.hasher.h64Raw(b), this.opts.restore);
      return 'CHECKSUMS';
    }
    if (m.type === MessageType.Digest && this.written) return this.compareDigest(m);
    if (m.type !== MessageType.Checksums) return this.outOfOrder(m);
    if (this.opts.restore && this.checked.pages === 0) {
      // The state's hash rides on the first Checksums: it is verified as the pages are.
      if (!this.received) refuse('E_ORDER', 'Checksums before the process state (a restore needs it)');
      this.stateMatches = m.header.stateHash === this.received!.hash;
    }
    this.compareChecksums(m);
    if (this.checked.pages !== this.store!.pages) return 'CHECKSUMS';
    this.verdictAtMs = performance.now() - this.startedAt;
    return this.checked.mismatched === 0 && this.stateMatches ? this.answerVerified() : this.answerMismatch();
  }

  /** Incremental verification: the digest of the pages as written against the source's as sent. */
  private async compareDigest(m: MessageOf<MessageType.Digest>): Promise<Step> {
    const store = this.store!;
    if (this.opts.restore) {
      if (!this.received) refuse('E_ORDER', 'the Digest before the process state (a restore needs it)');
      this.stateMatches = m.header.stateHash === this.received!.hash;
    }
    const mine = this.written!.digest(store.segments(), (b) => this.hasher.h64Raw(b));
    this.verdictAtMs = performance.now() - this.startedAt;
    this.checked.pages = mine.pages;
    const same = mine.pages === m.header.pages && mine.digest === m.header.digest;
    if (!same) this.digestDiffers = true;
    return same && this.stateMatches ? this.answerVerified() : this.answerMismatch();
  }

  /**
   * Fault injection (--test-corrupt-in-transit): one byte of a raw page of the final round flipped
   * on its way in (a page of an earlier round might be sent again, and the damage undone).
   */
  private damageInTransit(m: MessageOf<MessageType.PageBatch>): void {
    const raw = m.header.kinds.indexOf(PAGE_KIND.RAW);
    if (raw < 0) return;
    let off = 0;
    for (let k = 0, li = 0; k < raw; k++) if (m.header.kinds[k] !== PAGE_KIND.ZERO) off += m.header.lengths[li++];
    for (const part of m.payload) {
      if (off + 123 < part.length) {
        part[off + 123] ^= 0xff;
        break;
      }
      off -= part.length;
    }
    this.opts.corruptInTransit! -= 1;
  }

  /** Hashes the pages a Checksums message covers and counts those that differ. */
  private compareChecksums(m: MessageOf<MessageType.Checksums>): void {
    const store = this.store!;
    const bitmap = this.checkedBitmap!;
    const { checked, scratch } = this;
    const { firstPage, count } = m.header;
    const seg = store.segmentOf(firstPage);
    if (!seg || firstPage + count > seg.indexBase + seg.pages)
      refuse('E_RANGE', `checksums for pages ${firstPage}..${firstPage + count - 1} outside the layout`);
    const want = m.payload;
    for (let done = 0; done < count; done += CHUNK_PAGES) {
      const n = Math.min(CHUNK_PAGES, count - done);
      store.readPages(firstPage + done, n, scratch);
      for (let i = 0; i < n; i++) {
        const p = firstPage + done + i;
        if (bitmap[p]) refuse('E_RANGE', `page ${p} has two checksums`);
        bitmap[p] = 1;
        const h = this.hasher.h64Raw(scratch.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
        checked.pages++;
        if (h !== want.readBigUInt64LE((done + i) * 8)) {
          checked.mismatched++;
          if (checked.first.length < MAX_MISMATCH_LISTED) checked.first.push(p);
        }
      }
    }
  }

  /** Verified, but not final: the image becomes final only when the source commits the handover. */
  private async answerVerified(): Promise<SessionState> {
    const { pages } = this.checked;
    await this.channel.send(verified({ pages }));
    this.opts.log.info({ session: this.sessionId, pages }, 'migration verified; waiting for the handover');
    this.opts.pending.set(this.sessionId!, 'pending');
    return 'VERIFIED';
  }

  private async answerMismatch(): Promise<SessionOutcome> {
    const { sessionId } = this;
    const { mismatched, first } = this.checked;
    const state = !this.stateMatches;
    const digest = this.digestDiffers;
    await this.channel.send(mismatch({ mismatched, firstPages: first, ...(state ? { state } : {}), ...(digest ? { digest } : {}) }));
    this.store!.discard({
      sessionId,
      verified: false,
      reason: state ? 'the process state differs' : 'checksum mismatch',
      mismatched,
      firstPages: first,
    });
    this.opts.log.error({ session: sessionId, mismatched, first, stateDiffers: state }, 'checksum mismatch');
    this.channel.close();
    return { verified: false, sessionId, mismatched, error: 'checksum mismatch' };
  }

  // ── VERIFIED: waiting for Commit ─────────────────────────────────────────────────────────

  private async inVerified(m: Message): Promise<Step> {
    const id = this.sessionId!;
    // Until Commit arrives, a Query on another connection may have settled the session.
    if (m.type !== MessageType.Commit || m.header.sessionId !== id || this.opts.pending.get(id) !== 'pending') return this.noCommit();
    if (this.opts.restore) return 'RESTORE';
    this.imagePath = this.store!.commit({
      sessionId: id,
      verified: true,
      pages: this.checked.pages,
      pageSize: PAGE_SIZE,
      checksum: 'xxh64 per page',
      rounds: this.rounds,
      timings: { totalMs: this.verdictAtMs, finalRoundAppliedMs: this.finalAppliedMs },
      finishedAt: new Date().toISOString(),
    });
    this.opts.pending.set(id, 'committed');
    this.opts.log.info({ session: id, pages: this.checked.pages, imagePath: this.imagePath }, 'migration committed');
    return 'DONE';
  }

  // ── RESTORE, HELD: the process is rebuilt, and runs on Release ──────────────────────────

  /** Rebuilds the process in the husk; on success the image becomes final with it (HELD). */
  private async restoreProcess(): Promise<Step> {
    const id = this.sessionId!;
    const image = this.store as HuskImage;
    const t = performance.now();
    this.restored = runRestore(image, this.received!, this.opts.restore!, this.opts.log);
    this.restoreMs = performance.now() - t;
    this.imagePath = image.commit({
      sessionId: id,
      verified: true,
      pages: this.checked.pages,
      pageSize: PAGE_SIZE,
      checksum: 'xxh64 per page, and of the process state',
      rounds: this.rounds,
      restoredPid: this.restored.pid,
      ...(this.restored.notes.length > 0 ? { restoreNotes: this.restored.notes } : {}),
      timings: { totalMs: this.verdictAtMs, finalRoundAppliedMs: this.finalAppliedMs, restoreMs: this.restoreMs },
      finishedAt: new Date().toISOString(),
    });
    this.opts.pending.set(id, 'committed');
    this.opts.log.info(
      { session: id, pid: this.restored.pid, restoreMs: this.restoreMs },
      'process restored; held stopped until the source releases it',
    );
    for (const note of this.restored.notes) this.opts.log.warn({ session: id, pid: this.restored.pid }, `restored, but: ${note}`);
    return 'HELD';
  }

  private async inHeld(m: Message): Promise<Step> {
    if (m.type !== MessageType.Release && m.type !== MessageType.Discard) return this.leftHeld();
    if (m.header.sessionId !== this.sessionId) refuse('E_UNEXPECTED', `Release of another session (${m.header.sessionId})`);
    const answer = this.resolve(m.type === MessageType.Release);
    await this.channel.send(resolved({ sessionId: this.sessionId!, ...answer })).catch(() => {});
    return this.handedOver(true, answer.running);
  }

  /** Release or Discard of this session's held process, here or on a later connection. */
  private resolve(run: boolean): { running: boolean; pid: number; reason: string } {
    const answer = resolveHeld(path.join(this.opts.imageDir, this.sessionId!), run, this.opts.restore ?? {});
    this.opts.log.info({ session: this.sessionId, ...answer }, run ? 'released the restored process' : 'discarded the restored process');
    if (answer.running) process.stdout.write(`forecopy-dest: session ${this.sessionId} runs as pid ${answer.pid}\n`);
    return answer;
  }

  /** The source went away while we hold the process: it stays stopped until resolved. */
  private leftHeld(): SessionOutcome {
    this.opts.log.warn(
      { session: this.sessionId, pid: this.restored?.pid },
      'the source left before releasing the restored process: it stays stopped until forecopy-source resolve',
    );
    return this.handedOver(false, false);
  }

  /** Release or Discard on a connection of its own (forecopy-source resolve, or a retry). */
  private async answerResolve(m: MessageOf<MessageType.Release> | MessageOf<MessageType.Discard>): Promise<SessionOutcome> {
    this.sessionId = m.header.sessionId;
    const answer = this.resolve(m.type === MessageType.Release);
    await this.channel.send(resolved({ sessionId: m.header.sessionId, ...answer }));
    this.channel.close();
    return { verified: false, restoredPid: answer.pid, running: answer.running };
  }

  /** Anything but this session's Commit, or no message at all: the image is not made final. */
  private async noCommit(): Promise<never> {
    this.opts.pending.set(this.sessionId!, 'discarded');
    throw new SessionProtocolError('E_NO_COMMIT', 'the source did not commit the handover');
  }

  // ── DONE: the image is final ─────────────────────────────────────────────────────────────

  /** On entering DONE: answer Committed (unless a test drops the answer, as a lost one). */
  private async answerCommitted(): Promise<Step | undefined> {
    // A dropped answer: with a held process, the source hears nothing (it times out and asks on
    // a new connection) while this one stays open, as on a link that went dead.
    if (this.opts.dropCommitted) return this.restored ? undefined : this.handedOver(false);
    if (this.opts.dieWhenCommitted) process.kill(process.pid, 'SIGKILL');
    const restored = this.restored ? { restoredPid: this.restored.pid, restoreMs: this.restoreMs } : {};
    await this.channel.send(committed({ sessionId: this.sessionId!, ...restored })).catch(() => {});
  }

  /** The end of a handover; `heard`: the source closed after our answer, so it has read it. */
  private handedOver(heard: boolean, running?: boolean): SessionOutcome {
    this.channel.close();
    const restored = this.restored ? { restoredPid: this.restored.pid, running: !!running } : {};
    return {
      verified: true,
      sessionId: this.sessionId,
      imagePath: this.imagePath,
      pages: this.checked.pages,
      answerMayBeLost: !heard,
      ...restored,
    };
  }

  // ── failures ─────────────────────────────────────────────────────────────────────────────

  /** A message the current state does not take: E_ORDER for a migration's own, else E_UNEXPECTED. */
  private outOfOrder(m: Message): never {
    switch (m.type) {
      case MessageType.Hello:
        throw new SessionProtocolError('E_ORDER', 'a second Hello in one session');
      case MessageType.Query:
        throw new SessionProtocolError('E_ORDER', 'Query must open a connection');
      case MessageType.StopAndCopy:
      case MessageType.RoundStart:
      case MessageType.PageBatch:
      case MessageType.RoundEnd:
      case MessageType.Checksums:
        throw new SessionProtocolError('E_ORDER', `${MessageType[m.type]} in state ${this.state}`);
      default:
        throw new SessionProtocolError('E_UNEXPECTED', `unexpected ${MessageType[m.type] ?? m.type} in state ${this.state}`);
    }
  }

  /** Ends a failed session: log, discard the partial image, answer Abort if the source still listens. */
  private async fail(e: Error & { code?: string }): Promise<SessionOutcome> {
    const { sessionId, state, channel } = this;
    const err = DiskFullError.isDiskFull(e) ? new DiskFullError(this.opts.imageDir, { cause: e }) : e;
    const code = failureCode(err);
    this.opts.log.error({ session: sessionId, code, err: err.message, state }, 'migration failed');
    this.store?.discard({ sessionId, verified: false, reason: err.message, code, state });
    if (!channel.closed) {
      await channel.send(abort({ code, reason: err.message })).catch(() => {});
    }
    channel.close();
    return { verified: false, sessionId, error: err.message };
  }
}

function refuse(code: SessionProtocolCode, message: string): never {
  throw new SessionProtocolError(code, message);
}
