import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { checkWritableFile, prepareDir } from '../src/paths.js';

describe('paths a command will write', () => {
  const made: string[] = [];
  const tmp = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-paths-'));
    made.push(d);
    return d;
  };
  afterEach(() => {
    for (const d of made.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it('prepareDir makes what is missing, a level at a time, and leaves nothing else in it', () => {
    const d = tmp();
    expect(prepareDir(path.join(d, 'a', 'b'))).toBeNull();
    expect(fs.statSync(path.join(d, 'a', 'b')).isDirectory()).toBe(true);
    expect(fs.readdirSync(path.join(d, 'a', 'b'))).toEqual([]);
  });

  it('prepareDir says why a directory cannot be used, and returns (no endless mkdir under /proc)', () => {
    const d = tmp();
    fs.writeFileSync(path.join(d, 'f'), '');
    expect(prepareDir(path.join(d, 'f'))).toBe(`${path.join(d, 'f')} is not a directory`);
    expect(prepareDir(path.join(d, 'f', 'x'))).toMatch(/^cannot use .*\/f\/x: ENOTDIR$/);
    expect(prepareDir('/proc/forecopy-none/x')).toBe('cannot make the directory /proc/forecopy-none: ENOENT');
    expect(prepareDir('')).toBe('the path is empty');
  });

  it('checkWritableFile: a new file in a directory that exists, or a file it may write; nothing is made', () => {
    const d = tmp();
    expect(checkWritableFile(path.join(d, 'r.json'))).toBeNull();
    expect(fs.readdirSync(d)).toEqual([]);
    expect(checkWritableFile(d)).toBe(`${d} is a directory`);
    expect(checkWritableFile(path.join(d, 'no', 'r.json'))).toBe(
      `cannot write ${path.join(d, 'no', 'r.json')}: ${path.join(d, 'no')} does not exist`,
    );
    expect(checkWritableFile('')).toBe('the path is empty');
  });
});
