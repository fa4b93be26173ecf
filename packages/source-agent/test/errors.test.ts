import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  ConnectionError,
  DestinationAbortError,
  InDoubtError,
  InputError,
  ProcessError,
  ProcessExitedError,
  SOURCE_ERROR_CODES,
  SOURCE_EXIT_CODES,
  SourceError,
  TrackingError,
  UsageError,
  fromYargs,
} from '../src/errors.js';

const README = fileURLToPath(new URL('../../../README.md', import.meta.url));

/** The rows of the README's table "Exit codes of forecopy-source": code -> meaning. */
function readmeExitCodes(): Record<string, string> {
  const text = fs.readFileSync(README, 'utf8');
  const table = text.slice(text.indexOf('### Exit codes of forecopy-source')).split('\n\n')[1];
  const rows: Record<string, string> = {};
  for (const m of table.matchAll(/^\| (\d+) \| (.*) \|$/gm)) rows[m[1]] = m[2];
  return rows;
}

describe('exit codes of forecopy-source', () => {
  it('are the ones the README documents, with the same meanings', () => {
    const documented = readmeExitCodes();
    expect(Object.keys(documented).length).toBeGreaterThanOrEqual(10);
    expect({ ...SOURCE_EXIT_CODES }).toEqual(documented);
  });

  it('come from the one table of error codes, each error with its own code', () => {
    const cases: Array<[SourceError, string, number]> = [
      [new SourceError('x'), 'E_SOURCE', 1],
      [new UsageError('x'), 'E_USAGE', 2],
      [new InputError('x'), 'E_INPUT', 2],
      [new ProcessError('x'), 'E_PROCESS', 3],
      [new TrackingError('x'), 'E_TRACKING', 4],
      [new ConnectionError('x'), 'E_CONNECTION', 5],
      [new DestinationAbortError('x'), 'E_DEST_ABORT', 7],
      [new ProcessExitedError('x'), 'E_PROCESS_EXITED', 8],
      [new InDoubtError('x'), 'E_IN_DOUBT', 9],
    ];
    for (const [err, code, exit] of cases) {
      expect([err.name, err.code, err.exitCode]).toEqual([err.constructor.name, code, exit]);
      expect(SOURCE_ERROR_CODES[err.code]).toBe(exit);
    }
    expect(SOURCE_ERROR_CODES.E_MISMATCH).toBe(6);
  });
});

describe('fromYargs', () => {
  it("makes yargs' own messages usage errors and a coerce function's error an input error", () => {
    expect(fromYargs('Unknown argument: x', undefined)).toBeInstanceOf(UsageError);
    const coerced = Object.assign(new Error('--interval-ms must be a whole number >= 1, got 0'), { name: 'YError' });
    const e = fromYargs(coerced.message, coerced);
    expect(e).toBeInstanceOf(InputError);
    expect(e.message).toBe(coerced.message);
    const bug = new TypeError('x is undefined');
    expect(fromYargs(bug.message, bug)).toBe(bug);
  });
});
