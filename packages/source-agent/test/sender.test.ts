import { randomFillSync } from 'node:crypto';
import net from 'node:net';
import koffi from 'koffi';
import { afterEach, describe, expect, it } from 'vitest';
import { PageBitmap } from '@forecopy/filter';
import { MessageChannel, MessageType, PAGE_KIND, PAGE_SIZE, type Message } from '@forecopy/protocol';
import { PageReader } from '@forecopy/linux';
import { PageSpace } from '../src/page-space.js';
import { PageSender } from '../src/sender.js';

/**
 * The sender over a real TCP connection whose reader stalls: the socket's own buffer fills and
 * Node queues what is written next. Every page must arrive as it was read, whatever the queue
 * holds when the sender reads the next batch.
 */
const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

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
      if (!m.payload!.equals(pages.subarray(start * PAGE_SIZE, (start + 1) * PAGE_SIZE))) bad.push(start);
      checked++;
    }
    const res = await sent;
    expect(res.pagesSent).toBe(N);
    expect(bad).toEqual([]);
  });
});
