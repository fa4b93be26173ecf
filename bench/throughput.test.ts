import { spawn, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Cleanup, ROOT, SOURCE_BIN, WORKLOADS, rootSkipReason, runSource, start, startDest, startIn, type Proc } from '../e2e/src/procs.js';
import { makeTwoHosts, netnsSupported, type TwoHosts } from '../e2e/src/netns.js';

/**
 * `pnpm bench:throughput` (issue 15): how fast forecopy moves memory, against ceilings measured in
 * the same run on the same machine. An idle `mw` (its memory random, so nothing compresses, but
 * every fourth page all zeros, as mw fills it; one page written a second) of 1, 4 and 16 GiB is
 * migrated unpaced over loopback and between two network-namespace hosts; the figure is the
 * first round (every page), in GB/s of memory and of wire. Beside it, at the same size, warm:
 *   - the disk ceiling: the same number of bytes written into a new file in the image directory
 *     (a first pass warms the memory, the second is timed);
 *   - the socket ceiling: two Node processes pushing the bytes through one TCP socket, and through
 *     as many sockets as --streams when forecopy has it;
 *   - a bare pipeline: forecopy's system calls without forecopy (process_vm_readv of the same
 *     idle mw, one socket, a file in the image directory; no protocol, tracking, hashing or
 *     verification), the simplest two Node processes that move the bytes;
 *   - QEMU, where qemu-system-x86_64 is installed: a paused guest of the same size whose RAM is a
 *     file of the same kind of random data, migrated with max-bandwidth lifted, single stream and
 *     multifd (sizes up to a quarter of this machine's memory: both guests' RAM lives in /dev/shm).
 * The image directory (where forecopy's destination writes, and the file ceiling's file) is on
 * this machine's disk, and in memory (/dev/shm, where QEMU's guests keep their RAM): a disk
 * image is written back as it grows, and beyond the kernel's dirty limit every writer waits for
 * the disk. forecopy and QEMU run THROUGHPUT_REPEAT times (3); the row is the median run, its
 * note the others. THROUGHPUT_GIB=1,4, THROUGHPUT_HOSTS=loopback and THROUGHPUT_IMAGES=memory
 * pick a subset. Results: printed, and written to bench/results/throughput-<date>/results.md.
 * The machine has 2 cores, shared by everything.
 */
const SIZES = (process.env.THROUGHPUT_GIB ?? '1,4,16').split(',').map(Number);
const PLACES = (process.env.THROUGHPUT_HOSTS ?? 'loopback,netns').split(',');
/** Where images go: the disk (the system's temporary directory) and memory (/dev/shm). */
const IMAGE_HOMES: Record<string, string> = { disk: os.tmpdir(), memory: '/dev/shm' };
const IMAGES = (process.env.THROUGHPUT_IMAGES ?? 'disk,memory').split(',').filter((h) => h in IMAGE_HOMES);
const REPEAT = Number(process.env.THROUGHPUT_REPEAT ?? 3);
const GB = 1e9;
const skip = rootSkipReason() ?? (PLACES.includes('netns') ? netnsSupported() : null);
if (skip) console.warn(`throughput: skipped: ${skip}`);

const help = spawnSync(process.execPath, [SOURCE_BIN, 'migrate', '--help'], { encoding: 'utf8' }).stdout;
const STREAMS = help.includes('--streams') ? Math.max(2, os.cpus().length) : 1;
const QEMU = spawnSync('sh', ['-c', 'command -v qemu-system-x86_64'], { encoding: 'utf8' }).stdout.trim();

interface Row {
  gib: number;
  place: string;
  /** Where the image (or the ceiling's file, or QEMU's guest RAM) lives: disk or memory. */
  image: string;
  what: string;
  seconds: number;
  memoryGBs: number;
  wireGBs: number | null;
  note?: string;
}

const rows: Row[] = [];
const out = path.join(ROOT, 'bench/results', `throughput-${new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-')}`);

/** 8 MiB of random bytes: what mw's memory and the guest's RAM hold, so nothing compresses. */
function randomChunk(): Buffer {
  return randomFillSync(Buffer.allocUnsafe(8 << 20));
}

