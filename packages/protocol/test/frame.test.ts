import { describe, expect, it } from 'vitest';
import {
  FrameDecoder,
  MessageType,
  PAGE_KIND,
  PROTOCOL_VERSION,
  RangeTable,
  abort,
  batchAck,
  checksums,
  encodeMessage,
  hello,
  helloAck,
  mismatch,
  pageBatch,
  roundAck,
  roundEnd,
  roundStart,
  stopAndCopy,
  verified,
  type Message,
} from '../src/index.js';

const SESSION = '0123456789abcdef0123456789abcdef';
const layout = [{ id: 1, start: 0x7f0000000000, pages: 4, prot: 'rw-p', offset: 0, name: '[heap]', migrated: true, indexBase: 0 }];
const lz4Page = Buffer.from([0x00, 0x10, 0x00, 0x00, 0x1f, 0x00, 0x01, 0x00, 0xff, 0xff]); // not checked for content here

const samples: Message[] = [
  hello({ magic: 'FCPY', version: PROTOCOL_VERSION, sessionId: SESSION, pageSize: 4096, totalPages: 4, policy: 'precopy', layout }),
  helloAck({ version: 1, sessionId: SESSION, credit: 32, maxFrameBytes: 0 }),
  roundStart({ round: 1, final: false, plannedPages: 4 }),
  roundStart({ round: 2, final: true, plannedPages: 1, layout }),
  pageBatch({ round: 1, seq: 0, ranges: RangeTable.fromSortedPages([0, 1]), kinds: Buffer.from([PAGE_KIND.ZERO, PAGE_KIND.LZ4]), lengths: [lz4Page.length] }, lz4Page),
  pageBatch({ round: 1, seq: 1, ranges: RangeTable.fromSortedPages([3]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] }, Buffer.alloc(4096, 7)),
  batchAck({ seq: 0, credit: 1 }),
  roundEnd({ round: 1, pagesSent: 3, batches: 2 }),
  roundAck({ round: 1, pagesApplied: 3 }),
  stopAndCopy({ round: 2 }),
  checksums({ algorithm: 'xxh64', firstPage: 0, count: 2 }, Buffer.alloc(16, 1)),
  verified({ pages: 4 }),
  mismatch({ mismatched: 2, firstPages: [1, 3] }),
  abort({ code: 'E_SOURCE', reason: 'the process exited' }),
];

const wire = (m: Message) => Buffer.concat(encodeMessage(m));
const norm = (m: Message) => JSON.parse(JSON.stringify({ ...m, header: { ...m.header, ranges: (m.header as any).ranges?.toWire?.(), kinds: (m.header as any).kinds ? [...(m.header as any).kinds] : undefined } }));

describe('frames', () => {
  it('round-trips every message type', () => {
    for (const m of samples) {
      const d = new FrameDecoder();
      const [got, ...rest] = d.push(wire(m));
      expect(rest).toHaveLength(0);
      expect(got.type).toBe(m.type);
      expect(norm(got)).toEqual(norm(m));
      if (m.payload) expect(Buffer.compare(got.payload!, m.payload)).toBe(0);
    }
  });

  // Golden vectors: a change of the wire format must be deliberate (and bump the version).
  it('matches golden hex vectors', () => {
    expect(wire(samples[1]).toString('hex')).toBe(GOLDEN.helloAck);
    expect(wire(samples[4]).toString('hex')).toBe(GOLDEN.pageBatch);
    expect(wire(samples[6]).toString('hex')).toBe(GOLDEN.batchAck);
    expect(wire(samples[13]).toString('hex')).toBe(GOLDEN.abort);
    expect(wire(samples[0]).toString('hex')).toBe(GOLDEN.hello);
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
    expect(() => new FrameDecoder().push(wire(hello({ ...h, version: 2 })))).toThrow(expect.objectContaining({ code: 'E_UNSUPPORTED_VERSION' }));
    expect(() => new FrameDecoder().push(wire(hello({ ...h, magic: 'HTTP' })))).toThrow(expect.objectContaining({ code: 'E_BAD_MAGIC' }));
  });

  it('rejects a PageBatch whose lengths do not add up to its payload', () => {
    const m = pageBatch({ round: 1, seq: 0, ranges: RangeTable.fromSortedPages([3]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] }, Buffer.alloc(4000));
    expect(() => new FrameDecoder().push(wire(m))).toThrow(expect.objectContaining({ code: 'E_BAD_PAYLOAD' }));
    const k = pageBatch({ round: 1, seq: 0, ranges: RangeTable.fromSortedPages([3, 4]), kinds: Buffer.from([PAGE_KIND.RAW]), lengths: [4096] }, Buffer.alloc(4096));
    expect(() => new FrameDecoder().push(wire(k))).toThrow(expect.objectContaining({ code: 'E_BAD_HEADER' }));
  });

  it('rejects garbage that is not msgpack, and an HTTP response', () => {
    expect(() => new FrameDecoder().push(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'))).toThrow(expect.objectContaining({ code: 'E_FRAME_TOO_LARGE' }));
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
    expect(t.partition(3).map((x) => x.toWire())).toEqual([[4, 3], [9, 3], [12, 1, 20, 1]]);
    expect(RangeTable.fromRuns([[0, 2], [2, 5], [9, 10]]).toWire()).toEqual([0, 5, 9, 1]);
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
  batchAck:
    '000000150500000010de0002a373657100a663726564697401',
  abort:
    '000000300c0000002bde0002a4636f6465a8455f534f55524345a6726561736f6eb27468652070726f6365737320657869746564',
  hello:
    '000000c701000000c2de0007a56d61676963a446435059a776657273696f6e01a973657373696f6e4964d9203031323334353637383961626364656630313233343536373839616263646566a87061676553697a65cd1000aa746f74616c506167657304a6706f6c696379a7707265636f7079a66c61796f757491de0008a2696401a57374617274cb42dfc00000000000a5706167657304a470726f74a472772d70a66f666673657400a46e616d65a65b686561705da86d69677261746564c3a9696e6465784261736500',
};
