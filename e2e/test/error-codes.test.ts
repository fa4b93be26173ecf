import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEST_ERROR_CODES } from '@forecopy/dest-agent';
import { FILTER_ERROR_CODES } from '@forecopy/filter';
import { PROTOCOL_ERROR_CODES } from '@forecopy/protocol';
import { RESTORE_ERROR_CODES, SOURCE_ERROR_CODES, SOURCE_EXIT_CODES } from '@forecopy/source-agent';
import { ROOT } from '../src/procs.js';

/**
 * RELIABILITY.md's error-code tables are made from the errors modules of the packages, so that
 * the documentation cannot drift from the code: this test fails when they differ.
 * `FORECOPY_WRITE_DOCS=1 npx vitest run e2e/test/error-codes.test.ts` writes them anew.
 */
const BEGIN = '<!-- error codes: made from the errors modules by e2e/test/error-codes.test.ts -->';
const END = '<!-- end of error codes -->';

function table(rows: Array<[string, string]>): string {
  return ['| code | meaning |', '| --- | --- |', ...rows.map(([c, m]) => `| ${c} | ${m.replace(/\|/g, '\\|')} |`)].join('\n');
}

export function errorCodeTables(): string {
  const source = Object.entries(SOURCE_ERROR_CODES).map(([code, exit]): [string, string] => [
    code,
    `exit ${exit}: ${SOURCE_EXIT_CODES[exit as keyof typeof SOURCE_EXIT_CODES]}`,
  ]);
  return [
    BEGIN,
    'Protocol (`packages/protocol/src/errors.ts`, `PROTOCOL_ERROR_CODES`; raised on either side):',
    '',
    table(Object.entries(PROTOCOL_ERROR_CODES)),
    '',
    'Destination (`packages/dest-agent/src/errors.ts`, `DEST_ERROR_CODES`), sent to the source in Abort:',
    '',
    table(Object.entries(DEST_ERROR_CODES)),
    '',
    'Restore (`packages/linux/src/errors.ts`, `RESTORE_ERROR_CODES`), sent by a destination that could not rebuild the process; the source exits 10:',
    '',
    table(Object.entries(RESTORE_ERROR_CODES)),
    '',
    'Files forecopy made (`packages/filter/src/errors.ts`, `FILTER_ERROR_CODES`), reported by forecopy-source and forecopy-sim as bad input (exit 2):',
    '',
    table(Object.entries(FILTER_ERROR_CODES)),
    '',
    'Source (`packages/source-agent/src/errors.ts`, `SOURCE_ERROR_CODES`), each with the exit code of forecopy-source:',
    '',
    table(source),
    END,
  ].join('\n');
}

describe('error codes in RELIABILITY.md', () => {
  it('are the ones the errors modules declare, with the same meanings', () => {
    const file = path.join(ROOT, 'RELIABILITY.md');
    const text = fs.readFileSync(file, 'utf8');
    const a = text.indexOf(BEGIN);
    const b = text.indexOf(END);
    expect(a, `RELIABILITY.md has no "${BEGIN}" block`).toBeGreaterThanOrEqual(0);
    const current = text.slice(a, b + END.length);
    if (process.env.FORECOPY_WRITE_DOCS === '1') fs.writeFileSync(file, text.replace(current, errorCodeTables()));
    else expect(current).toBe(errorCodeTables());
  });
});
