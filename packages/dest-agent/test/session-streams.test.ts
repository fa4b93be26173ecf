import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import xxhash from 'xxhash-wasm';
import {
  MessageChannel,
  MessageType,
  PAGE_KIND,
  PeerAbortError,
  RangeTable,
  checksums,
  hello,
  pageBatch,
  roundEnd,
  roundStart,
  stopAndCopy,
  streamJoin,
  type Message,
} from '@forecopy/protocol';
import { pipePair } from '../../protocol/test/pipe-pair.js';
import type { StreamJoiners } from '../src/session.js';
import { imageDirs, startSession } from './harness.js';

/**
 * Several connections for one migration (`--streams`): the session's own connection carries the
 * rounds, extra ones carry page batches. The ordering rules stay exact: a batch that overtakes
 * its round's RoundStart waits for it, a RoundEnd waits for its round's batches on every stream,
 * and a page's latest copy wins. A scripted source talks to `runSession` over in-memory streams.
 */
const SESSION = '00112233445566778899aabbccddeeff';
const layout = [{ id: 7, start: 0x40000, pages: 4, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 }];
const nextImageDir = imageDirs('forecopy-streams-');
const hasher = await xxhash();

/** A batch of raw pages, each filled with one byte. */
function batch(round: number, seq: number, pages: number[], fill: number[]): Message {
  return pageBatch(
    {
      round,
      seq,
      ranges: RangeTable.fromSortedPages(pages),
      kinds: Buffer.alloc(pages.length, PAGE_KIND.RAW),
      lengths: pages.map(() => 4096),
    },
    Buffer.concat(fill.map((f) => Buffer.alloc(4096, f))),
  );
}

/** A session that takes up to `maxStreams` connections; Hello asks for `asked`; returns the source's channel and the HelloAck. */
async function start(asked: number, maxStreams = 16) {
  const imageDir = nextImageDir();
  const joiners: StreamJoiners = new Map();
  const { stream, outcome } = startSession({ imageDir, joiners, maxStreams });
  const source = new MessageChannel(stream);
  await source.send(
    hello({ magic: 'FCPY', version: 1, sessionId: SESSION, pageSize: 4096, totalPages: 4, policy: 'precopy', layout, streams: asked }),
  );
  const ack = await source.expect(MessageType.HelloAck, 2000);
  /** Opens extra stream `n` with `token`; its channel, source side. */
  const join = (n: number, token = ack.header.streamToken!) => {
    const [src, dst] = pipePair();
    const fn = joiners.get(SESSION);
    if (!fn) throw new Error('the session takes no streams');
    void fn(new MessageChannel(dst), streamJoin({ sessionId: SESSION, token, stream: n }) as never);
    return new MessageChannel(src);
  };
  return { source, ack, join, outcome, imageDir, joiners, end: () => stream.end() };
}

describe('destination session: several streams', () => {
  it('takes extra streams, applies their batches in their rounds, and verifies', async () => {
    const s = await start(3);
    expect(s.ack.header.streams).toBe(3);
    expect(s.ack.header.streamToken).toMatch(/^[0-9a-f]{32}$/);
    const [a, b] = [s.join(1), s.join(2)];
    expect((await a.expect(MessageType.HelloAck, 2000)).header.credit).toBeGreaterThan(0);
    await b.expect(MessageType.HelloAck, 2000);

    // Round 1: a batch overtakes its RoundStart on stream 1, and RoundEnd comes before stream 2's batch.
    await a.send(batch(1, 0, [0, 1], [1, 1]));
    await s.source.send(roundStart({ round: 1, final: false, plannedPages: 4 }));
    await a.expect(MessageType.BatchAck, 2000);
    await s.source.send(roundEnd({ round: 1, pagesSent: 4, batches: 2 }));
    await new Promise((r) => setTimeout(r, 100));
    await b.send(batch(1, 1, [2, 3], [1, 1]));
    await b.expect(MessageType.BatchAck, 2000);
    expect((await s.source.expect(MessageType.RoundAck, 2000)).header.pagesApplied).toBe(4);

    // Round 2 rewrites page 1 on the other stream: the latest copy wins.
    await s.source.send(roundStart({ round: 2, final: false, plannedPages: 1 }));
    await b.send(batch(2, 2, [1], [2]));
    await s.source.send(roundEnd({ round: 2, pagesSent: 1, batches: 1 }));
    await s.source.expect(MessageType.RoundAck, 2000);

    // The final round on the session's own connection and a stream together.
    await s.source.send(stopAndCopy({ round: 3 }));
    await s.source.send(roundStart({ round: 3, final: true, plannedPages: 2 }));
    await a.send(batch(3, 3, [3], [3]));
    await s.source.send(batch(3, 4, [0], [3]));
    await s.source.expect(MessageType.BatchAck, 2000);
    await s.source.send(roundEnd({ round: 3, pagesSent: 2, batches: 2 }));
    await s.source.expect(MessageType.RoundAck, 2000);
    const want = [3, 2, 1, 3];
    const sums = Buffer.alloc(4 * 8);
    want.forEach((f, i) => {
      sums.writeBigUInt64LE(hasher.h64Raw(Buffer.alloc(4096, f)), i * 8);
    });
    await s.source.send(checksums({ algorithm: 'xxh64', firstPage: 0, count: 4 }, sums));
    expect((await s.source.next(2000)).type).toBe(MessageType.Verified);
    s.end();
    await s.outcome;
    expect(s.joiners.size).toBe(0); // the session no longer takes streams
  });

  it('accepts no more streams than --max-streams, and none when the source asks for one', async () => {
    expect((await start(8, 2)).ack.header.streams).toBe(2);
    const one = await start(1);
    expect(one.ack.header.streams).toBeUndefined();
    expect(one.joiners.size).toBe(0);
  });

  it('refuses a stream with another token, a number beyond the count, or one joined twice', async () => {
    const s = await start(2);
    await expect(s.join(1, 'f'.repeat(32)).next(2000)).rejects.toThrow(PeerAbortError);
    await expect(s.join(2).next(2000)).rejects.toThrow(/stream 2 of a session of 2/);
    await s.join(1).expect(MessageType.HelloAck, 2000);
    await expect(s.join(1).next(2000)).rejects.toThrow(/joined twice/);
  });

  it('a stream that closes while pages may still come fails the session: Abort E_STREAM, no image', async () => {
    const s = await start(2);
    const a = s.join(1);
    await a.expect(MessageType.HelloAck, 2000);
    await s.source.send(roundStart({ round: 1, final: false, plannedPages: 4 }));
    a.close(); // the stream's peer ends it, as a dead source's kernel would
    const answer = s.source.next(2000);
    await expect(answer).rejects.toThrow(PeerAbortError);
    await expect(answer).rejects.toMatchObject({ peerCode: 'E_STREAM' });
    const outcome = await s.outcome;
    expect(outcome.verified).toBe(false);
    expect(fs.readdirSync(s.imageDir)).toEqual([`${SESSION}.failed.json`]);
    expect(JSON.parse(fs.readFileSync(path.join(s.imageDir, `${SESSION}.failed.json`), 'utf8')).code).toBe('E_STREAM');
  });

  it('a stream carries page batches only', async () => {
    const s = await start(2);
    const a = s.join(1);
    await a.expect(MessageType.HelloAck, 2000);
    await a.send(roundStart({ round: 1, final: false, plannedPages: 0 }));
    await expect(s.source.next(2000)).rejects.toMatchObject({ peerCode: 'E_UNEXPECTED' });
  });
});
