import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  FrameDecoder,
  PAGE_KIND,
  ProtocolError,
  RangeTable,
  batchAck,
  encodeMessage,
  hello,
  pageBatch,
  roundStart,
  type Message,
} from '../src/index.js';

/**
 * The decoder against malformed input: truncated, corrupted, reordered, oversized and random
 * frames. Every outcome must be messages or a ProtocolError (a typed error with a code): never
 * another exception, never a hang, and the decoder's buffer stays within one frame.
 */
const valid: Message[] = [
  hello({ magic: 'FCPY', version: 1, sessionId: '0123456789abcdef0123456789abcdef', pageSize: 4096, totalPages: 8, policy: 'precopy', layout: [{ id: 1, start: 4096, pages: 8, prot: 'rw-p', offset: 0, name: 'x', migrated: true, indexBase: 0 }] }),
  roundStart({ round: 1, final: false, plannedPages: 2 }),
  pageBatch({ round: 1, seq: 0, ranges: RangeTable.fromSortedPages([0, 1]), kinds: Buffer.from([PAGE_KIND.ZERO, PAGE_KIND.RAW]), lengths: [4096] }, Buffer.alloc(4096, 3)),
  batchAck({ seq: 0, credit: 1 }),
];
const frames = valid.map((m) => Buffer.concat(encodeMessage(m)));

function feed(chunks: Buffer[]): void {
  const d = new FrameDecoder({ maxFrameBytes: 64 * 1024 });
  try {
    for (const c of chunks) d.push(c);
    d.end();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    expect(e.code).toMatch(/^E_[A-Z_]+$/);
  }
}

const RUNS = 25_000; // x 4 properties = 100,000 inputs

describe('decoder fuzz (fast-check)', () => {
  it('random bytes', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }), (parts) => feed(parts.map((p) => Buffer.from(p)))), { numRuns: RUNS, seed: 1 });
  });

  it('valid frames with bytes flipped, truncated, split anywhere', () => {
    fc.assert(
      fc.property(fc.constantFrom(...frames), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat(), fc.nat(), (f, flips, cut, split) => {
        const b = Buffer.from(f);
        for (const [at, v] of flips) b[at % b.length] = v;
        const t = b.subarray(0, b.length - (cut % 4 === 0 ? cut % b.length : 0));
        const s = split % (t.length + 1);
        feed([t.subarray(0, s), t.subarray(s)]);
      }),
      { numRuns: RUNS, seed: 2 },
    );
  });

  it('frames in any order and number, and oversized lengths', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...frames), { maxLength: 10 }), fc.option(fc.integer({ min: 0, max: 0xffffffff })), (fs, big) => {
        const parts = [...fs];
        if (big !== null) {
          const h = Buffer.alloc(4);
          h.writeUInt32BE(big);
          parts.push(h);
        }
        feed([Buffer.concat(parts)]);
      }),
      { numRuns: RUNS, seed: 3 },
    );
  });

  it('headers with arbitrary fields', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 255 }), fc.object({ maxDepth: 2 }), fc.uint8Array({ maxLength: 64 }), (type, header, payload) => {
        const h = new Packr({ useRecords: false }).pack(header);
        const b = Buffer.alloc(9 + h.length + payload.length);
        b.writeUInt32BE(5 + h.length + payload.length, 0);
        b.writeUInt8(type, 4);
        b.writeUInt32BE(h.length, 5);
        h.copy(b, 9);
        Buffer.from(payload).copy(b, 9 + h.length);
        feed([b]);
      }),
      { numRuns: RUNS, seed: 4 },
    );
  });
});
