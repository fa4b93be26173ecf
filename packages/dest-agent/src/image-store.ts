import fs from 'node:fs';
import path from 'node:path';
import { PAGE_SIZE, findByIndex, type Mapping } from '@forecopy/protocol';
import { DestError, LayoutError } from './errors.js';

/**
 * The memory image being rebuilt: one sparse file per migrated segment plus a JSON manifest.
 *
 *   DIR/<session>.partial/seg-<id>.bin     while the migration runs
 *   DIR/<session>/seg-<id>.bin             after verification (the directory is renamed)
 *   DIR/<session>/manifest.json            layout, checksums' outcome, timings
 *
 * Every path is built from the session id (32 hex characters, checked) and numeric segment ids,
 * so nothing is ever written outside DIR. A session that does not verify leaves nothing but
 * `DIR/<session>.failed.json`, which says why.
 */
export interface ImageSegment extends Mapping {
  file: string;
  fd: number;
}

/** What a session writes pages into and verifies: image files (ImageStore) or a husk (HuskImage). */
export interface PageStore {
  readonly pages: number;
  segments(): readonly Mapping[];
  applyLayout(layout: readonly Mapping[]): void;
  segmentOf(index: number): Mapping | undefined;
  writePages(index: number, count: number, data: Buffer): void;
  readPages(index: number, count: number, out: Buffer): void;
  corruptPage(index: number): void;
  commit(manifest: Record<string, unknown>): string;
  discard(why: Record<string, unknown>): void;
}

export class ImageStore implements PageStore {
  readonly partialDir: string;
  readonly finalDir: string;
  private segs = new Map<number, ImageSegment>();
  private byIndex: ImageSegment[] = [];
  private closed = false;

  constructor(
    readonly root: string,
    readonly sessionId: string,
    private readonly maxBytes: number,
  ) {
    if (!/^[0-9a-f]{32}$/.test(sessionId)) throw new DestError(`session id must be 32 hex characters`);
    this.partialDir = path.join(root, `${sessionId}.partial`);
    this.finalDir = path.join(root, sessionId);
    fs.mkdirSync(this.partialDir, { recursive: false });
  }

  /** Live segments, in index order. */
  segments(): readonly ImageSegment[] {
    return this.byIndex;
  }

  /** Total pages of the live segments. */
  get pages(): number {
    let n = 0;
    for (const s of this.byIndex) n += s.pages;
    return n;
  }

  /**
   * Makes the image's segments equal to `layout`: creates new ones (sparse files), closes and
   * removes vanished ones. A segment id is immutable: the same id with another shape is an error.
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
    if (bytes > this.maxBytes) {
      throw new LayoutError(`the layout announces ${bytes} bytes, more than this destination accepts (${this.maxBytes})`);
    }
    for (const [id, seg] of this.segs) {
      if (!next.has(id)) {
        fs.closeSync(seg.fd);
        fs.rmSync(seg.file, { force: true });
        this.segs.delete(id);
      }
    }
    for (const m of next.values()) {
      const have = this.segs.get(m.id);
      if (have) {
        if (have.start !== m.start || have.pages !== m.pages || have.indexBase !== m.indexBase) {
          throw new LayoutError(`segment ${m.id} changed shape; segments are immutable`);
        }
        continue;
      }
      const file = path.join(this.partialDir, `seg-${m.id}.bin`);
      const fd = fs.openSync(file, 'w+');
      fs.ftruncateSync(fd, m.pages * PAGE_SIZE); // sparse: pages never sent read as zero
      this.segs.set(m.id, { ...m, file, fd });
    }
    this.byIndex = [...this.segs.values()].sort((a, b) => a.indexBase - b.indexBase);
    for (let i = 1; i < this.byIndex.length; i++) {
      const a = this.byIndex[i - 1];
      if (a.indexBase + a.pages > this.byIndex[i].indexBase) {
        throw new LayoutError(`segments ${a.id} and ${this.byIndex[i].id} overlap in the page index space`);
      }
    }
  }

  /** The live segment holding page `index`, or undefined. */
  segmentOf(index: number): ImageSegment | undefined {
    return findByIndex(this.byIndex, index);
  }

  /** Writes `count` consecutive pages from `data` at page `index` (all in one segment). */
  writePages(index: number, count: number, data: Buffer): void {
    const seg = this.segmentOf(index);
    if (!seg || index + count > seg.indexBase + seg.pages) {
      throw new LayoutError(`pages ${index}..${index + count - 1} are outside the announced layout`);
    }
    // fd is ours and open; offset and length lie inside the segment's file (checked above).
    fs.writeSync(seg.fd, data, 0, count * PAGE_SIZE, (index - seg.indexBase) * PAGE_SIZE);
  }

  /** Reads `count` pages at page `index` into `out`. */
  readPages(index: number, count: number, out: Buffer): void {
    const seg = this.segmentOf(index);
    if (!seg || index + count > seg.indexBase + seg.pages) {
      throw new LayoutError(`pages ${index}..${index + count - 1} are outside the announced layout`);
    }
    const want = count * PAGE_SIZE;
    let got = 0;
    while (got < want) {
      const n = fs.readSync(seg.fd, out, got, want - got, (index - seg.indexBase) * PAGE_SIZE + got);
      if (n === 0) break;
      got += n;
    }
    if (got < want) out.fill(0, got, want);
  }

  /** Flips one byte of a page (fault injection for tests of verification). */
  corruptPage(index: number): void {
    const seg = this.segmentOf(index);
    if (!seg) return;
    const b = Buffer.alloc(1);
    const off = (index - seg.indexBase) * PAGE_SIZE + 123;
    fs.readSync(seg.fd, b, 0, 1, off);
    b[0] ^= 0xff;
    fs.writeSync(seg.fd, b, 0, 1, off);
  }

  /** Closes the files, writes the manifest and makes the image final. */
  commit(manifest: Record<string, unknown>): string {
    this.closeFiles();
    const layout = this.byIndex.map(({ fd: _fd, file, ...m }) => ({ ...m, file: path.basename(file) }));
    fs.writeFileSync(path.join(this.partialDir, 'manifest.json'), JSON.stringify({ ...manifest, layout }, null, 2));
    fs.rmSync(this.finalDir, { recursive: true, force: true });
    fs.renameSync(this.partialDir, this.finalDir);
    return this.finalDir;
  }

  /** Removes the partial image; leaves a note saying why. Never throws. */
  discard(why: Record<string, unknown>): void {
    try {
      this.closeFiles();
      fs.rmSync(this.partialDir, { recursive: true, force: true });
      fs.writeFileSync(path.join(this.root, `${this.sessionId}.failed.json`), JSON.stringify(why, null, 2));
    } catch {
      // the disk may be full or gone: nothing more to do
    }
  }

  private closeFiles(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.segs.values()) {
      try {
        fs.closeSync(s.fd);
      } catch {
        // already closed
      }
    }
  }
}