/** Writes `bytes` of random data into a new file under `dir` and removes it; returns the seconds the writing took. */
function writeFile(dir: string, bytes: number): number {
  const chunk = randomChunk();
  const file = path.join(dir, 'ceiling.bin');
  const t = performance.now();
  const fd = fs.openSync(file, 'w');
  for (let done = 0; done < bytes; done += chunk.length) fs.writeSync(fd, chunk, 0, Math.min(chunk.length, bytes - done));
  fs.closeSync(fd);
  const seconds = (performance.now() - t) / 1000;
  fs.unlinkSync(file);
  return seconds;
}

/**
 * Warms `bytes` of this machine's free memory just before a timed run. This virtual machine
 * gives the memory it frees back to its host (virtio-balloon free page reporting, a few seconds
 * after): memory touched first, or again after a while, comes at 0.3 GB/s, memory freed a
 * moment ago at several GB/s. Every timed run here (the ceilings, forecopy, QEMU) starts right
 * after such a warm-up, so that each meets the same memory.
 */
function warmMemory(dir: string, bytes: number): void {
  writeFile(dir, bytes);
}

/** The file ceiling: `bytes` written into a new file under `dir`, warm; its seconds. */
function fileCeiling(dir: string, bytes: number): number {
  warmMemory(dir, bytes);
  return writeFile(dir, bytes);
}

const RECEIVER = `
const net = require('node:net');
const [streams, bytes] = process.argv.slice(1).map(Number);
let got = 0, open = 0, t0 = 0;
const srv = net.createServer((s) => {
  if (open++ === 0) t0 = performance.now();
  s.on('data', (d) => { got += d.length; if (got >= bytes) { console.log('done ' + (performance.now() - t0) / 1000); process.exit(0); } });
  s.on('end', () => { if (--open === 0) { console.log('short ' + got); process.exit(1); } });
});
srv.listen(0, process.env.HOST || '127.0.0.1', () => console.log('port ' + srv.address().port));
`;
const SENDER = `
const net = require('node:net');
const [host, port, streams, bytes] = process.argv.slice(1);
const per = Math.ceil(Number(bytes) / Number(streams));
const buf = Buffer.alloc(1 << 20, 7);
for (let i = 0; i < Number(streams); i++) {
  const s = net.connect(Number(port), host, () => {
    let sent = 0;
    const pump = () => { while (sent < per) { sent += buf.length; if (!s.write(buf)) return s.once('drain', pump); } s.end(); };
    pump();
  });
}
`;

/** `node -e script args`, inside `wrap` (a namespace host's exec prefix) when given, with HOST=`host` there. */
function nodeScript(wrap: string[], host: string, script: string, args: string[]) {
  return wrap.length
    ? start(wrap[0], [...wrap.slice(1), 'env', `HOST=${host}`, process.execPath, '-e', script, ...args])
    : start(process.execPath, ['-e', script, ...args]);
}

/**
 * An idle mw of `gib` GiB (one page written a second) inside `wrap`; its pid once ready. mw fills
 * its memory with random data before it says ready: 16 GiB of memory this machine has not
 * touched yet takes minutes here (0.3 GB/s).
 */
async function startIdleMw(c: Cleanup, gib: number, wrap: string[]): Promise<number> {
  const proc = c.proc(startIn(wrap, path.join(WORKLOADS, 'mw'), ['--mb', String(gib * 1024), '--pattern', 'seq', '--write-rate', '1']));
  return Number((await proc.waitFor(/^mw pid=(\d+) .*ready/, 900_000))[1]);
}

/** Two Node processes push `bytes` through `streams` TCP sockets; returns the seconds (twice, the second timed). */
async function socketCeiling(c: Cleanup, bytes: number, streams: number, hosts: TwoHosts | null): Promise<number> {
  let seconds = 0;
  for (let pass = 0; pass < 2; pass++) {
    const recvWrap = hosts ? hosts.exec(hosts.dest) : [];
    const sendWrap = hosts ? hosts.exec(hosts.source) : [];
    const host = hosts ? hosts.destAddr : '127.0.0.1';
    const recv = c.proc(nodeScript(recvWrap, host, RECEIVER, [String(streams), String(bytes)]));
    const port = (await recv.waitFor(/^port (\d+)/))[1];
    const send = c.proc(nodeScript(sendWrap, host, SENDER, [host, port, String(streams), String(bytes)]));
    seconds = await receiverDone(recv, send, 'the socket ceiling');
  }
  return seconds;
}

