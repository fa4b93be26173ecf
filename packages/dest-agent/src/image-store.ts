import fs from 'node:fs';
import path from 'node:path';
import { PAGE_SIZE, type Mapping } from '@forecopy/protocol';
import { SegmentStore, ZERO_PAGE, type PageStore } from './segment-store.js';

export type { PageStore } from './segment-store.js';

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
  /** 1 for each page written so far; the others are holes of the sparse file, which read as zeros. */
  held: Uint8Array;
}

export class ImageStore extends SegmentStore<ImageSegment> implements PageStore {
  private closed = false;

  /** A new segment: a sparse file, so pages never sent read as zero. */
  protected addSegment(m: Mapping): ImageSegment {
    const file = path.join(this.partialDir, `seg-${m.id}.bin`);
    const fd = fs.openSync(file, 'w+');
    fs.ftruncateSync(fd, m.pages * PAGE_SIZE);
    return { ...m, file, fd, held: new Uint8Array(m.pages) };
  }

  protected removeSegment(seg: ImageSegment): void {
    fs.closeSync(seg.fd);
    fs.rmSync(seg.file, { force: true });
  }

  /** Writes `count` consecutive pages from `data` at page `index` (all in one segment). */
  writePages(index: number, count: number, data: Buffer): void {
    const seg = this.inside(index, count);
    // fd is ours and open; offset and length lie inside the segment's file (checked above).
    fs.writeSync(seg.fd, data, 0, count * PAGE_SIZE, (index - seg.indexBase) * PAGE_SIZE);
    seg.held.fill(1, index - seg.indexBase, index - seg.indexBase + count);
  }

  /**
   * Writes consecutive pages at page `index` (all in one segment) from their own buffers, one
   * writev a run; a ZERO page into a hole is left out (the hole reads as zeros already).
   */
  writePageList(index: number, pages: readonly Buffer[]): void {
    const seg = this.inside(index, pages.length);
    const first = index - seg.indexBase;
    const skip = (k: number) => pages[k] === ZERO_PAGE && seg.held[first + k] === 0;
    for (let k = 0; k < pages.length; ) {
      if (skip(k)) {
        k++;
        continue;
      }
      let end = k + 1;
      while (end < pages.length && !skip(end)) end++;
      this.writeRun(seg, first + k, k === 0 && end === pages.length ? pages : pages.slice(k, end));
      k = end;
    }
  }

  /** Writes pages at page `at` of the segment, in one writev, and marks them held. */
  private writeRun(seg: ImageSegment, at: number, pages: readonly Buffer[]): void {
    const want = pages.length * PAGE_SIZE;
    // fd is ours and open; the pages lie inside the segment's file (checked by the caller).
    const n = fs.writevSync(seg.fd, pages as Buffer[], at * PAGE_SIZE);
    // A regular file takes all of it or fails; a short write (it may happen) finishes page by page.
    if (n < want)
      for (let i = Math.floor(n / PAGE_SIZE); i < pages.length; i++) fs.writeSync(seg.fd, pages[i], 0, PAGE_SIZE, (at + i) * PAGE_SIZE);
    seg.held.fill(1, at, at + pages.length);
  }

  /** Reads `count` pages at page `index` into `out`. */
  readPages(index: number, count: number, out: Buffer): void {
    const seg = this.inside(index, count);
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
    seg.held[index - seg.indexBase] = 1;
  }

  /** Closes the files, writes the manifest and makes the image final. */
  commit(manifest: Record<string, unknown>): string {
    this.closeFiles();
    return this.finalize(
      manifest,
      this.byIndex.map(({ fd: _fd, held: _held, file, ...m }) => ({ ...m, file: path.basename(file) })),
    );
  }

  /** Removes the partial image; leaves a note saying why. Never throws. */
  discard(why: Record<string, unknown>): void {
    try {
      this.closeFiles();
    } catch {
      // closed already, or the disk is gone
    }
    this.removePartial(why);
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
