import { describe, expect, it } from 'vitest';
import {
  FrameDecoder,
  MessageType,
  PAGE_KIND,
  RangeTable,
  abort,
  batchAck,
  checksums,
  commit,
  committed,
  discard,
  encodeMessage,
  hello,
  helloAck,
  mismatch,
  pageBatch,
  processState,
  query,
  release,
  resolved,
  digest,
  roundAck,
  roundEnd,
  roundStart,
  stopAndCopy,
  streamJoin,
  verified,
  MAX_STREAMS,
  type Message,
} from '../src/index.js';
import { SESSION, helloHeader, layout, wire } from './helpers.js';

const lz4Page = Buffer.from([0x00, 0x10, 0x00, 0x00, 0x1f, 0x00, 0x01, 0x00, 0xff, 0xff]); // not checked for content here

const samples: Message[] = [
  hello({ ...helloHeader }),
  helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0 }),
  roundStart({ round: 1, final: false, plannedPages: 4 }),
  roundStart({ round: 2, final: true, plannedPages: 1, layout }),
  pageBatch(
    {
      round: 1,
      seq: 0,
      ranges: RangeTable.fromSortedPages([0, 1]),
      kinds: Buffer.from([PAGE_KIND.ZERO, PAGE_KIND.LZ4]),
      lengths: [lz4Page.length],
    },
    lz4Page,
  ),
  pageBatch(
    { round: 1, seq: 1, ranges: RangeTable.fromSortedPages([3]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] },
    Buffer.alloc(4096, 7),
  ),
  batchAck({ seq: 0, credit: 1 }),
  roundEnd({ round: 1, pagesSent: 3, batches: 2 }),
  roundAck({ round: 1, pagesApplied: 3 }),
  stopAndCopy({ round: 2 }),
  checksums({ algorithm: 'xxh64', firstPage: 0, count: 2 }, Buffer.alloc(16, 1)),
  verified({ pages: 4 }),
  mismatch({ mismatched: 2, firstPages: [1, 3] }),
  abort({ code: 'E_SOURCE', reason: 'the process exited' }),
];

// The handover and the restore (types 13..19 and the optional fields of a restore). Named so that
// the golden vectors below do not depend on positions in `samples`.
const state = { pid: 4242, comm: 'app', contents: [{ addr: 0x7f0000001000, pages: 1 }], regs: Buffer.from('deadbeef', 'hex') };
const restoreOf = {
  processState: processState({ state }, Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex')),
  release: release({ sessionId: SESSION }),
  resolved: resolved({ sessionId: SESSION, running: true, pid: 4242, reason: 'released' }),
  checksums: checksums({ algorithm: 'xxh64', firstPage: 0, count: 1, stateHash: '0123456789abcdef' }, Buffer.alloc(8, 2)),
  committed: committed({ sessionId: SESSION, restoredPid: 4242, restoreMs: 12.5 }),
};
const restoreSamples: Message[] = [
  hello({
    ...helloHeader,
    restore: {
      exe: '/usr/bin/app',
      vmas: [{ start: 0x7f0000000000, end: 0x7f0000004000, perms: 'rw-p', path: '' }],
      files: [],
      vdso: null,
    },
  }),
  hello({ ...helloHeader, restore: {} }),
  helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0, restore: true }),
  helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0, restore: false }),
  restoreOf.processState,
  // A whole page of contents, and a state with no contents at all (an empty payload).
  processState(
    { state: { ...state, contents: [{ addr: 0x7f0000001000, pages: 1 }], nested: [[1, [-2, 2 ** 40]], []] } },
    Buffer.alloc(4096, 0xa5),
  ),
  processState({ state: { pid: 1, contents: [] } }, Buffer.alloc(0)),
  restoreOf.checksums,
  checksums({ algorithm: 'xxh64', firstPage: 1, count: 2 }, Buffer.alloc(16, 3)),
  verified({ pages: 4 }),
  mismatch({ mismatched: 0, firstPages: [], state: true }),
  mismatch({ mismatched: 1, firstPages: [2], state: false }),
  commit({ sessionId: SESSION }),
  committed({ sessionId: SESSION }),
  restoreOf.committed,
  committed({ sessionId: SESSION, restoredPid: 0, restoreMs: 0 }),
  query({ sessionId: SESSION }),
  restoreOf.release,
  discard({ sessionId: SESSION }),
  restoreOf.resolved,
  resolved({ sessionId: SESSION, running: false, pid: 0, reason: 'the restored process was already gone' }),
  digest({ algorithm: 'xxh64-of-page-hashes', pages: 16_384, digest: '0123456789abcdef' }),
  digest({ algorithm: 'xxh64-of-page-hashes', pages: 0, digest: 'fedcba9876543210', stateHash: '00000000000000ff' }),
  mismatch({ mismatched: 0, firstPages: [], digest: true }),
  hello({ ...helloHeader, verify: 'incremental' }),
  // Several connections (--streams): Hello asks, HelloAck grants with a token, StreamJoin names it.
  hello({ ...helloHeader, streams: 4 }),
  helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0, streams: 3, streamToken: 'ab'.repeat(16) }),
  streamJoin({ sessionId: SESSION, token: 'ab'.repeat(16), stream: 2 }),
];
samples.push(...restoreSamples);

