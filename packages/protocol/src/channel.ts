import type { Duplex } from 'node:stream';
import { ChannelClosedError, ChannelTimeoutError, PeerAbortError, UnexpectedMessageError } from './errors.js';
import { encodeMessage, FrameDecoder } from './frame.js';
import { MessageType, type Message } from './messages.js';

type Waiter = { resolve: (m: Message) => void; reject: (e: Error) => void };

export interface ChannelOptions {
  maxFrameBytes?: number;
  maxQueued?: number;
  /** A write that cannot be handed to the socket for this long fails (0 = wait forever). */
  sendTimeoutMs?: number;
}

/**
 * A message channel over one stream socket (TCP or TLS): frames out through `send`, frames in
 * through `next`/`expect`, with backpressure both ways. Messages of the types given to
 * `onMessage` bypass the queue (the source uses it for BatchAck, which arrives while it sends).
 *
 * The queue of received messages is bounded by the peer's flow control (credit), not here: a
 * peer that floods messages nobody asked for fills at most `maxQueued` before the channel fails.
 *
 * Its errors (ChannelClosedError, ChannelTimeoutError, UnexpectedMessageError, PeerAbortError)
 * live in errors.ts with the package's others. The channel keeps the first error it meets: the
 * pending `next` calls reject with it, later ones too once the queue is empty, and `send` throws it.
 */
export class MessageChannel {
  private readonly decoder: FrameDecoder;
  private readonly queue: Message[] = [];
  private readonly waiters: Waiter[] = [];
  /** Called when a message is queued or the channel fails (`peek`). */
  private peekers: Array<() => void> = [];
  private readonly handlers = new Map<MessageType, (m: Message) => void>();
  private error: Error | null = null;
  private readonly maxQueued: number;
  private readonly sendTimeoutMs: number;
  /** Bytes written to the socket (frames, all of them). */
  bytesOut = 0;
  bytesIn = 0;

  constructor(
    readonly socket: Duplex,
    opts: ChannelOptions = {},
  ) {
    this.decoder = new FrameDecoder(opts.maxFrameBytes !== undefined ? { maxFrameBytes: opts.maxFrameBytes } : {});
    this.maxQueued = opts.maxQueued ?? 4096;
    this.sendTimeoutMs = opts.sendTimeoutMs ?? 0;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('end', () => {
      try {
        this.decoder.end(); // throws FrameTruncatedError if the peer ended inside a frame
        this.fail(new ChannelClosedError('the peer closed the connection', { peerEnded: true }));
      } catch (e) {
        this.fail(e as Error);
      }
    });
    socket.on('close', () => this.fail(new ChannelClosedError('the connection closed')));
    socket.on('error', (e: Error) => this.fail(new ChannelClosedError(`connection error: ${e.message}`, { cause: e })));
  }

  get closed(): boolean {
    return this.error !== null;
  }

  /** Routes messages of `type` to `fn` instead of the queue. */
  onMessage(type: MessageType, fn: (m: Message) => void): void {
    this.handlers.set(type, fn);
  }

  /**
   * Writes a message; resolves once the socket accepted it without exceeding its buffer. With
   * `gathered`, the payload goes as its `parts`, none copied, and `gathered.flushed` is called once
   * the socket has handed the last of them to the kernel (or failed): until then the caller must
   * not change them, since the socket may still hold them in its queue.
   */
  async send(msg: Message, gathered?: { parts: readonly Buffer[]; flushed: () => void }): Promise<void> {
    if (this.error) throw this.error;
    const bufs = encodeMessage(msg, gathered?.parts);
    let ok = true;
    this.socket.cork();
    for (let i = 0; i < bufs.length; i++) {
      this.bytesOut += bufs[i].length;
      ok = this.socket.write(bufs[i], i === bufs.length - 1 && gathered ? () => gathered.flushed() : undefined);
    }
    this.socket.uncork();
    if (!ok) await this.drained();
  }