const PIPE_SENDER = `
const net = require('node:net');
const fs = require('node:fs');
const [lib, pid, host, port, bytes] = process.argv.slice(1);
import(lib).then(({ PageReader }) => {
  const maps = fs.readFileSync('/proc/' + pid + '/maps', 'utf8').trim().split('\\n').map((l) => l.split(' ')[0].split('-').map((x) => parseInt(x, 16)));
  const [a, end] = maps.reduce((m, x) => (x[1] - x[0] > m[1] - m[0] ? x : m));
  if (end - a < Number(bytes)) { console.error('the largest mapping has ' + (end - a) + ' bytes, fewer than ' + bytes); process.exit(1); }
  const b = a + Number(bytes);
  const reader = new PageReader(Number(pid));
  const CH = 1 << 20;
  const free = Array.from({ length: 64 }, () => Buffer.allocUnsafe(CH));
  const s = net.connect(Number(port), host, () => {
    let at = a;
    const pump = () => {
      while (at < b && free.length) {
        const buf = free.pop();
        reader.readRanges([{ addr: at, pages: CH / 4096 }], buf);
        at += CH;
        if (!s.write(buf, () => free.push(buf))) return s.once('drain', pump);
      }
      if (at < b) return setImmediate(pump);
      s.end();
    };
    pump();
  });
});
`;
const PIPE_RECEIVER = `
const net = require('node:net');
const fs = require('node:fs');
const [file, bytes] = process.argv.slice(1);
const fd = fs.openSync(file, 'w');
let got = 0, t0 = 0;
const srv = net.createServer((s) => {
  s.on('data', (d) => {
    if (!t0) t0 = performance.now();
    fs.writeSync(fd, d, 0, d.length, got);
    got += d.length;
    if (got >= Number(bytes)) { console.log('done ' + (performance.now() - t0) / 1000); fs.closeSync(fd); fs.rmSync(file); process.exit(0); }
  });
  s.on('end', () => { console.log('short ' + got); fs.rmSync(file); process.exit(1); });
});
srv.listen(0, process.env.HOST || '127.0.0.1', () => console.log('port ' + srv.address().port));
`;

/**
 * A bare pipeline: forecopy's system calls without forecopy. One process reads the idle mw's
 * memory with process_vm_readv, 1 MiB at a time, into a pool of buffers and writes them to a TCP
 * socket; the other writes each chunk it receives into a new file in the image directory. No
 * protocol, tracking, hashing, compression or verification, and every byte written (zero pages
 * too): the simplest two Node processes that move the bytes through the same copies. Not a lower
 * bound on cost (forecopy batches its writes and leaves zero pages out), a yardstick for what
 * forecopy adds.
 */
async function barePipeline(c: Cleanup, gib: number, hosts: TwoHosts | null, image: string): Promise<Row> {
  const bytes = gib * 2 ** 30;
  const wrapS = hosts ? hosts.exec(hosts.source) : [];
  const wrapD = hosts ? hosts.exec(hosts.dest) : [];
  const host = hosts ? hosts.destAddr : '127.0.0.1';
  const pid = await startIdleMw(c, gib, wrapS);
  const dir = c.tmpdir('forecopy-pipe-', IMAGE_HOMES[image]);
  const recv = c.proc(nodeScript(wrapD, host, PIPE_RECEIVER, [path.join(dir, 'pipe.bin'), String(bytes)]));
  const port = (await recv.waitFor(/^port (\d+)/))[1];
  warmMemory(dir, bytes);
  const lib = pathToFileURL(path.join(ROOT, 'packages/linux/dist/index.js')).href;
  const send = c.proc(nodeScript(wrapS, host, PIPE_SENDER, [lib, String(pid), host, port, String(bytes)]));
  const seconds = await receiverDone(recv, send, 'the bare pipeline');
  await c.run();
  const what = 'a bare pipeline: process_vm_readv, 1 socket, file (no forecopy)';
  return { gib, place: hosts ? 'netns' : 'loopback', image, what, seconds, memoryGBs: bytes / GB / seconds, wireGBs: bytes / GB / seconds };
}

