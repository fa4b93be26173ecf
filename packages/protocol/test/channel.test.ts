import { describe, expect, it } from 'vitest';
import {
  ChannelClosedError,
  ChannelTimeoutError,
  FrameTruncatedError,
  MessageChannel,
  MessageType,
  PeerAbortError,
  UnexpectedMessageError,
  abort,
  encodeMessage,
  roundAck,
  verified,
} from '../src/index.js';
import { pipePair } from './pipe-pair.js';

/** The channel's failures, each a typed error a caller can tell apart without reading its text. */
const failure = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: Error) => e,
  );

describe('MessageChannel failures', () => {
  it('a peer that ends between frames: queued messages first, then ChannelClosedError with peerEnded', async () => {
    const [peer, ours] = pipePair();
    const ch = new MessageChannel(ours);
    for (const b of encodeMessage(verified({ pages: 2 }))) peer.write(b);
    peer.end();
    expect((await ch.next(1000)).type).toBe(MessageType.Verified);
    const e = await failure(ch.next(1000));
    expect(e).toBeInstanceOf(ChannelClosedError);
    expect(e).toMatchObject({ code: 'E_CHANNEL_CLOSED', peerEnded: true });
    expect(ch.closed).toBe(true);
    await expect(ch.send(roundAck({ round: 1, pagesApplied: 0 }))).rejects.toBe(e);
  });

  it('a peer that ends inside a frame: FrameTruncatedError, not an orderly close', async () => {
    const [peer, ours] = pipePair();
    const ch = new MessageChannel(ours);
    const frame = Buffer.concat(encodeMessage(verified({ pages: 2 })));
    peer.write(frame.subarray(0, frame.length - 1));
    peer.end();
    expect(await failure(ch.next(1000))).toBeInstanceOf(FrameTruncatedError);
  });

  it('a connection that breaks is a ChannelClosedError without peerEnded', async () => {
    const [, ours] = pipePair();
    const ch = new MessageChannel(ours);
    const pending = failure(ch.next(1000));
    ours.destroy(new Error('read ECONNRESET'));
    const e = await pending;
    expect(e).toBeInstanceOf(ChannelClosedError);
    expect(e).toMatchObject({ code: 'E_CHANNEL_CLOSED', peerEnded: false });
    expect((e as Error).cause).toBeInstanceOf(Error);
  });

  it('silence is a ChannelTimeoutError', async () => {
    const [, ours] = pipePair();
    const ch = new MessageChannel(ours);
    const e = await failure(ch.next(20));
    expect(e).toBeInstanceOf(ChannelTimeoutError);
    expect(e).toMatchObject({ code: 'E_CHANNEL_TIMEOUT' });
    expect(ch.closed).toBe(false); // a timeout does not end the channel
  });

  it("the peer's Abort is a PeerAbortError; another message than expected an UnexpectedMessageError", async () => {
    const [peer, ours] = pipePair();
    const ch = new MessageChannel(ours);
    for (const b of encodeMessage(verified({ pages: 1 }))) peer.write(b);
    const unexpected = await failure(ch.expect(MessageType.RoundAck, 1000));
    expect(unexpected).toBeInstanceOf(UnexpectedMessageError);
    expect(unexpected).toMatchObject({ code: 'E_UNEXPECTED_MESSAGE' });
    for (const b of encodeMessage(abort({ code: 'E_ORDER', reason: 'RoundEnd in state IDLE' }))) peer.write(b);
    const aborted = await failure(ch.next(1000));
    expect(aborted).toBeInstanceOf(PeerAbortError);
    expect(aborted).toMatchObject({ code: 'E_PEER_ABORT', peerCode: 'E_ORDER', reason: 'RoundEnd in state IDLE' });
  });
});

describe('MessageChannel: looking before taking', () => {
  it('peek shows the first message without taking it, waits for one, and is null on silence or failure', async () => {
    const [peer, ours] = pipePair();
    const ch = new MessageChannel(ours);
    expect(await ch.peek(50)).toBeNull(); // silence
    const later = ch.peek(2000);
    for (const b of encodeMessage(verified({ pages: 3 }))) peer.write(b);
    expect((await later)?.type).toBe(MessageType.Verified);
    expect((await ch.peek(10))?.type).toBe(MessageType.Verified); // still there
    expect((await ch.next(10)).type).toBe(MessageType.Verified); // taken now
    const waiting = ch.peek(2000);
    peer.end();
    expect(await waiting).toBeNull();
  });

  it('interrupt fails the waiting next with its error and leaves the channel open', async () => {
    const [peer, ours] = pipePair();
    const ch = new MessageChannel(ours);
    const waiting = ch.next(2000);
    const why = new Error('a data stream failed');
    ch.interrupt(why);
    await expect(waiting).rejects.toBe(why);
    expect(ch.closed).toBe(false);
    await ch.send(verified({ pages: 1 })); // still writable: the answer goes out
    const rx = new MessageChannel(peer);
    expect((await rx.next(1000)).type).toBe(MessageType.Verified);
  });
});
