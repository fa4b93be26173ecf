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
  commit,
  hello,
  pageBatch,
  query,
  roundEnd,
  roundStart,
  stopAndCopy,
  type Message,
} from '@forecopy/protocol';
import type { PendingSessions, SessionOptions } from '../src/session.js';
import { imageDirs, startSession } from './harness.js';

/**
 * The end of a migration, destination side: Verified, then the handover (Commit, Committed, the
 * source closing), and the Query a source sends when it lost the answer. A scripted source talks
 * to `runSession` over an in-memory stream.
 */
const SESSION = '00112233445566778899aabbccddeeff';
const layout = [{ id: 7, start: 0x40000, pages: 3, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 }];
const fills = [1, 2, 3];
const nextImageDir = imageDirs('forecopy-handshake-');
const hasher = await xxhash();

/** A session in a new image dir (unless `extra` names another), with the test as its source. */
function start(extra: Partial<SessionOptions> = {}, pending: PendingSessions = new Map()) {
  const imageDir = nextImageDir();
  const { stream, outcome } = startSession({ imageDir, pending, ...extra });
  return { source: new MessageChannel(stream), end: () => stream.end(), outcome, imageDir, pending };
}

/** A whole pre-copy (one live round, an empty final round) up to the destination's verdict. */
async function migrateToVerdict(source: MessageChannel): Promise<Message> {
  await source.send(hello({ magic: 'FCPY', version: 1, sessionId: SESSION, pageSize: 4096, totalPages: 3, policy: 'precopy', layout }));
  await source.expect(MessageType.HelloAck, 2000);
  await source.send(roundStart({ round: 1, final: false, plannedPages: 3 }));
  const pages = Buffer.concat(fills.map((f) => Buffer.alloc(4096, f)));
  await source.send(
    pageBatch(
      {
        round: 1,
        seq: 0,
        ranges: RangeTable.fromSortedPages([0, 1, 2]),
        kinds: Buffer.alloc(3, PAGE_KIND.RAW),
        lengths: [4096, 4096, 4096],
      },
      pages,
    ),
  );
  await source.expect(MessageType.BatchAck, 2000);
  await source.send(roundEnd({ round: 1, pagesSent: 3, batches: 1 }));
  await source.expect(MessageType.RoundAck, 2000);
  await source.send(stopAndCopy({ round: 2 }));
  await source.send(roundStart({ round: 2, final: true, plannedPages: 0 }));
  await source.send(roundEnd({ round: 2, pagesSent: 0, batches: 0 }));
  await source.expect(MessageType.RoundAck, 2000);
  const sums = Buffer.alloc(3 * 8);
  fills.forEach((f, i) => {
    sums.writeBigUInt64LE(hasher.h64Raw(Buffer.alloc(4096, f)), i * 8);
  });
  await source.send(checksums({ algorithm: 'xxh64', firstPage: 0, count: 3 }, sums));
  return source.next(2000);
}

const finalImage = (dir: string) => fs.existsSync(path.join(dir, SESSION, 'manifest.json'));
const failedNote = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, `${SESSION}.failed.json`), 'utf8'));

