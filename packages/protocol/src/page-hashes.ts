import type { IndexedRange } from './layout.js';

/**
 * Incremental verification (Hello.verify = 'incremental'): each agent keeps the hash of every
 * page of the session's page space as it last handled it, the source when it sent the page (from
 * the very buffer it sent), the destination when it wrote it; a page sent again is hashed again.
 * At the end they compare one digest over the hashes of all live pages, in index order:
 *
 *   digest = h64(hash[seg0.indexBase] .. hash[seg0.indexBase + seg0.pages - 1], hash[seg1...] ...)
 *
 * with each hash as 8 bytes little-endian. A page one side never handled keeps that side's own
 * `unset` value (the source's differs from the destination's), so a live page that was never
 * sent, or never written, makes the digests differ. What this proves: every page the destination
 * holds is the page the source read when it last sent it. That the frozen memory still equals
 * what was sent is the dirty tracker's word; full verification (reading the frozen memory again)
 * is what checks the tracker.
 */
export class PageHashes {
  private hashes: BigUint64Array;

  constructor(
    /** The value of a page never handled: SOURCE_UNSET or DEST_UNSET. */
    private readonly unset: bigint,
    pages = 0,
  ) {
    this.hashes = new BigUint64Array(Math.max(1024, pages)).fill(unset);
  }

  set(index: number, hash: bigint): void {
    this.reserve(index + 1);
    this.hashes[index] = hash;
  }

  /** Makes room for indices below `size` (new ones hold `unset`). */
  private reserve(size: number): void {
    if (size <= this.hashes.length) return;
    const grown = new BigUint64Array(Math.max(size, this.hashes.length * 2)).fill(this.unset);
    grown.set(this.hashes);
    this.hashes = grown;
  }

  get(index: number): bigint {
    return index < this.hashes.length ? this.hashes[index] : this.unset;
  }

  /** The digest over the live segments' pages (sorted by indexBase), and how many pages it covers. */
  digest(segments: readonly IndexedRange[], h64: (bytes: Uint8Array) => bigint): { digest: string; pages: number } {
    const sorted = [...segments].sort((a, b) => a.indexBase - b.indexBase);
    let pages = 0;
    for (const s of sorted) pages += s.pages;
    const buf = Buffer.alloc(pages * 8);
    let at = 0;
    for (const s of sorted) {
      this.reserve(s.indexBase + s.pages);
      // The array's own bytes (little-endian on x86_64, as the digest is defined): one copy a segment.
      buf.set(new Uint8Array(this.hashes.buffer, s.indexBase * 8, s.pages * 8), at);
      at += s.pages * 8;
    }
    return { digest: h64(buf).toString(16).padStart(16, '0'), pages };
  }
}

/** What an unhandled page hashes to, at the source and at the destination (never equal). */
export const SOURCE_UNSET = 1n;
export const DEST_UNSET = 2n;
