import { randomFillSync } from 'node:crypto';
import net from 'node:net';
import koffi from 'koffi';
import { uncompressSync } from 'lz4-napi';
import { afterEach, describe, expect, it } from 'vitest';
import { PageBitmap } from '@forecopy/filter';
import { MessageChannel, MessageType, PAGE_KIND, PAGE_SIZE, type Message } from '@forecopy/protocol';
import { PageReader } from '@forecopy/linux';
import { PageSpace } from '../src/page-space.js';
import { BufferPool, PageSender, isZeroPage, type SendResult } from '../src/sender.js';

/**
 * The sender over a real TCP connection whose reader stalls: the socket's own buffer fills and
 * Node queues what is written next. Every page must arrive as it was read, whatever the queue
 * holds when the sender reads the next batch.
 */
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

/** Both ends of a TCP connection over loopback, closed after the test. */
async function socketPair(): Promise<{ client: net.Socket; peer: net.Socket }> {
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => server.close());
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise((r) => client.once('connect', r));
  const peer = await accepted;
  closers.push(() => {
    client.destroy();
    peer.destroy();
  });
  return { client, peer };
}

describe('PageSender', () => {
  it('sends each page as read, even while the socket queues frames (batches of one raw page)', async () => {
    const N = 3000;
    // Pages of our own memory, random (lz4 off, and random pages would not compress anyway).
    const mem = Buffer.alloc((N + 1) * PAGE_SIZE);
    const base = Number(koffi.address(mem));
    const aligned = Math.ceil(base / PAGE_SIZE) * PAGE_SIZE;
    const pages = mem.subarray(aligned - base, aligned - base + N * PAGE_SIZE);
    randomFillSync(pages);
    const space = new PageSpace(PAGE_SIZE);
    space.reconcile([{ start: aligned, end: aligned + N * PAGE_SIZE, perms: 'rw-p', offset: 0, dev: '00:00', inode: 0, path: '' }]);

    const { client, peer } = await socketPair();

    const sender = new PageSender(new MessageChannel(client), new PageReader(process.pid), space, {
      batchPages: 1,
      bandwidthBps: 0,
      compress: false,
    });
    sender.grant(N); // all the credit up front: only the socket holds the sender back
    const sent = sender.sendPages(1, PageBitmap.full(N));
    // The receiver starts reading only after the socket buffers are full and frames queue up.
    await new Promise((r) => setTimeout(r, 300));
    const rx = new MessageChannel(peer);
    let checked = 0;
    const bad: number[] = [];
    while (checked < N) {
      const m: Message = await rx.next(10_000);
      if (m.type !== MessageType.PageBatch) continue;
      const [start, count] = [...m.header.ranges.entries()][0];
      expect(count).toBe(1);
      expect(m.header.kinds[0]).toBe(PAGE_KIND.RAW);
      if (!Buffer.concat(m.payload).equals(pages.subarray(start * PAGE_SIZE, (start + 1) * PAGE_SIZE))) bad.push(start);
      checked++;
    }
    const res = await sent;
    expect(res.pagesSent).toBe(N);
    expect(bad).toEqual([]);
  });
});

/** Pages of our own memory, page-aligned, for the sender to read with process_vm_readv. */
function ownPages(n: number): { pages: Buffer; space: PageSpace } {
  const mem = Buffer.alloc((n + 1) * PAGE_SIZE);
  const base = Number(koffi.address(mem));
  const aligned = Math.ceil(base / PAGE_SIZE) * PAGE_SIZE;
  const pages = mem.subarray(aligned - base, aligned - base + n * PAGE_SIZE);
  const space = new PageSpace(PAGE_SIZE);
  space.reconcile([{ start: aligned, end: aligned + n * PAGE_SIZE, perms: 'rw-p', offset: 0, dev: '00:00', inode: 0, path: '' }]);
  closers.push(() => void mem); // keep the memory alive until the test ends
  return { pages, space };
}

/** Sends every page of `pages` in batches of `batchPages`, with lz4 on; returns what was sent and received. */
async function sendAll(pages: Buffer, space: PageSpace, batchPages: number): Promise<{ res: SendResult; got: Buffer; kinds: number[] }> {
  const n = pages.length / PAGE_SIZE;
  const { client, peer } = await socketPair();
  const sender = new PageSender(new MessageChannel(client), new PageReader(process.pid), space, {
    batchPages,
    bandwidthBps: 0,
    compress: true,
  });
  sender.grant(n);
  const sent = sender.sendPages(1, PageBitmap.full(n));
  const rx = new MessageChannel(peer);
  const got = Buffer.alloc(n * PAGE_SIZE, 0xee);
  const kinds: number[] = [];
  for (let seen = 0; seen < n; ) {
    const m = await rx.next(10_000);
    if (m.type !== MessageType.PageBatch) continue;
    const payload = Buffer.concat(m.payload);
    let off = 0;
    let li = 0;
    let k = 0;
    for (const [start, count] of m.header.ranges.entries()) {
      for (let p = start; p < start + count; p++, k++, seen++) {
        const kind = m.header.kinds[k];
        kinds[p] = kind;
        const dst = got.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
        if (kind === PAGE_KIND.ZERO) dst.fill(0);
        else {
          const part = payload.subarray(off, off + m.header.lengths[li]);
          off += m.header.lengths[li++];
          (kind === PAGE_KIND.LZ4 ? uncompressSync(part) : part).copy(dst);
        }
      }
    }
  }
  const res = await sent;
  expect(sender.compression).toEqual({ pagesCompressed: res.pagesCompressed, compressionSavedBytes: res.compressionSavedBytes });
  return { res, got, kinds };
}

