import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { Freezer, PageReader, UffdWpTracker, isMigratable, readMaps, type DirtyRange } from '../src/index.js';

/** The uffd-wp tracker on a real process that writes exactly the pages it is told to. */
const POKE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../workloads/bin/poke');
const skip =
  process.getuid?.() !== 0
    ? 'not root (ptrace and userfaultfd of another process)'
    : !fs.existsSync(POKE)
      ? 'workloads not built (pnpm build)'
      : null;
if (skip) console.warn(`tracker: skipped: ${skip}`);

class Poke {
  private buf = '';
  private waiters: Array<(l: string) => void> = [];
  readonly lines: string[] = [];
  constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d) => {
      this.buf += d;
      let i: number;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const l = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(l);
        else this.lines.push(l);
      }
    });
  }
  line(): Promise<string> {
    const l = this.lines.shift();
    return l !== undefined ? Promise.resolve(l) : new Promise((r) => this.waiters.push(r));
  }
  async cmd(c: string): Promise<string> {
    this.child.stdin!.write(`${c}\n`);
    return this.line();
  }
}

const procs: ChildProcess[] = [];
afterEach(() => {
  for (const p of procs.splice(0)) if (p.exitCode === null) p.kill('SIGKILL');
});

async function startPoke(pages: number, threads = 1, thp = false) {
  const child = spawn(POKE, ['--pages', String(pages), '--threads', String(threads), ...(thp ? ['--thp'] : [])], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  procs.push(child);
  const p = new Poke(child);
  const m = /region=0x([0-9a-f]+) pages=(\d+) ready/.exec(await p.line())!;
  return { p, pid: child.pid!, region: parseInt(m[1], 16) };
}

const pagesOf = (ranges: DirtyRange[], region: number, n: number) => {
  const out: number[] = [];
  for (const r of ranges)
    for (let a = r.start; a < r.end; a += 4096) if (a >= region && a < region + n * 4096) out.push((a - region) / 4096);
  return out;
};

const uffdFds = (pid: number) =>
  fs.readdirSync(`/proc/${pid}/fd`).filter((f) => {
    try {
      return fs.readlinkSync(`/proc/${pid}/fd/${f}`).includes('userfaultfd');
    } catch {
      return false;
    }
  }).length;

describe.skipIf(skip)('UffdWpTracker', () => {
  it('reports exactly the pages written, each once, and leaves nothing behind', async () => {
    const { p, pid, region } = await startPoke(256, 3);
    const t = new UffdWpTracker(pid);
    t.start(readMaps(pid).filter(isMigratable));
    expect(uffdFds(pid)).toBe(1);
    t.collect(readMaps(pid).filter(isMigratable)); // settle anything written by libc meanwhile
    expect(await p.cmd('w 3 4 5 200')).toBe('ok');
    const a = t.collect(readMaps(pid).filter(isMigratable));
    expect(pagesOf(a.written, region, 256)).toEqual([3, 4, 5, 200]);
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 256)).toEqual([]);
    expect(await p.cmd('w 7 3')).toBe('ok');
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 256)).toEqual([3, 7]);
    // a mapping made after start is reported as added, an unmapped one causes no error
    const mapped = parseInt(/mapped 0x([0-9a-f]+)/.exec(await p.cmd('m 8'))![1], 16);
    const c = t.collect(readMaps(pid).filter(isMigratable));
    expect(c.added.some((m) => m.start <= mapped && m.end >= mapped + 8 * 4096)).toBe(true);
    expect(await p.cmd('u')).toBe('unmapped');
    t.collect(readMaps(pid).filter(isMigratable));
    t.stop();
    t.stop(); // idempotent
    expect(uffdFds(pid)).toBe(0);
    expect(/TracerPid:\s*0/.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))).toBe(true);
    expect(await p.cmd('w 1 2 3')).toBe('ok'); // still writes, no hang
  });

  it('closes its descriptor in the frozen process and tracks on until stop(); says how long start and stop took', async () => {
    const { p, pid, region } = await startPoke(256);
    const t = new UffdWpTracker(pid);
    expect(t.stopHoldMs).toBeNull();
    t.start(readMaps(pid).filter(isMigratable));
    expect(t.startHoldMs).toBeGreaterThan(0);
    t.collect(readMaps(pid).filter(isMigratable));
    const frozen = new Freezer().freeze(pid);
    t.closeInTarget(frozen);
    t.closeInTarget(frozen); // idempotent
    frozen.thaw();
    expect(uffdFds(pid)).toBe(0);
    expect(t.installedFds()).toEqual([]);
    expect(await p.cmd('w 9 11')).toBe('ok');
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 256)).toEqual([9, 11]);
    t.stop();
    expect(t.stopHoldMs).toBeGreaterThan(0);
    expect(/TracerPid:\s*0/.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))).toBe(true);
    expect(await p.cmd('w 1')).toBe('ok');
  });

  it('reports a page given back with MADV_DONTNEED (zero now, with no write), once', async () => {
    const { p, pid, region } = await startPoke(64);
    const t = new UffdWpTracker(pid);
    t.start(readMaps(pid).filter(isMigratable));
    t.collect(readMaps(pid).filter(isMigratable));
    expect(await p.cmd('d 9 10 40')).toBe('ok');
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 64)).toEqual([9, 10, 40]);
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 64)).toEqual([]);
    // written again, then given back again: reported each time
    expect(await p.cmd('w 9')).toBe('ok');
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 64)).toEqual([9]);
    expect(await p.cmd('d 9')).toBe('ok');
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 64)).toEqual([9]);
    const r = new PageReader(pid);
    const out = Buffer.alloc(4096);
    expect(r.readRanges([{ addr: region + 9 * 4096, pages: 1 }], out)).toEqual([1]);
    expect(out.every((b) => b === 0)).toBe(true);
    t.stop();
  });

  it('reports the pages of a transparent huge page given back whole with MADV_DONTNEED', async () => {
    const { p, pid, region } = await startPoke(1024, 1, true);
    const huge = Number(/AnonHugePages:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    if (huge === 0) console.warn('tracker: THP not in use here; the huge-page case runs on small pages');
    const t = new UffdWpTracker(pid);
    t.start(readMaps(pid).filter(isMigratable));
    t.collect(readMaps(pid).filter(isMigratable));
    expect(await p.cmd('d 512-1023')).toBe('ok');
    const got = pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 1024);
    expect(got.length).toBe(512);
    expect(got[0]).toBe(512);
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, region, 1024)).toEqual([]);
    t.stop();
  });

  it('reports the pages of a mapping cut short and grown back in place (zeros now, no write)', async () => {
    const { p, pid } = await startPoke(16);
    const t = new UffdWpTracker(pid);
    t.start(readMaps(pid).filter(isMigratable));
    // 4 MiB, so that whole page tables go when it is cut short
    const at = parseInt(/mapped 0x([0-9a-f]+)/.exec(await p.cmd('m 1024'))![1], 16);
    t.collect(readMaps(pid).filter(isMigratable));
    expect(pagesOf(t.collect(readMaps(pid).filter(isMigratable)).written, at, 1024)).toEqual([]);
    expect(await p.cmd('s 1')).toBe('resized');
    expect(await p.cmd('s 1024')).toBe('resized');
    const c = t.collect(readMaps(pid).filter(isMigratable));
    const reported = new Set([...pagesOf(c.written, at, 1024), ...c.added.flatMap((m) => pagesOf([m], at, 1024))]);
    expect(reported.size).toBe(1023);
    expect(reported.has(0)).toBe(false);
    t.stop();
  });

  it('reads pages with process_vm_readv and reports vanished ranges as short', async () => {
    const { pid, region } = await startPoke(16);
    const r = new PageReader(pid);
    const out = Buffer.alloc(32 * 4096);
    const got = r.readRanges(
      [
        { addr: region, pages: 4 },
        { addr: 0x1000, pages: 2 },
        { addr: region + 8 * 4096, pages: 2 },
      ],
      out,
    );
    expect(got).toEqual([4, 0, 2]);
    expect(out[7]).toBe(1);
  });

  it('freezes every thread, and the kernel releases them if the freezer dies', async () => {
    const { p, pid } = await startPoke(16, 4);
    const f = new Freezer().freeze(pid);
    expect(f.threads.size).toBe(4);
    const state = () => fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1][0];
    expect(state()).toBe('t');
    f.thaw();
    expect(await p.cmd('w 1')).toBe('ok');
    // A child process freezes it and is killed without thawing: the target runs on.
    const code = `import('${path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../dist/index.js')}').then(k => { new k.Freezer().freeze(${pid}); console.log('frozen'); setInterval(() => {}, 1000); })`;
    const holder = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(holder);
    await new Promise((r) => holder.stdout!.once('data', r));
    expect(state()).toBe('t');
    holder.kill('SIGKILL');
    await new Promise((r) => holder.once('exit', r));
    expect(await p.cmd('w 2')).toBe('ok');
  });
});
