import path from 'node:path';
import { PAGE_SIZE, type Mapping } from '@forecopy/protocol';
import { type Husk, RestoreError } from '@forecopy/linux';
import { SegmentStore, type PageStore } from './segment-store.js';

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
export class HuskImage extends SegmentStore<Mapping> implements PageStore {
  private done = false;

  constructor(
    root: string,
    sessionId: string,
    maxBytes: number,
    readonly husk: Husk,
  ) {
    super(root, sessionId, maxBytes);
  }

  /** A new segment: private anonymous memory in the husk, at its own address. */
  protected addSegment(m: Mapping): Mapping {
    this.husk.mapSegment(m.start, m.pages * PAGE_SIZE, m.name === '[stack]');
    return m;
  }

  protected removeSegment(seg: Mapping): void {
    this.husk.unmapSegment(seg.start, seg.pages * PAGE_SIZE);
  }

  writePages(index: number, count: number, data: Buffer): void {
    const seg = this.inside(index, count);
    try {
      this.husk.write(seg.start + (index - seg.indexBase) * PAGE_SIZE, data.subarray(0, count * PAGE_SIZE));
    } catch (e) {
      if (!(e instanceof RestoreError)) throw e;
      // Which segment, as the layout gave it: the write's address alone does not say.
      const where = `pages ${index}-${index + count - 1}, segment ${seg.id} (${seg.name || 'anonymous'}, 0x${seg.start.toString(16)}, ${seg.pages} pages)`;
      throw new RestoreError(e.code, `${e.message}; ${where}`, e);
    }
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
    return this.finalize(manifest, [...this.byIndex]);
  }

  /** Kills the husk, removes the partial directory and leaves a note saying why. Never throws. */
  discard(why: Record<string, unknown>): void {
    if (this.done) return;
    this.done = true;
    this.husk.kill();
    this.removePartial(why);
  }
}