describe('PageSender: several connections (--streams)', () => {
  it('spreads batches over the connections, each within its own credit, every page once and intact', async () => {
    const N = 600;
    const { pages, space } = ownPages(N);
    randomFillSync(pages);
    const pairs = await Promise.all([socketPair(), socketPair(), socketPair()]);
    const sender = new PageSender(new MessageChannel(pairs[0].client), new PageReader(process.pid), space, {
      batchPages: 10,
      bandwidthBps: 0,
      compress: false,
    });
    sender.grant(2);
    sender.addStream(new MessageChannel(pairs[1].client), 2);
    sender.addStream(new MessageChannel(pairs[2].client), 2);
    expect(sender.streams).toBe(3);
    const sent = sender.sendPages(1, PageBitmap.full(N));
    // Each receiver acknowledges what it gets, as the destination does, on its own connection.
    const got = new Map<number, Buffer>();
    const perStream = [0, 0, 0];
    const seqs: number[][] = [[], [], []];
    await Promise.all(
      pairs.map(async ({ peer }, i) => {
        const rx = new MessageChannel(peer);
        while (got.size < N) {
          const m = await rx.next(10_000).catch(() => null);
          if (!m) return;
          if (m.type !== MessageType.PageBatch) continue;
          perStream[i]++;
          seqs[i].push(m.header.seq);
          const payload = Buffer.concat(m.payload);
          let off = 0;
          for (const [start, count] of m.header.ranges.entries())
            for (let p = start; p < start + count; p++, off += PAGE_SIZE) {
              expect(got.has(p)).toBe(false);
              got.set(p, payload.subarray(off, off + PAGE_SIZE));
            }
          await rx.send({ type: MessageType.BatchAck, header: { seq: m.header.seq, credit: 1 } });
          if (got.size === N) for (const q of pairs) q.peer.end();
        }
      }),
    );
    const res = await sent;
    expect(res.pagesSent).toBe(N);
    expect(res.batches).toBe(N / 10);
    for (let p = 0; p < N; p++) expect(got.get(p)!.equals(pages.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE))).toBe(true);
    // Every connection carried its share, and its seqs rise.
    for (let i = 0; i < 3; i++) {
      expect(perStream[i]).toBeGreaterThan(5);
      expect(seqs[i]).toEqual([...seqs[i]].sort((a, b) => a - b));
    }
  });
});

describe('PageSender: no work on pages it cannot help', () => {
  it('finds zero pages, whatever byte differs', () => {
    const page = Buffer.alloc(PAGE_SIZE);
    expect(isZeroPage(page)).toBe(true);
    for (const at of [0, 7, 8, 9, 2048, PAGE_SIZE - 9, PAGE_SIZE - 8, PAGE_SIZE - 1]) {
      page[at] = 1;
      expect(isZeroPage(page)).toBe(false);
      page[at] = 0;
    }
  });

  it('sends batches that will not compress raw, spending lz4 on a sample of each only', async () => {
    const N = 1024;
    const { pages, space } = ownPages(N);
    randomFillSync(pages);
    const { res, got, kinds } = await sendAll(pages, space, 256);
    expect(got.equals(pages)).toBe(true);
    expect(kinds.every((k) => k === PAGE_KIND.RAW)).toBe(true);
    expect(res.lz4Pages).toBe(0);
    expect(res.compressionSavedBytes).toBe(0);
    expect(res.pagesCompressed).toBe(4 * 8); // 4 batches, a sample of 8 pages each
  });

  it('compresses batches that will, and counts the pages and the bytes saved', async () => {
    const N = 1024;
    const { pages, space } = ownPages(N);
    // Batches 0 and 2 compress (one word a page), 1 and 3 do not (random); a quarter are zero.
    for (let p = 0; p < N; p++) {
      const page = pages.subarray(p * PAGE_SIZE, (p + 1) * PAGE_SIZE);
      if (p % 4 === 3) continue;
      if (Math.floor(p / 256) % 2 === 0) page.writeUInt32LE(p + 1, 64);
      else randomFillSync(page);
    }
    const { res, got, kinds } = await sendAll(pages, space, 256);
    expect(got.equals(pages)).toBe(true);
    expect(res.zeroPages).toBe(256);
    expect(res.lz4Pages).toBe(2 * 192);
    for (let p = 0; p < N; p++) {
      const want = p % 4 === 3 ? PAGE_KIND.ZERO : Math.floor(p / 256) % 2 === 0 ? PAGE_KIND.LZ4 : PAGE_KIND.RAW;
      expect(kinds[p]).toBe(want);
    }
    expect(res.pagesCompressed).toBe(2 * 192 + 2 * 8); // zero pages never; raw batches: their sample
    expect(res.compressionSavedBytes).toBeGreaterThan(2 * 192 * (PAGE_SIZE - PAGE_SIZE / 8));
    expect(res.compressionSavedBytes).toBeLessThan(2 * 192 * PAGE_SIZE);
  });
});

describe('BufferPool', () => {
  it('lends at most its size, makes each buffer once, and makes a taker wait until one comes back', async () => {
    const pool = new BufferPool(2, 4096);
    const a = await pool.take();
    const b = await pool.take();
    expect(a).not.toBe(b);
    let third: Buffer | null = null;
    const waiting = pool.take().then((x) => {
      third = x;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(third).toBeNull(); // both lent: it waits
    pool.give(a);
    await waiting;
    expect(third).toBe(a); // the same buffer again, not a new one
    pool.give(b);
    expect(await pool.take()).toBe(b);
  });
});
