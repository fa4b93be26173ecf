import fs from 'node:fs';
import path from 'node:path';
import { PAGE_SIZE, findByIndex, type Mapping } from '@forecopy/protocol';
import type { Husk } from '@forecopy/linux';
import { LayoutError } from './errors.js';
import type { PageStore } from './image-store.js';

/**
 * The memory image of a migration that restores: the migrated segments live in a husk process
 * (packages/linux husk.ts) at their own addresses, the way QEMU's destination writes straight
 * into guest RAM. The rounds write pages into it with process_vm_writev, verification reads them
 * back with process_vm_readv, and at the handover only the process state remains to apply: the
 * restore does not copy memory while the process is frozen.
 *
 *   DIR/<session>.partial/            while the migration runs (stdout.log, stderr.log)
 *   DIR/<session>/manifest.json       after the handover: layout, restored pid, timings
 *
 * The same methods as ImageStore (files), so the session drives either.
 */
export class HuskImage implements PageStore {
  readonly partialDir: string;
  readonly finalDir: string;
  private segs = new Map<number, Mapping>();
  private byIndex: Mapping[] = [];
  private done = false;

  constructor(
    readonly root: string,
    readonly sessionId: string,
    private readonly maxBytes: number,
    readonly husk: Husk,
  ) {
    if (!/^[0-9a-f]{32}$/.test(sessionId)) throw new Error(`session id must be 32 hex characters`);
    this.partialDir = path.join(root, `${sessionId}.partial`);
    this.finalDir = path.join(root, sessionId);
    fs.mkdirSync(this.partialDir, { recursive: false });
  }

  segments(): readonly Mapping[] {
    return this.byIndex;
  }

  get pages(): number {
    let n = 0;
    for (const s of this.byIndex) n += s.pages;
    return n;
  }

  /**
   * Makes the husk's migrated memory equal to `layout`: unmaps vanished segments first (a new
   * segment may take their addresses), then maps new ones. A segment id is immutable.
   */
  applyLayout(layout: readonly Mapping[]): void {
    const next = new Map<number, Mapping>();
    let bytes = 0;
    for (const m of layout) {
      if (!m.migrated) continue;
      if (next.has(m.id)) throw new LayoutError(`segment ${m.id} appears twice in the layout`);
      next.set(m.id, m);
      bytes += m.pages * PAGE_SIZE;
    }
    if (bytes > this.maxBytes)
      throw new LayoutError(`the layout announces ${bytes} bytes, more than this destination accepts (${this.maxBytes})`);
    for (const [id, seg] of this.segs) {
      if (next.has(id)) continue;
      this.husk.unmapSegment(seg.start, seg.pages * PAGE_SIZE);
      this.segs.delete(id);
    }
    for (const m of next.values()) {
      const have = this.segs.get(m.id);
      if (have) {
        if (have.start !== m.start || have.pages !== m.pages || have.indexBase !== m.indexBase) {
          throw new LayoutError(`segment ${m.id} changed shape; segments are immutable`);
        }
        continue;
      }
      this.husk.mapSegment(m.start, m.pages * PAGE_SIZE, m.name === '[stack]');
      this.segs.set(m.id, m);
    }
    this.byIndex = [...this.segs.values()].sort((a, b) => a.indexBase - b.indexBase);
  }

  segmentOf(index: number): Mapping | undefined {
    return findByIndex(this.byIndex, index);
  }

  writePages(index: number, count: number, data: Buffer): void {
    const seg = this.inside(index, count);
    this.husk.write(seg.start + (index - seg.indexBase) * PAGE_SIZE, data.subarray(0, count * PAGE_SIZE));
  }

  readPages(index: number, count: number, out: Buffer): void {
    const seg = this.inside(index, count);
    this.husk.read(seg.start + (index - seg.indexBase) * PAGE_SIZE, count, out);
  }

  /** Flips one byte of a page (fault injection for tests of verification). */
  corruptPage(index: number): void {
    const b = Buffer.alloc(PAGE_SIZE);
    this.readPages(index, 1, b);
    b[123] ^= 0xff;
    this.writePages(index, 1, b);
  }

  /** Where the restored process's standard output and error go by default. */
  stdioPath(name: 'stdout.log' | 'stderr.log'): string {
    return path.join(this.partialDir, name);
  }

  /** Writes the manifest and makes the session's directory final (the husk is the process now). */
  commit(manifest: Record<string, unknown>): string {
    this.done = true;
    const layout = this.byIndex.map((m) => ({ ...m }));
    fs.writeFileSync(path.join(this.partialDir, 'manifest.json'), JSON.stringify({ ...manifest, layout }, null, 2));
    fs.rmSync(this.finalDir, { recursive: true, force: true });
    fs.renameSync(this.partialDir, this.finalDir);
    return this.finalDir;
  }

  /** Kills the husk, removes the partial directory and leaves a note saying why. Never throws. */
  discard(why: Record<string, unknown>): void {
    if (this.done) return;
    this.done = true;
    this.husk.kill();
    try {
      fs.rmSync(this.partialDir, { recursive: true, force: true });
      fs.writeFileSync(path.join(this.root, `${this.sessionId}.failed.json`), JSON.stringify(why, null, 2));
    } catch {
      // the disk may be full or gone: nothing more to do
    }
  }

  private inside(index: number, count: number): Mapping {
    const seg = this.segmentOf(index);
    if (!seg || index + count > seg.indexBase + seg.pages) {
      throw new LayoutError(`pages ${index}..${index + count - 1} are outside the announced layout`);
    }
    return seg;
  }
}