/** A payload as one buffer: a PageBatch's comes in pieces (as the socket delivered them). */
const joinedPayload = (m: Message): Buffer | undefined => (m.type === MessageType.PageBatch ? Buffer.concat(m.payload) : m.payload);

const norm = (m: Message) =>
  JSON.parse(
    JSON.stringify({
      ...m,
      payload: joinedPayload(m),
      header: {
        ...m.header,
        ranges: (m.header as any).ranges?.toWire?.(),
        kinds: (m.header as any).kinds ? [...(m.header as any).kinds] : undefined,
      },
    }),
  );

describe('frames', () => {
  it('round-trips every message type', () => {
    for (const m of samples) {
      const d = new FrameDecoder();
      const [got, ...rest] = d.push(wire(m));
      expect(rest).toHaveLength(0);
      expect(got.type).toBe(m.type);
      expect(norm(got)).toEqual(norm(m));
      expect(Buffer.compare(joinedPayload(got) ?? Buffer.alloc(0), joinedPayload(m) ?? Buffer.alloc(0))).toBe(0);
    }
    // Every type from 1 to the last one is among the samples.
    const types = new Set(samples.map((m) => m.type));
    const all = Object.values(MessageType).filter((v): v is number => typeof v === 'number' && v !== MessageType.Invalid);
    expect([...types].sort((a, b) => a - b)).toEqual(all);
    expect(all).toContain(MessageType.Resolved);
    expect(all).toContain(MessageType.Digest);
    expect(all).toContain(MessageType.StreamJoin);
  });

  it('refuses a StreamJoin for stream 0 or beyond the most streams, and a stream count of 0', () => {
    const wireOf = (type: MessageType, header: Record<string, unknown>) => wire({ type, header } as unknown as Message);
    const join = (h: Record<string, unknown>) =>
      wireOf(MessageType.StreamJoin, { sessionId: SESSION, token: 'ab'.repeat(16), stream: 1, ...h });
    expect(() => new FrameDecoder().push(join({}))).not.toThrow();
    expect(() => new FrameDecoder().push(join({ stream: 0 }))).toThrow(/numbered from 1/);
    expect(() => new FrameDecoder().push(join({ stream: MAX_STREAMS }))).toThrow(/stream/);
    expect(() => new FrameDecoder().push(join({ token: 'short' }))).toThrow(/token/);
    expect(() => new FrameDecoder().push(wireOf(MessageType.Hello, { ...helloHeader, streams: 0 }))).toThrow(/streams/);
  });

  it('decodes an optional field that was absent as absent, and one that was present as sent', () => {
    for (const m of samples) {
      if (m.type === MessageType.PageBatch) continue;
      const [got] = new FrameDecoder().push(wire(m));
      expect(Object.keys(got.header).sort(), MessageType[m.type]).toEqual(Object.keys(m.header).sort());
    }
    const [bare] = new FrameDecoder().push(wire(committed({ sessionId: SESSION })));
    expect(bare.header).toEqual({ sessionId: SESSION });
    expect('restoredPid' in bare.header).toBe(false);
    const [full] = new FrameDecoder().push(wire(restoreOf.committed));
    expect(full.header).toEqual({ sessionId: SESSION, restoredPid: 4242, restoreMs: 12.5 });
    const [ack] = new FrameDecoder().push(wire(helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0 })));
    expect('restore' in ack.header).toBe(false);
    const [sums] = new FrameDecoder().push(wire(checksums({ algorithm: 'xxh64', firstPage: 0, count: 0 }, Buffer.alloc(0))));
    expect('stateHash' in sums.header).toBe(false);
    const [mis] = new FrameDecoder().push(wire(mismatch({ mismatched: 1, firstPages: [0] })));
    expect('state' in mis.header).toBe(false);
  });

  it('sends the payload of a ProcessState as its own buffer, not copied into the header', () => {
    const parts = encodeMessage(restoreOf.processState);
    expect(parts).toHaveLength(2);
    expect(parts[1]).toBe(restoreOf.processState.payload);
    expect(parts[0].readUInt32BE(0)).toBe(parts[0].length - 4 + parts[1].length);
  });

  // Golden vectors: a change of the wire format must be deliberate (and bump the version).
  it('matches golden hex vectors', () => {
    expect(wire(samples[1]).toString('hex')).toBe(GOLDEN.helloAck);
    expect(wire(samples[4]).toString('hex')).toBe(GOLDEN.pageBatch);
    expect(wire(samples[6]).toString('hex')).toBe(GOLDEN.batchAck);
    expect(wire(samples[13]).toString('hex')).toBe(GOLDEN.abort);
    expect(wire(samples[0]).toString('hex')).toBe(GOLDEN.hello);
    expect(wire(restoreOf.processState).toString('hex')).toBe(GOLDEN.processState);
    expect(wire(restoreOf.release).toString('hex')).toBe(GOLDEN.release);
    expect(wire(restoreOf.resolved).toString('hex')).toBe(GOLDEN.resolved);
    expect(wire(restoreOf.checksums).toString('hex')).toBe(GOLDEN.checksumsWithStateHash);
    expect(wire(restoreOf.committed).toString('hex')).toBe(GOLDEN.committedRestored);
  });

  it('decodes the same messages however the stream is split', () => {
    const all = Buffer.concat(samples.map(wire));
    const whole = new FrameDecoder().push(all).map(norm);
    expect(whole).toHaveLength(samples.length);
    for (let cut = 1; cut < all.length; cut += 97) {
      const d = new FrameDecoder();
      const got = [...d.push(all.subarray(0, cut)), ...d.push(all.subarray(cut))].map(norm);
      expect(got).toEqual(whole);
    }
    let seed = 7;
    const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 50) + 1;
    const d = new FrameDecoder();
    const got: Message[] = [];
    for (let off = 0; off < all.length; ) {
      const n = rnd();
      got.push(...d.push(all.subarray(off, off + n)));
      off += n;
    }
    expect(got.map(norm)).toEqual(whole);
    d.end();
  });

  it('feeds a frame one byte at a time', () => {
    const buf = wire(samples[0]);
    const d = new FrameDecoder();
    const got: Message[] = [];
    for (let i = 0; i < buf.length; i++) got.push(...d.push(buf.subarray(i, i + 1)));
    expect(got.map(norm)).toEqual([norm(samples[0])]);
  });

  it('rejects unknown type 200 and type 0 by name', () => {
    const b = wire(samples[6]);
    b[4] = 200;
    expect(() => new FrameDecoder().push(b)).toThrow(expect.objectContaining({ code: 'E_UNKNOWN_MESSAGE_TYPE' }));
    b[4] = 0;
    expect(() => new FrameDecoder().push(b)).toThrow(expect.objectContaining({ code: 'E_INVALID_MESSAGE_TYPE' }));
  });

  it('rejects an oversize length before the body arrives, and stays failed', () => {
    const d = new FrameDecoder({ maxFrameBytes: 1024 });
    const len = Buffer.alloc(4);
    len.writeUInt32BE(1025);
    expect(() => d.push(len)).toThrow(expect.objectContaining({ code: 'E_FRAME_TOO_LARGE' }));
    expect(() => d.push(wire(samples[6]))).toThrow(expect.objectContaining({ code: 'E_FRAME_TOO_LARGE' }));
  });

  it('rejects a stream that ends inside a frame', () => {
    const d = new FrameDecoder();
    d.push(wire(samples[0]).subarray(0, 10));
    expect(() => d.end()).toThrow(expect.objectContaining({ code: 'E_FRAME_TRUNCATED' }));
  });

  it('rejects another protocol version and a bad magic', () => {
    const h = samples[0].header as any;
    expect(() => new FrameDecoder().push(wire(hello({ ...h, version: 2 })))).toThrow(
      expect.objectContaining({ code: 'E_UNSUPPORTED_VERSION' }),
    );
    expect(() => new FrameDecoder().push(wire(hello({ ...h, magic: 'HTTP' })))).toThrow(expect.objectContaining({ code: 'E_BAD_MAGIC' }));
  });

  it('rejects a PageBatch whose lengths do not add up to its payload', () => {
    const m = pageBatch(
      { round: 1, seq: 0, ranges: RangeTable.fromSortedPages([3]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] },
      Buffer.alloc(4000),
    );
    expect(() => new FrameDecoder().push(wire(m))).toThrow(expect.objectContaining({ code: 'E_BAD_PAYLOAD' }));
    const k = pageBatch(
      { round: 1, seq: 0, ranges: RangeTable.fromSortedPages([3, 4]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] },
      Buffer.alloc(4096),
    );
    expect(() => new FrameDecoder().push(wire(k))).toThrow(expect.objectContaining({ code: 'E_BAD_HEADER' }));
  });

  it('rejects garbage that is not msgpack, and an HTTP response', () => {
    expect(() => new FrameDecoder().push(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'))).toThrow(
      expect.objectContaining({ code: 'E_FRAME_TOO_LARGE' }),
    );
    const b = wire(samples[6]);
    b[9] = 0xc1; // never used in msgpack
    expect(() => new FrameDecoder().push(b)).toThrow(expect.objectContaining({ code: 'E_BAD_HEADER' }));
  });
});