describe('destination session: verification and handover', () => {
  it('Verified, then Commit makes the image final, answered Committed; the source closing confirms it heard', async () => {
    const s = start();
    expect((await migrateToVerdict(s.source)).type).toBe(MessageType.Verified);
    expect(s.pending.get(SESSION)).toBe('pending');
    expect(finalImage(s.imageDir)).toBe(false); // verified is not final
    await s.source.send(commit({ sessionId: SESSION }));
    expect(await s.source.next(2000)).toMatchObject({ type: MessageType.Committed, header: { sessionId: SESSION } });
    s.end();
    expect(await s.outcome).toEqual({
      verified: true,
      sessionId: SESSION,
      imagePath: path.join(s.imageDir, SESSION),
      pages: 3,
      answerMayBeLost: false,
    });
    expect(s.pending.get(SESSION)).toBe('committed');
    const manifest = JSON.parse(fs.readFileSync(path.join(s.imageDir, SESSION, 'manifest.json'), 'utf8'));
    expect(manifest).toMatchObject({
      sessionId: SESSION,
      verified: true,
      pages: 3,
      rounds: [
        { round: 1, pages: 3, final: false },
        { round: 2, pages: 0, final: true },
      ],
    });
  });

  it('a source that stays silent after Committed may not have heard it: the answer may be lost', async () => {
    const s = start({ replyTimeoutMs: 300 });
    await migrateToVerdict(s.source);
    await s.source.send(commit({ sessionId: SESSION }));
    expect((await s.source.next(2000)).type).toBe(MessageType.Committed);
    expect(await s.outcome).toMatchObject({ verified: true, answerMayBeLost: true });
    expect(finalImage(s.imageDir)).toBe(true);
  });

  it('a lost Committed (fault injection): committed, not answered, the answer may be lost', async () => {
    const s = start({ dropCommitted: true });
    await migrateToVerdict(s.source);
    await s.source.send(commit({ sessionId: SESSION }));
    expect(await s.outcome).toMatchObject({ verified: true, answerMayBeLost: true });
    expect(finalImage(s.imageDir)).toBe(true);
    expect(
      await s.source.next(2000).then(
        () => 'a message',
        (e: Error) => e.name,
      ),
    ).toBe('ChannelClosedError');
  });

  it('anything but Commit after Verified discards the image (E_NO_COMMIT)', async () => {
    const s = start();
    await migrateToVerdict(s.source);
    await s.source.send(roundStart({ round: 3, final: false, plannedPages: 0 }));
    const e = await s.source.next(2000).then(
      () => null,
      (err: PeerAbortError) => err,
    );
    expect(e).toBeInstanceOf(PeerAbortError);
    expect(e!.peerCode).toBe('E_NO_COMMIT');
    expect(await s.outcome).toMatchObject({ verified: false, error: 'the source did not commit the handover' });
    expect(s.pending.get(SESSION)).toBe('discarded');
    expect(finalImage(s.imageDir)).toBe(false);
    expect(failedNote(s.imageDir)).toMatchObject({ code: 'E_NO_COMMIT', state: 'VERIFIED' });
  });

  it('a Query before Commit settles the session as discarded: the late Commit cannot revive it', async () => {
    const s = start();
    await migrateToVerdict(s.source);
    const q = start({ imageDir: s.imageDir }, s.pending);
    await q.source.send(query({ sessionId: SESSION }));
    const answer = await q.source.next(2000).then(
      () => null,
      (err: PeerAbortError) => err,
    );
    expect(answer).toMatchObject({ peerCode: 'E_NOT_COMMITTED' });
    expect(await q.outcome).toEqual({ verified: false });
    await s.source.send(commit({ sessionId: SESSION }));
    expect(
      await s.source.next(2000).then(
        () => null,
        (err: PeerAbortError) => err.peerCode,
      ),
    ).toBe('E_NO_COMMIT');
    expect(await s.outcome).toMatchObject({ verified: false });
    expect(finalImage(s.imageDir)).toBe(false);
  });

  it('a Query after the handover is answered Committed', async () => {
    const s = start();
    await migrateToVerdict(s.source);
    await s.source.send(commit({ sessionId: SESSION }));
    await s.source.next(2000);
    s.end();
    await s.outcome;
    const q = start({ imageDir: s.imageDir }, s.pending);
    await q.source.send(query({ sessionId: SESSION }));
    expect(await q.source.next(2000)).toMatchObject({ type: MessageType.Committed, header: { sessionId: SESSION } });
  });

  it('a page that differs is answered Mismatch and nothing is kept but the note', async () => {
    const s = start({ corruptPages: 1 });
    expect(await migrateToVerdict(s.source)).toMatchObject({ type: MessageType.Mismatch, header: { mismatched: 1, firstPages: [1] } });
    expect(await s.outcome).toEqual({ verified: false, sessionId: SESSION, mismatched: 1, error: 'checksum mismatch' });
    expect(fs.readdirSync(s.imageDir)).toEqual([`${SESSION}.failed.json`]);
    expect(failedNote(s.imageDir)).toMatchObject({ reason: 'checksum mismatch', mismatched: 1, firstPages: [1] });
  });
});