  /** The next queued message (any type), waiting up to `timeoutMs`. */
  next(timeoutMs = 0): Promise<Message> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.error) return Promise.reject(this.error);
    return new Promise<Message>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const w: Waiter = {
        resolve: (m) => {
          if (timer) clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(w);
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new ChannelTimeoutError(`no message from the peer within ${timeoutMs} ms`));
        }, timeoutMs);
      }
    });
  }

  /**
   * The next message without taking it (a later `next` returns it), or null when none came
   * within `timeoutMs` or the channel failed.
   */
  async peek(timeoutMs: number): Promise<Message | null> {
    if (this.queue.length === 0 && !this.error && this.waiters.length === 0) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, timeoutMs);
        function done() {
          clearTimeout(t);
          resolve();
        }
        this.peekers.push(done);
      });
    }
    return this.queue[0] ?? null;
  }

  /**
   * Fails the calls waiting in `next` with `e`, leaving the connection open (the caller still
   * answers on it): how work elsewhere stops a session that waits for this peer.
   */
  interrupt(e: Error): void {
    for (const w of this.waiters.splice(0)) w.reject(e);
  }

  /** The next message, which must be of `type`; an Abort becomes a PeerAbortError. */
  async expect<T extends Message['type']>(type: T, timeoutMs = 0): Promise<Extract<Message, { type: T }>> {
    const m = await this.next(timeoutMs);
    if (m.type === type) return m as Extract<Message, { type: T }>;
    if (m.type === MessageType.Abort) throw new PeerAbortError(m.header.code, m.header.reason);
    throw new UnexpectedMessageError(`expected ${MessageType[type]}, received ${MessageType[m.type] ?? m.type}`, m);
  }

  /** Ends the socket (after pending writes). */
  close(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  private drained(): Promise<void> {
    return new Promise((resolve, reject) => {
      // A peer (or a network) that stops reading must not hang us: give up after the timeout.
      const timer =
        this.sendTimeoutMs > 0
          ? setTimeout(() => {
              cleanup();
              const e = new ChannelTimeoutError(`the peer took no data for ${this.sendTimeoutMs} ms`);
              this.fail(e);
              this.socket.destroy();
              reject(e);
            }, this.sendTimeoutMs)
          : null;
      const onDrain = () => {
        cleanup();
        resolve();
      };
      const onClose = () => {
        cleanup();
        reject(this.error ?? new ChannelClosedError('the connection closed while sending'));
      };
      const cleanup = () => {
        if (timer) clearTimeout(timer);
        this.socket.off('drain', onDrain);
        this.socket.off('close', onClose);
      };
      this.socket.on('drain', onDrain);
      this.socket.on('close', onClose);
    });
  }

  private onData(chunk: Buffer): void {
    if (this.error) return;
    this.bytesIn += chunk.length;
    let msgs: Message[];
    try {
      msgs = this.decoder.push(chunk);
    } catch (e) {
      this.fail(e as Error);
      this.socket.destroy();
      return;
    }
    for (const m of msgs) {
      if (m.type === MessageType.Abort && !this.handlers.has(MessageType.Abort)) {
        // The peer gave up: every pending and future call fails with its reason.
        this.fail(new PeerAbortError(m.header.code, m.header.reason));
        return;
      }
      const h = this.handlers.get(m.type);
      if (h) {
        h(m);
        continue;
      }
      const w = this.waiters.shift();
      if (w) w.resolve(m);
      else if (this.queue.length >= this.maxQueued) {
        this.fail(new ChannelClosedError(`the peer sent more than ${this.maxQueued} unanswered messages`));
        this.socket.destroy();
        return;
      } else this.queue.push(m);
    }
    if (this.queue.length > 0) this.wakePeekers();
  }

  private wakePeekers(): void {
    for (const p of this.peekers.splice(0)) p();
  }

  private fail(e: Error): void {
    if (this.error) return;
    this.error = e;
    for (const w of this.waiters.splice(0)) w.reject(e);
    this.wakePeekers();
  }
}