describe('RangeTable', () => {
  it('merges adjacent pages and partitions', () => {
    const t = RangeTable.fromSortedPages([4, 5, 6, 9, 10, 11, 12, 20]);
    expect(t.toWire()).toEqual([4, 3, 9, 4, 20, 1]);
    expect(t.pages()).toBe(8);
    expect([...t.pageIndices()]).toEqual([4, 5, 6, 9, 10, 11, 12, 20]);
    expect(t.partition(3).map((x) => x.toWire())).toEqual([
      [4, 3],
      [9, 3],
      [12, 1, 20, 1],
    ]);
    expect(
      RangeTable.fromRuns([
        [0, 2],
        [2, 5],
        [9, 10],
      ]).toWire(),
    ).toEqual([0, 5, 9, 1]);
    expect(t.sizes(4096).memoryBytes).toBe(8 * 4096);
  });

  it('validates wire input', () => {
    expect(() => RangeTable.fromWire([5, 2, 6, 1])).toThrow(/overlaps/);
    expect(() => RangeTable.fromWire([5, 2, 1, 1])).toThrow(/overlaps or is out of order/);
    expect(() => RangeTable.fromWire([5, 0])).toThrow(/count > 0/);
    expect(() => RangeTable.fromWire([5, 2], 6)).toThrow(/past/);
    expect(() => RangeTable.fromWire([1, 2, 3])).toThrow(/pairs/);
    expect(() => RangeTable.fromSortedPages([3, 3])).toThrow(/strictly increasing/);
    expect(RangeTable.fromWire([0, 2, 4, 1], 5).pages()).toBe(3);
  });
});