/**
 * The seconds a baseline's receiver printed (`done S`), or an error naming why it will not: the
 * receiver saw the stream end short, or the sender failed.
 */
async function receiverDone(recv: Proc, send: Proc, what: string): Promise<number> {
  let over = false; // a sender ended after the verdict (by the cleanup) fails nothing
  const failed = send.exited.then((code) => {
    if (code !== 0 && !over) throw new Error(`${what}: the sender exited with ${code}: ${send.stderrLines.slice(-3).join(' | ')}`);
    return new Promise<never>(() => {}); // a sender that ended well leaves the verdict to the receiver
  });
  try {
    const m = await Promise.race([recv.waitFor(/^(done|short) ([\d.]+)/, 600_000), failed]);
    if (m[1] === 'short') throw new Error(`${what}: the receiver got only ${m[2]} bytes before the stream ended`);
    return Number(m[2]);
  } finally {
    over = true;
  }
}

/** The median of `n` runs by GB/s of memory, its note naming every run's figure. */
async function medianOf(n: number, run: () => Promise<Row>): Promise<Row> {
  const runs: Row[] = [];
  for (let i = 0; i < n; i++) runs.push(await run());
  runs.sort((a, b) => a.memoryGBs - b.memoryGBs);
  const mid = runs[Math.floor((runs.length - 1) / 2)];
  const spread = `median of ${n}: ${runs.map((r) => r.memoryGBs.toFixed(2)).join(', ')} GB/s`;
  return n > 1 ? { ...mid, note: mid.note ? `${mid.note}; ${spread}` : spread } : mid;
}

/** forecopy: an idle mw of `gib` GiB migrated unpaced, its image under `image`; the first round's figures. */
async function forecopy(c: Cleanup, gib: number, hosts: TwoHosts | null, streams: number, image: string): Promise<Row> {
  const wrapS = hosts ? hosts.exec(hosts.source) : [];
  const mw = { pid: await startIdleMw(c, gib, wrapS) };
  const destArgs = ['--once', '--log-level', 'warn', ...(hosts ? ['--host', hosts.destAddr, '--insecure'] : [])];
  const dest = await startDest(c, destArgs, hosts ? hosts.exec(hosts.dest) : [], c.tmpdir('forecopy-images-', IMAGE_HOMES[image]));
  const to = `${hosts ? hosts.destAddr : '127.0.0.1'}:${dest.port}`;
  warmMemory(dest.imageDir, gib * 2 ** 30); // the image's page cache meets warm memory, as the ceiling's file did
  const args = [
    'migrate',
    '--pid',
    String(mw.pid),
    '--to',
    to,
    '--image-only',
    '--after',
    'kill',
    ...(streams > 1 ? ['--streams', String(streams)] : []),
  ];
  const run = await runSource(c, args, wrapS);
  expect(run.code, run.stderr).toBe(0);
  const r = run.report!;
  expect(r.verified).toBe(true);
  const first = r.rounds[0];
  fs.rmSync(dest.imageDir, { recursive: true, force: true }); // 16 GiB of image: not kept
  await c.run(); // the workload and the destination end: their memory is free for the next run
  return {
    gib,
    place: hosts ? 'netns' : 'loopback',
    image,
    what: `forecopy${streams > 1 ? ` --streams ${streams}` : ''} (round 1)`,
    seconds: first.durationMs / 1000,
    memoryGBs: (first.pagesSent * 4096) / GB / (first.durationMs / 1000),
    wireGBs: first.bytesSent / GB / (first.durationMs / 1000),
    note: `whole migration ${(r.totalMs / 1000).toFixed(1)} s, downtime ${r.downtimeMs.toFixed(0)} ms`,
  };
}

