import fs from 'node:fs';
import koffi from 'koffi';
import { Freezer } from './freezer.js';
import type { ProcMapping } from './proc-maps.js';
import type { CollectResult, DirtyRange, DirtyTracker } from './uffd-tracker.js';

const PAGE = 4096;
const SOFT_DIRTY = 1n << 55n;
const PRESENT = 1n << 63n;
const SWAPPED = 1n << 62n;

/**
 * The fallback tracker for kernels built with CONFIG_MEM_SOFT_DIRTY (most distribution kernels;
 * not this machine's): `echo 4 > /proc/PID/clear_refs` clears the soft-dirty bits, bit 55 of each
 * /proc/PID/pagemap entry says a page was written since. Reading the bits and clearing them are
 * two steps, so each collect holds the process for a moment (as CRIU's pre-dump does): a write
 * between the read and the clear would otherwise be lost.
 */
export class SoftDirtyTracker implements DirtyTracker {
  readonly kind = 'soft-dirty' as const;
  private known = new Map<number, number>(); // start -> end
  private pagemap = -1;
  startHoldMs = 0;
  readonly stopHoldMs = null;

  constructor(readonly pid: number) {}

  installedFds(): number[] {
    return [];
  }

  closeInTarget(): void {
    // nothing installed in the process
  }

  /** Whether this kernel keeps soft-dirty bits: clear ours, write a page, look at its bit 55. */
  static supported(): boolean {
    let fd = -1;
    try {
      const buf = Buffer.alloc(PAGE * 2);
      // The page inside `buf` (ours, alive for this call) whose entry we read.
      const page = (koffi.address(buf) + BigInt(PAGE - 1)) & ~BigInt(PAGE - 1);
      fs.writeFileSync('/proc/self/clear_refs', '4');
      buf.fill(1);
      fd = fs.openSync('/proc/self/pagemap', 'r');
      const e = Buffer.alloc(8);
      fs.readSync(fd, e, 0, 8, Number(page / BigInt(PAGE)) * 8);
      return (e.readBigUInt64LE(0) & SOFT_DIRTY) !== 0n;
    } catch {
      return false;
    } finally {
      if (fd >= 0) fs.closeSync(fd);
    }
  }

  start(mappings: readonly ProcMapping[]): void {
    const t = performance.now();
    this.pagemap = fs.openSync(`/proc/${this.pid}/pagemap`, 'r');
    for (const m of mappings) this.known.set(m.start, m.end);
    fs.writeFileSync(`/proc/${this.pid}/clear_refs`, '4');
    this.startHoldMs = performance.now() - t;
  }

  collect(mappings: readonly ProcMapping[]): CollectResult {
    const added: ProcMapping[] = [];
    const written: DirtyRange[] = [];
    const t = performance.now();
    const frozen = new Freezer().freeze(this.pid);
    try {
      for (const m of mappings) {
        if (this.known.get(m.start) !== m.end) {
          this.known.set(m.start, m.end);
          added.push(m);
          continue;
        }
        this.read(m, written);
      }
      fs.writeFileSync(`/proc/${this.pid}/clear_refs`, '4');
    } finally {
      frozen.thaw();
    }
    const current = new Set(mappings.map((m) => m.start));
    for (const s of [...this.known.keys()]) if (!current.has(s)) this.known.delete(s);
    return { written, added, unregistrable: [], scanMs: performance.now() - t };
  }

  stop(): void {
    if (this.pagemap >= 0) fs.closeSync(this.pagemap);
    this.pagemap = -1;
    this.known.clear();
  }

  private read(m: ProcMapping, out: DirtyRange[]): void {
    const pages = (m.end - m.start) / PAGE;
    const chunk = 65536;
    const buf = Buffer.alloc(Math.min(pages, chunk) * 8);
    for (let p = 0; p < pages; p += chunk) {
      const n = Math.min(chunk, pages - p);
      const got = fs.readSync(this.pagemap, buf, 0, n * 8, (m.start / PAGE + p) * 8);
      for (let i = 0; i < got / 8; i++) {
        const e = buf.readBigUInt64LE(i * 8);
        if ((e & SOFT_DIRTY) !== 0n && (e & (PRESENT | SWAPPED)) !== 0n) {
          const s = m.start + (p + i) * PAGE;
          const last = out[out.length - 1];
          if (last && last.end === s) last.end = s + PAGE;
          else out.push({ start: s, end: s + PAGE });
        }
      }
    }
  }
}
