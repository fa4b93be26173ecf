import fc from 'fast-check';
import { Packr, Unpackr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import {
  FrameDecoder,
  PAGE_KIND,
  ProtocolError,
  RangeTable,
  MessageType,
  batchAck,
  checksums,
  committed,
  encodeMessage,
  hello,
  helloAck,
  pageBatch,
  processState,
  release,
  resolved,
  roundStart,
  type Message,
} from '../src/index.js';
import { SESSION, helloHeader } from './helpers.js';

/**
 * The decoder against malformed input: truncated, corrupted, reordered, oversized and random
 * frames. Every outcome must be messages or a ProtocolError (a typed error with a code): never
 * another exception, never a hang, and the decoder's buffer stays within one frame.
 */
const valid: Message[] = [
  hello({
    ...helloHeader,
    totalPages: 8,
    layout: [{ id: 1, start: 4096, pages: 8, prot: 'rw-p', offset: 0, name: 'x', migrated: true, indexBase: 0 }],
  }),
  roundStart({ round: 1, final: false, plannedPages: 2 }),
  pageBatch(
    { round: 1, seq: 0, ranges: RangeTable.fromSortedPages([0, 1]), kinds: Buffer.from([PAGE_KIND.ZERO, PAGE_KIND.RAW]), lengths: [4096] },
    Buffer.alloc(4096, 3),
  ),
  batchAck({ seq: 0, credit: 1 }),
  // The restore's messages and optional fields.
  hello({
    ...helloHeader,
    totalPages: 8,
    layout: [],
    restore: { exe: '/bin/app', vmas: [{ start: 4096, end: 8192, perms: 'r-xp', path: '/bin/app' }], files: [], vdso: null },
  }),
  helloAck({ version: 1, sessionId: SESSION, credit: 8, maxFrameBytes: 0, restore: true }),
  processState(
    { state: { pid: 7, regs: Buffer.alloc(16, 1), contents: [{ addr: 2 ** 40, pages: 1 }], rlimits: [[-1, -1]] } },
    Buffer.alloc(4096, 5),
  ),
  checksums({ algorithm: 'xxh64', firstPage: 0, count: 2, stateHash: '0123456789abcdef' }, Buffer.alloc(16, 9)),
  committed({ sessionId: SESSION, restoredPid: 4242, restoreMs: 3.5 }),
  release({ sessionId: SESSION }),
  resolved({ sessionId: SESSION, running: true, pid: 4242, reason: 'released' }),
];
const frames = valid.map((m) => Buffer.concat(encodeMessage(m)));

/** Feeds the chunks; returns how many messages were decoded, or null for a ProtocolError. */
function feed(chunks: Buffer[]): number | null {
  const d = new FrameDecoder({ maxFrameBytes: 64 * 1024 });
  let n = 0;
  try {
    for (const c of chunks) n += d.push(c).length;
    d.end();
    return n;
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
    expect(e.code).toMatch(/^E_[A-Z_]+$/);
    return null;
  }
}

const RUNS = 25_000; // x 5 properties = 125,000 inputs

describe('decoder fuzz (fast-check)', () => {
  it('random bytes', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 6 }), (parts) => void feed(parts.map((p) => Buffer.from(p)))),
      { numRuns: RUNS, seed: 1 },
    );
  });

  it('valid frames with bytes flipped, truncated, split anywhere', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...frames),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }),
        fc.nat(),
        fc.nat(),
        (f, flips, cut, split) => {
          const b = Buffer.from(f);
          for (const [at, v] of flips) b[at % b.length] = v;
          const t = b.subarray(0, b.length - (cut % 4 === 0 ? cut % b.length : 0));
          const s = split % (t.length + 1);
          feed([t.subarray(0, s), t.subarray(s)]);
        },
      ),
      { numRuns: RUNS, seed: 2 },
    );
  });

  it('frames in any order and number, and oversized lengths', () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...frames), { maxLength: 10 }),
        fc.option(fc.integer({ min: 0, max: 0xffffffff })),
        (fs, big) => {
          const parts = [...fs];
          if (big !== null) {
            const h = Buffer.alloc(4);
            h.writeUInt32BE(big);
            parts.push(h);
          }
          feed([Buffer.concat(parts)]);
        },
      ),
      { numRuns: RUNS, seed: 3 },
    );
  });

  it('headers with arbitrary fields', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 255 }),
        fc.object({ maxDepth: 2 }),
        fc.uint8Array({ maxLength: 64 }),
        (type, header, payload) => {
          const h = new Packr({ useRecords: false }).pack(header);
          const b = Buffer.alloc(9 + h.length + payload.length);
          b.writeUInt32BE(5 + h.length + payload.length, 0);
          b.writeUInt8(type, 4);
          b.writeUInt32BE(h.length, 5);
          h.copy(b, 9);
          Buffer.from(payload).copy(b, 9 + h.length);
          feed([b]);
        },
      ),
      { numRuns: RUNS, seed: 4 },
    );
  });

  // Random types rarely hit a known one with a header close to valid: here a valid header of a
  // known type has some of its fields replaced, removed or added, each with any value.
  it('valid headers with fields replaced by anything', () => {
    const bases = valid.map((m) => ({
      type: m.type,
      header: new Unpackr({ useRecords: false, mapsAsObjects: true }).unpack(encodeMessage(m)[0].subarray(9)) as Record<string, unknown>,
      payload: m.type === MessageType.PageBatch ? Buffer.concat(m.payload) : m.payload,
    }));
    const names = [
      ...new Set(bases.flatMap((b) => Object.keys(b.header))),
      'restore',
      'stateHash',
      'restoredPid',
      'restoreMs',
      'state',
      'running',
    ];
    const seen = { accepted: 0, refused: 0 };
    const anyValue = fc.oneof(
      fc.anything({ maxDepth: 2 }),
      fc.uint8Array({ maxLength: 16 }),
      fc.integer(),
      fc.double(),
      fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEF'), minLength: 15, maxLength: 33 }),
    );
    fc.assert(
      fc.property(
        fc.constantFrom(...bases),
        fc.array(fc.tuple(fc.constantFrom(...names), fc.option(anyValue)), { maxLength: 4 }),
        fc.option(fc.uint8Array({ maxLength: 32 })),
        fc.constantFrom(...Object.values(MessageType).filter((v): v is number => typeof v === 'number')),
        fc.boolean(),
        (base, edits, payload, otherType, retype) => {
          const header = { ...base.header };
          for (const [k, v] of edits) {
            if (v === null) delete header[k];
            else header[k] = v;
          }
          const h = new Packr({ useRecords: false }).pack(header);
          const p = payload === null ? (base.payload ?? Buffer.alloc(0)) : Buffer.from(payload);
          const b = Buffer.alloc(9 + h.length + p.length);
          b.writeUInt32BE(5 + h.length + p.length, 0);
          b.writeUInt8(retype ? otherType : base.type, 4);
          b.writeUInt32BE(h.length, 5);
          h.copy(b, 9);
          p.copy(b, 9 + h.length);
          if (feed([b]) === null) seen.refused++;
          else seen.accepted++;
        },
      ),
      { numRuns: RUNS, seed: 5 },
    );
    // Both outcomes are exercised, not only the refusal of a header mangled beyond recognition.
    expect(seen.accepted).toBeGreaterThan(RUNS / 20);
    expect(seen.refused).toBeGreaterThan(RUNS / 20);
  });
});