describe.skipIf(skip)('throughput', () => {
  const c = new Cleanup();
  /** A row of the table; results.md is written again at once, so that a run cut short keeps what it measured. */
  function record(r: Row): void {
    rows.push(r);
    writeResults();
  }
  /** The table so far, into results.md. */
  function writeResults(): string {
    fs.mkdirSync(out, { recursive: true });
    const table = [
      `Machine: ${os.cpus().length} cores (shared by everything), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}, Node ${process.version}.`,
      '',
      '| GiB | where | image | what | seconds | GB/s of memory | GB/s on the wire | ratio to the ceiling | note |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      ...rows.map((r) => {
        const ceil = ceilingOf(r.gib, r.place, r.image);
        return `| ${r.gib} | ${r.place} | ${r.image} | ${r.what} | ${r.seconds.toFixed(2)} | ${r.memoryGBs.toFixed(2)} | ${r.wireGBs?.toFixed(2) ?? ''} | ${ceil && !r.what.startsWith('ceiling') ? (r.memoryGBs / ceil).toFixed(2) : ''} | ${r.note ?? ''} |`;
      }),
      '',
      `The ceiling is the lower of the file write rate (into the same image directory, on loopback's host) and the single-socket rate, both warm, at the same size and place. Every timed run starts right after the same amount of memory was warmed (written into a file and freed). forecopy and QEMU: the median of ${REPEAT} runs.`,
    ].join('\n');
    fs.writeFileSync(path.join(out, 'results.md'), `${table}\n`);
    return table;
  }
  afterAll(async () => {
    await c.run();
    console.log(writeResults());
  });

  function ceilingOf(gib: number, place: string, image: string): number | null {
    const f = rows.find((r) => r.gib === gib && r.what === 'ceiling: file write' && r.image === image);
    const s = rows.find((r) => r.gib === gib && r.place === place && r.what === 'ceiling: 1 socket');
    return f && s ? Math.min(f.memoryGBs, s.memoryGBs) : null;
  }

  for (const gib of SIZES) {
    for (const place of PLACES) {
      it(`${gib} GiB over ${place}`, async () => {
        const hosts = place === 'netns' ? makeTwoHosts() : null;
        try {
          const bytes = gib * 2 ** 30;
          // An image in memory beside the process's own memory: both must fit, with room to spare.
          const images = IMAGES.filter((h) => h !== 'memory' || 2 * gib + 4 <= os.totalmem() / 2 ** 30);
          if (place === 'loopback') {
            for (const image of images) {
              const s = fileCeiling(c.tmpdir('forecopy-ceiling-', IMAGE_HOMES[image]), bytes);
              record({ gib, place, image, what: 'ceiling: file write', seconds: s, memoryGBs: bytes / GB / s, wireGBs: null });
            }
          }
          for (const n of STREAMS > 1 ? [1, STREAMS] : [1]) {
            const s = await socketCeiling(c, bytes, n, hosts);
            record({
              gib,
              place,
              image: '',
              what: `ceiling: ${n} socket${n > 1 ? 's' : ''}`,
              seconds: s,
              memoryGBs: bytes / GB / s,
              wireGBs: bytes / GB / s,
            });
          }
          for (const image of images) record(await medianOf(REPEAT, () => barePipeline(c, gib, hosts, image)));
          for (const image of images)
            for (const n of STREAMS > 1 ? [1, STREAMS] : [1]) record(await medianOf(REPEAT, () => forecopy(c, gib, hosts, n, image)));
          await c.run();
          if (place === 'loopback' && QEMU && gib * 4 <= os.totalmem() / 2 ** 30) {
            for (const channels of [1, 2]) record(await medianOf(REPEAT, () => qemuMigration(gib, channels)));
          }
        } finally {
          await c.run();
          hosts?.destroy();
        }
      }, 3_600_000);
    }
  }
});

