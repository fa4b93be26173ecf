import { randomFillSync } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compressSync } from 'lz4-napi';
import { describe, expect, it } from 'vitest';
import { PAGE_KIND, PAGE_SIZE, RangeTable, pageBatch, type Mapping } from '@forecopy/protocol';
import { applyBatch, type PageBatchMessage } from '../src/apply-batch.js';
import { ImageStore, type PageStore } from '../src/image-store.js';
import { ZERO_PAGE } from '../src/segment-store.js';

/** A store of `pages` pages in memory, one segment, written page list by page list. */
function memoryStore(pages: number): PageStore & { bytes: Buffer } {
  const seg: Mapping = { id: 1, start: 0x10000, pages, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 };
  const bytes = Buffer.alloc(pages * PAGE_SIZE, 0xee);
  return {
    bytes,
    pages,
    segments: () => [seg],
    applyLayout: () => {},
    segmentOf: (i) => (i >= 0 && i < pages ? seg : undefined),
    writePages: (i, n, data) => data.copy(bytes, i * PAGE_SIZE, 0, n * PAGE_SIZE),
    writePageList: (i, list) => {
      for (const [k, p] of list.entries()) p.copy(bytes, (i + k) * PAGE_SIZE);
    },
    readPages: () => {},
    corruptPage: () => {},
    commit: () => '',
    discard: () => {},
  };
}

describe('applyBatch', () => {
  it('writes the same pages however the payload is cut into pieces, a page across pieces included', () => {
    const n = 6;
    const pages = Array.from({ length: n }, (_, i) => (i === 2 ? Buffer.alloc(PAGE_SIZE) : randomFillSync(Buffer.alloc(PAGE_SIZE))));
    pages[4].fill(7); // compresses
    const kinds = [PAGE_KIND.RAW, PAGE_KIND.RAW, PAGE_KIND.ZERO, PAGE_KIND.RAW, PAGE_KIND.LZ4, PAGE_KIND.RAW];
    const parts = kinds.flatMap((k, i) => (k === PAGE_KIND.ZERO ? [] : [k === PAGE_KIND.LZ4 ? compressSync(pages[i]) : pages[i]]));
    const payload = Buffer.concat(parts);
    const header = {
      round: 1,
      seq: 0,
      ranges: RangeTable.fromSortedPages([0, 1, 2, 3, 4, 5]),
      kinds: Buffer.from(kinds),
      lengths: parts.map((p) => p.length),
    };
    const lz4At = PAGE_SIZE * 3;
    for (const cuts of [
      [],
      [1],
      [PAGE_SIZE - 1, PAGE_SIZE + 5],
      [lz4At + 3],
      [100, 101, 102, payload.length - 1],
      [PAGE_SIZE, 2 * PAGE_SIZE],
    ]) {
      const bounds = [0, ...cuts, payload.length];
      const pieces = bounds.slice(1).map((end, k) => payload.subarray(bounds[k], end));
      const store = memoryStore(n);
      const seen: number[] = [];
      const m = pageBatch(header, [Buffer.alloc(0), ...pieces]) as PageBatchMessage;
      expect(applyBatch(store, m, Buffer.alloc(4 * PAGE_SIZE), (i, page) => seen.push(i, page.equals(pages[i]) ? 1 : 0))).toBe(n);
      expect(store.bytes.equals(Buffer.concat(pages)), `cut at ${cuts}`).toBe(true);
      expect(seen).toEqual([0, 1, 1, 1, 2, 1, 3, 1, 4, 1, 5, 1]);
    }
  });
});

describe('ImageStore', () => {
  it('leaves a zero page out where the file holds nothing yet, and writes it over pages it holds', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-image-test-'));
    try {
      const store = new ImageStore(root, 'ab'.repeat(16), 1 << 30);
      store.applyLayout([{ id: 1, start: 0x10000, pages: 4, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 0 }]);
      const a = Buffer.alloc(PAGE_SIZE, 1);
      const b = Buffer.alloc(PAGE_SIZE, 2);
      const read = () => {
        const out = Buffer.alloc(4 * PAGE_SIZE, 0xee);
        store.readPages(0, 4, out);
        return out;
      };
      store.writePageList(0, [a, ZERO_PAGE, b, ZERO_PAGE]);
      expect(read().equals(Buffer.concat([a, ZERO_PAGE, b, ZERO_PAGE]))).toBe(true);
      expect(fs.statSync(store.segments()[0].file).blocks * 512).toBe(2 * PAGE_SIZE); // two holes left
      store.writePageList(0, [ZERO_PAGE, a, ZERO_PAGE]);
      expect(read().equals(Buffer.concat([ZERO_PAGE, a, ZERO_PAGE, ZERO_PAGE]))).toBe(true);
      store.discard({});
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
