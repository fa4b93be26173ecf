import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Husk, huskBinary } from '@forecopy/linux';
import { HuskImage } from '../src/husk-image.js';

const skip =
  process.getuid?.() !== 0
    ? 'not root (the husk is written with process_vm_writev)'
    : !fs.existsSync(huskBinary())
      ? 'husk not built (pnpm build)'
      : null;
if (skip) console.warn(`HuskImage: skipped: ${skip}`);

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const f of cleanups.splice(0)) f();
});

describe.skipIf(skip)('HuskImage', () => {
  it('a page it cannot write names the pages and the segment, as the layout gave it', () => {
    const husk = Husk.spawn();
    cleanups.push(() => process.kill(husk.pid, 'SIGKILL'));
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-husk-image-'));
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    const image = new HuskImage(root, 'ab'.repeat(16), 1 << 30, husk);
    const at = 0x3a0000000000;
    image.applyLayout([{ id: 7, start: at, pages: 2, prot: 'rw-p', offset: 0, name: '', migrated: true, indexBase: 10 }]);
    image.writePages(10, 2, Buffer.alloc(8192, 1)); // mapped: written
    husk.unmapSegment(at + 4096, 4096); // the second page gone behind the image's back
    expect(() => image.writePages(11, 1, Buffer.alloc(4096, 1))).toThrow(
      `could not write the husk's memory at 0x3a0000001000 (4096 bytes): process_vm_writev failed: EFAULT (bad address): pid ${husk.pid}; pages 11-11, segment 7 (anonymous, 0x3a0000000000, 2 pages)`,
    );
  });
});
