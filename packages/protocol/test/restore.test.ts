import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  FRAME_PREFIX_BYTES,
  FrameDecoder,
  MessageType,
  ProtocolError,
  checksums,
  commit,
  committed,
  discard,
  encodeMessage,
  hello,
  helloAck,
  mismatch,
  packMap,
  processState,
  query,
  release,
  resolved,
  type Message,
} from '../src/index.js';
import { SESSION, helloHeader, wire } from './helpers.js';

/**
 * The messages of a restore at the destination: what the decoder refuses, by error class and
 * code, and packMap, whose determinism is what lets the destination hash a ProcessState as the
 * source hashed it (Checksums.stateHash).
 */

/** Encodes without the factories' types: the encoder does not validate, the decoder must. */
const raw = (type: MessageType, header: Record<string, unknown>, payload?: Buffer) => wire({ type, header, payload } as unknown as Message);
const decode = (b: Buffer) => {
  const d = new FrameDecoder();
  const out = d.push(b);
  d.end();
  return out;
};

function rejects(b: Buffer, name: string, code: string, mentions: RegExp): void {
  let err: unknown;
  try {
    decode(b);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${name}`).toBeInstanceOf(ProtocolError);
  expect(err).toMatchObject({ name, code });
  expect((err as Error).message).toMatch(mentions);
}
const badHeader = (b: Buffer, field: RegExp) => rejects(b, 'BadHeaderError', 'E_BAD_HEADER', field);

describe('restore messages: validation', () => {
  it('Checksums.stateHash must be 16 lower-case hex digits', () => {
    const sums = (stateHash: unknown) =>
      raw(MessageType.Checksums, { algorithm: 'xxh64', firstPage: 0, count: 1, stateHash }, Buffer.alloc(8));
    for (const h of [
      '0123456789ABCDEF',
      '0123456789abcde',
      '0123456789abcdef0',
      'g123456789abcdef',
      ' 123456789abcdef',
      '',
      0x0123456789abcd,
      null,
      true,
      Buffer.from('0123456789abcdef'),
    ]) {
      badHeader(sums(h), /stateHash/);
    }
    expect(decode(sums('0123456789abcdef'))[0].header).toMatchObject({ stateHash: '0123456789abcdef' });
    expect(decode(sums('ffffffffffffffff'))[0].header).toMatchObject({ stateHash: 'ffffffffffffffff' });
  });

  it('Committed.restoredPid must be a whole number from 0 to 2^31-1, restoreMs a number from 0', () => {
    for (const pid of [-1, -4242, 1.5, 4242.25, 2 ** 31, 2 ** 40, '4242', true, null, [4242]]) {
      badHeader(raw(MessageType.Committed, { sessionId: SESSION, restoredPid: pid }), /restoredPid/);
    }
    for (const ms of [-1, -0.5, Infinity, NaN, '12', null]) {
      badHeader(raw(MessageType.Committed, { sessionId: SESSION, restoredPid: 1, restoreMs: ms }), /restoreMs/);
    }
    expect(decode(raw(MessageType.Committed, { sessionId: SESSION, restoredPid: 2 ** 31 - 1, restoreMs: 0.25 }))[0].header).toEqual({
      sessionId: SESSION,
      restoredPid: 2 ** 31 - 1,
      restoreMs: 0.25,
    });
    badHeader(raw(MessageType.Committed, { sessionId: SESSION.toUpperCase(), restoredPid: 1 }), /sessionId/);
  });

  it('Resolved needs running (true or false), pid, reason and the session id', () => {
    const ok = { sessionId: SESSION, running: true, pid: 4242, reason: 'released' };
    const { running: _, ...withoutRunning } = ok;
    badHeader(raw(MessageType.Resolved, withoutRunning), /running/);
    for (const running of [1, 0, 'true', null]) badHeader(raw(MessageType.Resolved, { ...ok, running }), /running/);
    const { pid: __, ...withoutPid } = ok;
    badHeader(raw(MessageType.Resolved, withoutPid), /pid/);
    badHeader(raw(MessageType.Resolved, { ...ok, pid: -1 }), /pid/);
    badHeader(raw(MessageType.Resolved, { ...ok, pid: 1.5 }), /pid/);
    const { reason: ___, ...withoutReason } = ok;
    badHeader(raw(MessageType.Resolved, withoutReason), /reason/);
    badHeader(raw(MessageType.Resolved, { ...ok, sessionId: 'abc' }), /sessionId/);
    expect(decode(raw(MessageType.Resolved, { ...ok, running: false, pid: 0 }))[0].header).toEqual({ ...ok, running: false, pid: 0 });
  });

  it('ProcessState.state must be a map', () => {
    for (const state of [[], [1, 2], Buffer.from([1]), 'state', 42, null, true]) {
      badHeader(raw(MessageType.ProcessState, { state }, Buffer.alloc(4096)), /state/);
    }
    badHeader(raw(MessageType.ProcessState, {}, Buffer.alloc(4096)), /state/);
    // Any payload, an empty one included: the protocol does not tie it to the state (the destination does).
    expect(decode(raw(MessageType.ProcessState, { state: {} }, Buffer.alloc(0)))[0]).toMatchObject({
      type: MessageType.ProcessState,
      header: { state: {} },
    });
    expect(decode(raw(MessageType.ProcessState, { state: { a: 1 } }, Buffer.alloc(3)))[0].payload).toHaveLength(3);
  });

  it('Hello.restore must be a map, HelloAck.restore and Mismatch.state true or false', () => {
    for (const restore of [[], [{ exe: '/bin/app' }], Buffer.from('x'), 'yes', 1, null]) {
      badHeader(raw(MessageType.Hello, { ...helloHeader, restore }), /restore/);
    }
    expect(decode(wire(hello({ ...helloHeader, restore: { exe: '/bin/app' } })))[0].header).toMatchObject({ restore: { exe: '/bin/app' } });
    const ack = { version: 1, sessionId: SESSION, credit: 8, maxFrameBytes: 0 };
    for (const restore of [1, 'true', {}, null]) badHeader(raw(MessageType.HelloAck, { ...ack, restore }), /restore/);
    for (const state of [1, 'false', [], null]) badHeader(raw(MessageType.Mismatch, { mismatched: 0, firstPages: [], state }), /state/);
  });

  it('Commit, Committed, Query, Release, Discard and Resolved carry no payload and a well-formed session id', () => {
    const one = Buffer.alloc(1);
    const headers: Array<[MessageType, Record<string, unknown>]> = [
      [MessageType.Commit, { sessionId: SESSION }],
      [MessageType.Committed, { sessionId: SESSION, restoredPid: 4242 }],
      [MessageType.Query, { sessionId: SESSION }],
      [MessageType.Release, { sessionId: SESSION }],
      [MessageType.Discard, { sessionId: SESSION }],
      [MessageType.Resolved, { sessionId: SESSION, running: true, pid: 1, reason: '' }],
    ];
    for (const [type, h] of headers) {
      expect(decode(raw(type, h))[0]).toMatchObject({ type, header: h });
      rejects(raw(type, h, one), 'BadPayloadError', 'E_BAD_PAYLOAD', new RegExp(`${MessageType[type]} carries no payload`));
      badHeader(raw(type, { ...h, sessionId: `${SESSION}0` }), /sessionId/);
      badHeader(raw(type, { ...h, sessionId: undefined }), /sessionId/);
    }
    // Release and Discard keep their own type through the shared validation.
    expect(decode(wire(release({ sessionId: SESSION })))[0].type).toBe(MessageType.Release);
    expect(decode(wire(discard({ sessionId: SESSION })))[0].type).toBe(MessageType.Discard);
    expect(decode(wire(query({ sessionId: SESSION })))[0].type).toBe(MessageType.Query);
    expect(decode(wire(commit({ sessionId: SESSION })))[0].type).toBe(MessageType.Commit);
  });

  it('factories build what the decoder accepts', () => {
    for (const m of [
      checksums({ algorithm: 'xxh64', firstPage: 3, count: 1, stateHash: 'fedcba9876543210' }, Buffer.alloc(8)),
      committed({ sessionId: SESSION, restoredPid: 1, restoreMs: 3 }),
      helloAck({ version: 1, sessionId: SESSION, credit: 8, maxFrameBytes: 0, restore: true }),
      mismatch({ mismatched: 0, firstPages: [], state: true }),
      resolved({ sessionId: SESSION, running: false, pid: 0, reason: 'discarded' }),
      processState({ state: { pid: 1 } }, Buffer.alloc(4096)),
    ]) {
      expect(decode(wire(m))[0].type).toBe(m.type);
    }
  });
});

/** A state with what a real one holds: bytes, nested arrays, addresses above 2^32, negative numbers. */
function sampleState(): Record<string, unknown> {
  const backing = new Uint8Array(32).map((_, i) => i);
  return {
    pid: 4242,
    comm: 'app',
    umask: 0o022,
    rlimits: [
      [8 * 1024 * 1024, -1],
      [-1, -1],
      [1024, 524288],
    ],
    creds: { uid: [1000, 1000, 1000], gid: [1000, 1000, 1000], groups: [] },
    mm: { startBrk: 0x5555_5557_a000, brk: 0x5555_5559_b000, startStack: 0x7ffd_1234_5000, auxv: Buffer.from('2100000000000000', 'hex') },
    vmas: [
      { start: 0x7f00_0000_0000, end: 0x7fff_ffff_f000, perms: 'r-xp', offset: 2 ** 33, path: '/usr/lib/libc.so.6', growsDown: false },
    ],
    contents: [{ addr: 2 ** 47 - 4096, pages: 1 }],
    threads: [
      {
        tid: 4242,
        regs: Buffer.alloc(216, 0xcc),
        // A view into a bigger buffer, at an offset: only its own bytes count.
        sigmask: new Uint8Array(backing.buffer, 3, 8),
        altstack: { sp: 0, flags: 2, size: 0 },
        robustList: null,
        pending: [],
      },
    ],
    numbers: [
      0,
      1,
      -1,
      -32,
      -33,
      -128,
      -129,
      -32768,
      -32769,
      -(2 ** 31),
      -(2 ** 31) - 1,
      -(2 ** 40),
      2 ** 31,
      2 ** 32 - 1,
      2 ** 32,
      2 ** 32 + 1,
      2 ** 53 - 1,
      -(2 ** 53 - 1),
      0.5,
      -1.25,
    ],
    nested: [[], [[]], [1, [2, [3, [Buffer.from([4])]]]], { deeper: [{ x: -7 }] }],
    vdso: { size: 8192, sha256: 'ab'.repeat(32) },
    '10': 'a key that looks like an index',
  };
}

/** The destination's path: the state as it arrives in a ProcessState frame, decoded. */
function received(state: Record<string, unknown>): Record<string, unknown> {
  const [m] = decode(wire(processState({ state }, Buffer.alloc(4096))));
  if (m.type !== MessageType.ProcessState) throw new Error('not a ProcessState');
  return m.header.state;
}

describe('packMap', () => {
  it('packs the same map to the same bytes, every time', () => {
    const a = packMap(sampleState());
    const hexA = a.toString('hex');
    const b = packMap(sampleState());
    expect(b.toString('hex')).toBe(hexA);
    const s = sampleState();
    expect(packMap(s).toString('hex')).toBe(packMap(s).toString('hex'));
    // Later packs do not write over a buffer already returned (the source hashes it after sending).
    for (let i = 0; i < 200; i++) packMap({ i, filler: Buffer.alloc(8192, i) });
    expect(a.toString('hex')).toBe(hexA);
  });

  it('packs again what was decoded to the same bytes: bytes, nested arrays, numbers above 2^32, negative numbers', () => {
    const s = sampleState();
    const got = received(s);
    expect(packMap(got).equals(packMap(s))).toBe(true);
    // And again, from what was decoded.
    expect(packMap(received(got)).equals(packMap(s))).toBe(true);
    // The values themselves come through: numbers exactly, byte arrays as bytes (Buffers).
    expect(got.numbers).toEqual(s.numbers);
    expect((got.mm as any).startBrk).toBe(0x5555_5557_a000);
    expect((got.vmas as any)[0].offset).toBe(2 ** 33);
    expect((got.threads as any)[0].sigmask).toEqual(Buffer.from([3, 4, 5, 6, 7, 8, 9, 10]));
    expect(Buffer.isBuffer((got.threads as any)[0].regs)).toBe(true);
    expect(Object.keys(got)).toEqual(Object.keys(s));
  });

  it('is what the frame header holds: a header is packMap of the header map', () => {
    const s = sampleState();
    const head = encodeMessage(processState({ state: s }, Buffer.alloc(16)))[0];
    expect(head.subarray(FRAME_PREFIX_BYTES).equals(packMap({ state: s }))).toBe(true);
  });

  it('tells apart what differs, key order included (the decoder keeps the order it received)', () => {
    const base = packMap(sampleState());
    const flip = sampleState();
    ((flip.threads as any)[0].regs as Buffer)[8 * 16] ^= 0xff;
    expect(packMap(flip).equals(base)).toBe(false);
    const plusOne = sampleState();
    (plusOne.contents as any)[0].addr += 4096;
    expect(packMap(plusOne).equals(base)).toBe(false);
    expect(packMap({ a: 1, b: 2 }).equals(packMap({ b: 2, a: 1 }))).toBe(false);
    expect(Object.keys(received({ b: 2, a: 1 }))).toEqual(['b', 'a']);
  });

  it('packs again what was decoded to the same bytes, for any map (fast-check)', () => {
    // '__proto__' is left out: msgpackr decodes such a key under another name. A ProcessState has
    // a fixed set of keys and never holds one.
    const key = fc.string({ maxLength: 12 }).filter((k) => k !== '__proto__');
    const { value } = fc.letrec((tie) => ({
      value: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.integer({ min: -(2 ** 31) - 8, max: 2 ** 32 + 8 }),
        fc.maxSafeInteger(),
        fc.double({ noNaN: true }),
        fc.string({ maxLength: 40 }),
        fc.boolean(),
        fc.constant(null),
        fc.uint8Array({ maxLength: 64 }).map((u) => Buffer.from(u)),
        fc.uint8Array({ maxLength: 64 }),
        fc.array(tie('value'), { maxLength: 5 }),
        fc.dictionary(key, tie('value'), { maxKeys: 5, noNullPrototype: true }),
      ),
    }));
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 8, noNullPrototype: true }), (m) => {
        const packed = packMap(m);
        expect(packMap(received(m)).equals(packed)).toBe(true);
      }),
      { numRuns: 3000, seed: 16 },
    );
  });
});