const GOLDEN = {
  helloAck:
    '00000054020000004fde0004a776657273696f6e01a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566a663726564697420ad6d61784672616d65427974657300',
  pageBatch:
    '0000003c040000002dde0005a5726f756e6401a373657100a672616e676573920002a56b696e6473c4020201a76c656e67746873910a001000001f000100ffff',
  batchAck: '000000150500000010de0002a373657100a663726564697401',
  abort: '000000300c0000002bde0002a4636f6465a8455f534f55524345a6726561736f6eb27468652070726f6365737320657869746564',
  hello:
    '000000c701000000c2de0007a56d61676963a446435059a776657273696f6e01a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566a87061676553697a65cd1000aa746f74616c506167657304a6706f6c696379a7707265636f7079a66c61796f757491de0008a2696401a57374617274cb42dfc00000000000a5706167657304a470726f74a472772d70a66f666673657400a46e616d65a65b686561705da86d69677261746564c3a9696e6465784261736500',
  // 0x5e = 1 + 4 + 0x49 + 16: type 0x10, a 73-byte header {state: {pid: cd 1092, comm, contents:
  // [{addr: cb 42dfc00000040000 (0x7f0000001000 as float64), pages: 1}], regs: c4 04 deadbeef}},
  // then the 16 payload bytes as they were given.
  processState:
    '0000005e1000000049de0001a57374617465de0004a3706964cd1092a4636f6d6da3617070a8636f6e74656e747391de0002a461646472cb42dfc00000040000a5706167657301a472656773c404deadbeef000102030405060708090a0b0c0d0e0f',
  // 0x34 = 1 + 4 + 0x2f: type 0x11, {sessionId: d9 20 + 32 characters}.
  release: '00000034110000002fde0001a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566',
  // 0x54 = 1 + 4 + 0x4f: type 0x13, {sessionId, running: c3 (true), pid: cd 1092, reason: 'released'}.
  resolved:
    '00000054130000004fde0004a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566a772756e6e696e67c3a3706964cd1092a6726561736f6ea872656c6561736564',
  // 0x4d = 1 + 4 + 0x40 + 8: type 0x09, {algorithm, firstPage, count: 1, stateHash: b0 + 16 characters}, one hash.
  checksumsWithStateHash:
    '0000004d0900000040de0004a9616c676f726974686da57878683634a966697273745061676500a5636f756e7401a9737461746548617368b0303132333435363738396162636465660202020202020202',
  // 0x56 = 1 + 4 + 0x51: type 0x0e, {sessionId, restoredPid: cd 1092, restoreMs: cb 4029000000000000 (12.5)}.
  committedRestored:
    '000000560e00000051de0003a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566ab726573746f726564506964cd1092a9726573746f72654d73cb4029000000000000',
};
