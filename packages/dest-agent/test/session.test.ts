import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { pino } from 'pino';
import { MessageChannel, MessageType, PAGE_KIND, RangeTable, hello, pageBatch, roundStart, PeerAbortError } from '@forecopy/protocol';
import { listen } from '../src/server.js';

/** The destination against a scripted source over a real loopback socket. */
const SESSION = 'abcdefabcdefabcdefabcdefabcdef01';
const layout = [{ id: 1, start: 0x10000, pages: 4, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 }];
const dirs: string[] = [];
const servers: net.Server[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.close();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function serve() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-dest-test-'));
  dirs.push(dir);
  let port = 0;
  const { server } = listen({
    host: '127.0.0.1',
    port: 0,
    imageDir: dir,
    once: false,
    maxSessions: 2,
    credit: 4,
    maxImageBytes: 1 << 30,
    log: pino({ level: 'silent' }),
    onListening: (a) => (port = a.port),
  });
  servers.push(server);
  await new Promise((r) => server.once('listening', r));
  return { dir, port: port || (server.address() as net.AddressInfo).port };
}

async function connect(port: number) {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  return new MessageChannel(s);
}

const helloMsg = (l = layout) =>
  hello({ magic: 'FCPY', version: 1, sessionId: SESSION, pageSize: 4096, totalPages: 4, policy: 'precopy', layout: l });

describe('destination session', () => {
  it('aborts a session that sends a page outside the layout, discards it, and keeps serving', async () => {
    const { dir, port } = await serve();
    const ch = await connect(port);
    await ch.send(helloMsg());
    await ch.expect(MessageType.HelloAck, 5000);
    await ch.send(roundStart({ round: 1, final: false, plannedPages: 1 }));
    await ch.send(
      pageBatch(
        { round: 1, seq: 0, ranges: RangeTable.fromSortedPages([9]), kinds: Buffer.from([PAGE_KIND.ZERO]), lengths: [] },
        Buffer.alloc(0),
      ),
    );
    // The destination answers Abort: the channel turns it into a PeerAbortError with its reason.
    const err = await ch.next(5000).then(
      () => null,
      (e: PeerAbortError) => e,
    );
    expect(err).toBeInstanceOf(PeerAbortError);
    expect(err!.peerCode).toBe('E_RANGE');
    expect(err!.reason).toMatch(/outside the announced layout/);
    expect(fs.existsSync(path.join(dir, `${SESSION}.partial`))).toBe(false);
    expect(JSON.parse(fs.readFileSync(path.join(dir, `${SESSION}.failed.json`), 'utf8')).code).toBe('E_RANGE');
    // the listener still serves
    const ch2 = await connect(port);
    await ch2.send(helloMsg());
    expect((await ch2.next(5000)).type).toBe(MessageType.HelloAck);
    ch2.destroy();
  });

  it('rejects an out-of-order round and a layout larger than allowed', async () => {
    const { port } = await serve();
    const ch = await connect(port);
    await ch.send(helloMsg());
    await ch.expect(MessageType.HelloAck, 5000);
    await ch.send(roundStart({ round: 2, final: false, plannedPages: 1 }));
    await expect(ch.next(5000)).rejects.toMatchObject({ peerCode: 'E_ORDER' });

    const ch2 = await connect(port);
    await ch2.send(helloMsg([{ ...layout[0], pages: 2 ** 30 }]));
    await expect(ch2.next(5000)).rejects.toMatchObject({ peerCode: 'E_LAYOUT' });
  });

  it('closes on garbage without writing anything', async () => {
    const { dir, port } = await serve();
    const s = net.connect(port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => s.once('close', r));
    expect(fs.readdirSync(dir)).toEqual([]);
  });
});
