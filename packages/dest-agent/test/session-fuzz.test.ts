import fc from 'fast-check';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Duplex } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import {
  MessageChannel,
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
import { runSession } from '../src/session.js';

/**
 * The destination's session state machine against random message sequences (valid messages in
 * any order, with fields that may contradict the layout), over an in-memory stream. Every run
 * must end (no hang) in an outcome, never an exception; nothing may be written outside the image
 * dir, and no partial image may stay behind.
 */
function pipePair(): [Duplex, Duplex] {
  let a: Duplex;
  let b: Duplex;
  const mk = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  a = mk(() => b);
  b = mk(() => a);
  return [a, b];
}

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

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-session-fuzz-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
const log = pino({ level: 'silent' });

describe('destination session fuzz (fast-check)', () => {
  it('random message sequences end in an outcome, with nothing left behind', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(msg, { minLength: 1, maxLength: 12 }), fc.boolean(), async (msgs, endEarly) => {
        const dir = path.join(root, String(n++));
        fs.mkdirSync(dir);
        const [ours, theirs] = pipePair();
        const channel = new MessageChannel(theirs);
        const done = runSession(channel, {
          imageDir: dir,
          credit: 64,
          maxImageBytes: 1 << 20,
          log,
          replyTimeoutMs: 300,
          pending: new Map(),
        });
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
