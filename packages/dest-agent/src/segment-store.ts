import fs from 'node:fs';
import path from 'node:path';
import { PAGE_SIZE, findByIndex, type Mapping } from '@forecopy/protocol';
import { DestError, LayoutError } from './errors.js';

/** A page of zeros: what applyBatch hands a store for each ZERO page, this very buffer (never changed). */
export const ZERO_PAGE = Buffer.alloc(PAGE_SIZE);

/** What a session writes pages into and verifies: image files (ImageStore) or a husk (HuskImage). */
export interface PageStore {
  readonly pages: number;
  segments(): readonly Mapping[];
  applyLayout(layout: readonly Mapping[]): void;
  segmentOf(index: number): Mapping | undefined;
  writePages(index: number, count: number, data: Buffer): void;
  /**
   * Writes consecutive pages at page `index` (all in one segment), one buffer each, none copied
   * (a ZERO page is ZERO_PAGE itself); optional.
   */
  writePageList?(index: number, pages: readonly Buffer[]): void;
  readPages(index: number, count: number, out: Buffer): void;
  corruptPage(index: number): void;
  commit(manifest: Record<string, unknown>): string;
  discard(why: Record<string, unknown>): void;
}

/**
 * The part both stores share: a session's directory (DIR/<session>.partial until the handover,
 * then DIR/<session>; every path is built from the session id, 32 hex characters, checked, so
 * nothing is ever written outside DIR) and its table of migrated segments, kept equal to the
 * layout the source announces. How a segment holds its pages is the subclass's: `addSegment`
 * and `removeSegment`.
 */
export abstract class SegmentStore<S extends Mapping> {
  readonly partialDir: string;
  readonly finalDir: string;
  protected segs = new Map<number, S>();
  protected byIndex: S[] = [];

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

  protected abstract addSegment(m: Mapping): S;
  protected abstract removeSegment(s: S): void;

  /** Live segments, in index order. */
  segments(): readonly S[] {
    return this.byIndex;
  }

  /** Total pages of the live segments. */
  get pages(): number {
    let n = 0;
    for (const s of this.byIndex) n += s.pages;
    return n;
  }

  /**
   * Makes the segments equal to `layout`: removes vanished ones first (a new segment may take
   * their addresses), then adds new ones. A segment id is immutable: the same id with another
   * shape is an error.
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
      if (next.has(id)) continue;
      this.removeSegment(seg);
      this.segs.delete(id);
    }
    for (const m of next.values()) {
      const have = this.segs.get(m.id);
      if (!have) this.segs.set(m.id, this.addSegment(m));
      else if (have.start !== m.start || have.pages !== m.pages || have.indexBase !== m.indexBase) {
        throw new LayoutError(`segment ${m.id} changed shape; segments are immutable`);
      }
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
  segmentOf(index: number): S | undefined {
    return findByIndex(this.byIndex, index);
  }

  /** The segment holding pages index..index+count-1, all of them; a LayoutError if none does. */
  protected inside(index: number, count: number): S {
    const seg = this.segmentOf(index);
    if (!seg || index + count > seg.indexBase + seg.pages) {
      throw new LayoutError(`pages ${index}..${index + count - 1} are outside the announced layout`);
    }
    return seg;
  }

  /** Writes the manifest (with the layout) and makes the session's directory final. */
  protected finalize(manifest: Record<string, unknown>, layout: unknown[]): string {
    fs.writeFileSync(path.join(this.partialDir, 'manifest.json'), JSON.stringify({ ...manifest, layout }, null, 2));
    fs.rmSync(this.finalDir, { recursive: true, force: true });
    fs.renameSync(this.partialDir, this.finalDir);
    return this.finalDir;
  }

  /** Removes the partial directory and leaves a note saying why. Never throws. */
  protected removePartial(why: Record<string, unknown>): void {
    try {
      fs.rmSync(this.partialDir, { recursive: true, force: true });
      fs.writeFileSync(path.join(this.root, `${this.sessionId}.failed.json`), JSON.stringify(why, null, 2));
    } catch {
      // the disk may be full or gone: nothing more to do
    }
  }
}
