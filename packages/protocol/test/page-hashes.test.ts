import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  BadHeaderError,
  BadPayloadError,
  DEST_UNSET,
  FrameDecoder,
  MessageType,
  PageHashes,
  SOURCE_UNSET,
  encodeMessage,
  type Message,
} from '../src/index.js';

// Any 64-bit hash serves the digest's logic; the agents use xxh64.
const h64 = (b: Uint8Array) => createHash('sha256').update(b).digest().readBigUInt64LE(0);

describe('PageHashes: the digest of incremental verification', () => {
  const segs = [
    { indexBase: 10, pages: 3 },
    { indexBase: 0, pages: 4 },
  ];

  function filled(unset: bigint, skip: number[] = []): PageHashes {
    const h = new PageHashes(unset);
    for (const s of segs) for (let p = s.indexBase; p < s.indexBase + s.pages; p++) if (!skip.includes(p)) h.set(p, BigInt(1000 + p));
    return h;
  }

  it('gives both sides the same digest when every live page was handled with the same hash', () => {
    const a = filled(SOURCE_UNSET).digest(segs, h64);
    const b = filled(DEST_UNSET).digest([...segs].reverse(), h64);
    expect(a).toEqual(b);
    expect(a.pages).toBe(7);
  });

  it('differs when one page differs, when a page was never written, and when a page was never sent', () => {
    const src = filled(SOURCE_UNSET).digest(segs, h64);
    const changed = filled(DEST_UNSET);
    changed.set(11, 7n);
    expect(changed.digest(segs, h64).digest).not.toBe(src.digest);
    expect(filled(DEST_UNSET, [2]).digest(segs, h64).digest).not.toBe(src.digest);
    // never sent and never written: each side's own unset value, so still different
    expect(filled(DEST_UNSET, [12]).digest(segs, h64).digest).not.toBe(filled(SOURCE_UNSET, [12]).digest(segs, h64).digest);
  });

  it('covers only live segments, and a page sent again counts with its last hash', () => {
    const a = filled(SOURCE_UNSET);
    a.set(50, 99n); // a dead index (a retired segment): not in the digest
    a.set(3, 5n);
    a.set(3, 1003n); // sent again: the last hash counts
    expect(a.digest(segs, h64)).toEqual(filled(DEST_UNSET).digest(segs, h64));
  });

  it('grows past its first size', () => {
    const h = new PageHashes(SOURCE_UNSET, 4);
    h.set(100_000, 42n);
    expect(h.get(100_000)).toBe(42n);
    expect(h.get(99_999)).toBe(SOURCE_UNSET);
  });
});

describe('Digest on the wire', () => {
  it('refuses a digest that is not 16 hex digits, an unknown algorithm and a stray payload, by name', () => {
    const decode = (header: Record<string, unknown>, payload?: Buffer) =>
      new FrameDecoder().push(Buffer.concat(encodeMessage({ type: MessageType.Digest, header, payload } as unknown as Message)));
    const ok = { algorithm: 'xxh64-of-page-hashes', pages: 3, digest: '0123456789abcdef' };
    expect(decode(ok)[0].header).toEqual(ok);
    expect(() => decode({ ...ok, digest: '0123' })).toThrow(BadHeaderError);
    expect(() => decode({ ...ok, digest: '0123456789ABCDEF' })).toThrow(/digest must be 16 lower-case hex characters/);
    expect(() => decode({ ...ok, algorithm: 'md5' })).toThrow(/digest algorithm md5 is not supported/);
    expect(() => decode({ ...ok, stateHash: 42 })).toThrow(BadHeaderError);
    expect(() => decode(ok, Buffer.from('x'))).toThrow(BadPayloadError);
  });
});
