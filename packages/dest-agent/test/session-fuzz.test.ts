import fc from 'fast-check';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  PAGE_KIND,
  RangeTable,
  checksums,
  hello,
  pageBatch,
  roundEnd,
  roundStart,
  stopAndCopy,
  encodeMessage,
  type Message,
} from '@forecopy/protocol';
import { imageDirs, startSession } from './harness.js';

/**
 * The destination's session state machine against random message sequences (valid messages in
 * any order, with fields that may contradict the layout), over an in-memory stream. Every run
 * must end (no hang) in an outcome, never an exception; nothing may be written outside the image
 * dir, and no partial image may stay behind.
 */
const SESSION = 'fedcba98765432100123456789abcdef';
const layout = [
  { id: 1, start: 0x10000, pages: 4, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 },
  { id: 2, start: 0x90000, pages: 2, prot: 'rw-p', offset: 0, name: '[heap]', migrated: true, indexBase: 4 },
];

const page = fc.integer({ min: 0, max: 9 });
const msg: fc.Arbitrary<Message> = fc.oneof(
  fc.constant(hello({ magic: 'FCPY', version: 1, sessionId: SESSION, pageSize: 4096, totalPages: 6, policy: 'precopy', layout })),
  fc.record({ round: fc.integer({ min: 1, max: 4 }), final: fc.boolean(), plannedPages: fc.nat(10) }).map((h) => roundStart(h)),
  fc
    .record({
      round: fc.integer({ min: 1, max: 4 }),
      seq: fc.nat(20),
      pages: fc.uniqueArray(page, { minLength: 1, maxLength: 4 }),
      kind: fc.constantFrom(PAGE_KIND.ZERO, PAGE_KIND.RAW),
    })
    .map(({ round, seq, pages, kind }) => {
      const sorted = [...pages].sort((x, y) => x - y);
      const raw = kind === PAGE_KIND.RAW;
      return pageBatch(
        {
          round,
          seq,
          ranges: RangeTable.fromSortedPages(sorted),
          kinds: Buffer.alloc(sorted.length, kind),
          lengths: raw ? sorted.map(() => 4096) : [],
        },
        raw ? Buffer.alloc(4096 * sorted.length, 5) : Buffer.alloc(0),
      );
    }),
  fc.record({ round: fc.integer({ min: 1, max: 4 }), pagesSent: fc.nat(10), batches: fc.nat(3) }).map((h) => roundEnd(h)),
  fc.integer({ min: 1, max: 4 }).map((round) => stopAndCopy({ round })),
  fc
    .record({ firstPage: page, count: fc.integer({ min: 1, max: 6 }) })
    .map(({ firstPage, count }) => checksums({ algorithm: 'xxh64', firstPage, count }, Buffer.alloc(count * 8))),
);

const nextImageDir = imageDirs('forecopy-session-fuzz-');

describe('destination session fuzz (fast-check)', () => {
  it('random message sequences end in an outcome, with nothing left behind', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(msg, { minLength: 1, maxLength: 12 }), fc.boolean(), async (msgs, endEarly) => {
        const dir = nextImageDir();
        const { stream: ours, outcome: done } = startSession({ imageDir: dir, credit: 64, replyTimeoutMs: 300 });
        for (const m of msgs) for (const b of encodeMessage(m)) ours.write(b);
        if (endEarly) ours.end();
        const outcome = await done;
        ours.destroy();
        expect(typeof outcome.verified).toBe('boolean');
        // Only this session's files, inside its dir; no partial image left.
        for (const f of fs.readdirSync(dir)) expect(f).toMatch(/^[0-9a-f]{32}(\.failed\.json)?$/);
        expect(fs.readdirSync(dir).some((f) => f.endsWith('.partial'))).toBe(false);
      }),
      { numRuns: 1000, seed: 5 },
    );
  }, 120_000);
});