/** QMP over a unix socket: one command at a time, its `return` (events skipped). */
async function qmp(sock: string) {
  const s = net.connect(sock);
  let buf = '';
  const waiting: Array<(v: any) => void> = [];
  s.on('data', (d) => {
    buf += d;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      const msg = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if ('return' in msg || 'error' in msg) waiting.shift()?.(msg);
    }
  });
  await new Promise((r) => s.once('data', r)); // the greeting
  const cmd = (execute: string, args?: object) =>
    new Promise<any>((resolve, reject) => {
      waiting.push((m) => (m.error ? reject(new Error(`${execute}: ${m.error.desc}`)) : resolve(m.return)));
      s.write(`${JSON.stringify({ execute, ...(args ? { arguments: args } : {}) })}\n`);
    });
  await cmd('qmp_capabilities');
  return { cmd, close: () => s.destroy() };
}

/** QEMU migrates a paused guest of `gib` GiB of random RAM over loopback, with 1 (single stream) or more multifd channels. */
async function qemuMigration(gib: number, channels: number): Promise<Row> {
  const id = `${process.pid}-${gib}-${channels}`;
  const files = [`/dev/shm/forecopy-qemu-src-${id}`, `/dev/shm/forecopy-qemu-dst-${id}`];
  const socks = files.map((f) => `${f}.qmp`);
  const kids: ReturnType<typeof spawn>[] = [];
  try {
    // The source guest's RAM: random data, as mw's.
    const chunk = randomChunk();
    const fd = fs.openSync(files[0], 'w');
    for (let done = 0; done < gib * 2 ** 30; done += chunk.length) fs.writeSync(fd, chunk);
    fs.closeSync(fd);
    for (const [i, f] of files.entries()) {
      const args = [
        '-machine',
        'q35,memory-backend=ram0',
        '-accel',
        'tcg',
        '-m',
        `${gib}G`,
        '-nographic',
        '-nodefaults',
        '-display',
        'none',
        '-S',
        '-object',
        `memory-backend-file,id=ram0,size=${gib}G,mem-path=${f},share=on`,
        '-qmp',
        `unix:${socks[i]},server=on,wait=off`,
        ...(i === 1 ? ['-incoming', 'defer'] : []),
      ];
      kids.push(spawn(QEMU, args, { stdio: 'ignore' }));
    }
    for (const s of socks) for (let t = 0; t < 200 && !fs.existsSync(s); t++) await new Promise((r) => setTimeout(r, 50));
    const [src, dst] = [await qmp(socks[0]), await qmp(socks[1])];
    for (const q of [src, dst]) {
      if (channels > 1) {
        await q.cmd('migrate-set-capabilities', { capabilities: [{ capability: 'multifd', state: true }] });
        await q.cmd('migrate-set-parameters', { 'multifd-channels': channels });
      }
    }
    await src.cmd('migrate-set-parameters', { 'max-bandwidth': 1e12 });
    // A random port below the ephemeral range; another one if it is taken.
    let port = 0;
    for (let attempt = 1; !port; attempt++) {
      const p = 20000 + Math.floor(Math.random() * 12000);
      try {
        await dst.cmd('migrate-incoming', { uri: `tcp:127.0.0.1:${p}` });
        port = p;
      } catch (e) {
        if (attempt >= 5 || !/in use/.test((e as Error).message)) throw e;
      }
    }
    warmMemory(os.tmpdir(), gib * 2 ** 30); // the destination guest's RAM meets warm memory
    const t = performance.now();
    await src.cmd('migrate', { uri: `tcp:127.0.0.1:${port}` });
    let info: any;
    for (;;) {
      info = await src.cmd('query-migrate');
      if (info.status === 'completed' || info.status === 'failed') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const seconds = (performance.now() - t) / 1000;
    src.close();
    dst.close();
    expect(info.status).toBe('completed');
    return {
      gib,
      place: 'loopback',
      image: 'memory',
      what: channels > 1 ? `QEMU multifd, ${channels} channels` : 'QEMU, one stream',
      seconds,
      memoryGBs: (gib * 2 ** 30) / GB / seconds,
      wireGBs: info.ram.transferred / GB / seconds,
      note: `qemu ${spawnSync(QEMU, ['--version'], { encoding: 'utf8' })
        .stdout.split('\n')[0]
        .replace(/^QEMU emulator version /, '')}`,
    };
  } finally {
    for (const k of kids) k.kill('SIGKILL');
    for (const f of [...files, ...socks]) fs.rmSync(f, { force: true });
  }
}
