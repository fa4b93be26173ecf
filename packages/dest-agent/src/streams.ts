import { randomBytes } from 'node:crypto';
import { type Message, type MessageChannel, MessageType, PROTOCOL_VERSION, abort, helloAck } from '@forecopy/protocol';
import { SessionProtocolError } from './errors.js';
import type { PageBatchMessage } from './apply-batch.js';

export type StreamJoinMessage = Extract<Message, { type: MessageType.StreamJoin }>;

/** Running sessions that take extra connections, by session id (the listener's, shared). */
export type StreamJoiners = Map<string, (channel: MessageChannel, m: StreamJoinMessage) => Promise<void>>;

/** One data stream: its connection and the last batch seq it carried (seqs rise on each stream). */
export interface Lane {
  stream: number;
  channel: MessageChannel;
  seq: number;
}

/**
 * The extra connections of one migration (`--streams N`, as QEMU's multifd channels): streams
 * 1..N-1 carry PageBatch frames only; stream 0 is the session's own connection, which carries
 * everything else. Each joins with the session id and the token HelloAck gave, and gets its own
 * credit. A batch goes to `onBatch` (the session applies it, in its round); a stream that fails
 * goes to `onFailure`, which decides whether pages were still to come on it.
 */
export class DataStreams {
  /** The secret each StreamJoin must name (HelloAck.streamToken). */
  readonly token = randomBytes(16).toString('hex');
  private readonly lanes = new Map<number, Lane>();
  private closed = false;

  constructor(
    /** Streams in all, the session's own connection included. */
    readonly count: number,
    private readonly sessionId: string,
    private readonly credit: number,
    private readonly onBatch: (m: PageBatchMessage, lane: Lane) => Promise<void>,
    private readonly onFailure: (e: Error) => void,
  ) {}

  /** Serves a joining connection until it closes: answers HelloAck with its credit, then applies its batches. */
  async join(channel: MessageChannel, m: StreamJoinMessage): Promise<void> {
    const { stream, token } = m.header;
    const why =
      token !== this.token
        ? 'the stream token is not this session'
        : stream >= this.count
          ? `stream ${stream} of a session of ${this.count}`
          : this.lanes.has(stream)
            ? `stream ${stream} joined twice`
            : this.closed
              ? 'the session has ended'
              : null;
    if (why) {
      await channel.send(abort({ code: 'E_STREAM', reason: why })).catch(() => {});
      channel.close();
      return;
    }
    const lane: Lane = { stream, channel, seq: -1 };
    this.lanes.set(stream, lane);
    try {
      await channel.send(helloAck({ version: PROTOCOL_VERSION, sessionId: this.sessionId, credit: this.credit, maxFrameBytes: 0 }));
      for (;;) {
        const b = await channel.next();
        if (b.type !== MessageType.PageBatch) {
          throw new SessionProtocolError(
            'E_UNEXPECTED',
            `${MessageType[b.type] ?? b.type} on data stream ${stream}: it carries page batches only`,
          );
        }
        await this.onBatch(b, lane);
      }
    } catch (e) {
      if (this.closed) return;
      const err =
        e instanceof SessionProtocolError
          ? e
          : new SessionProtocolError('E_STREAM', `data stream ${stream} failed: ${(e as Error).message}`);
      this.onFailure(err);
    }
  }

  /** Ends every stream (the session is over); their failures from now on are not the session's. */
  close(): void {
    this.closed = true;
    for (const { channel } of this.lanes.values()) {
      channel.socket.resume();
      channel.close();
      setTimeout(() => channel.destroy(), 2000).unref();
    }
  }
}
