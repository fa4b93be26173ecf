import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT, SOURCE_BIN } from '../src/procs.js';

/** `forecopy-source report`: JSON reports to a self-contained HTML page. */
const report = (policy: string, sent: number[]) => ({
  verified: true,
  downtimeMs: 12.5,
  totalMs: 3456,
  verifyMs: 40,
  modelMs: 0,
  memoryPages: 1000,
  pagesSent: sent.reduce((a, b) => a + b, 0),
  bytesSent: 5_000_000,
  bytesOfMemory: 0,
  zeroPages: 0,
  lz4Pages: 0,
  policy,
  stopReason: 'min-remaining',
  tracker: 'uffd-wp',
  pid: 42,
  destination: '127.0.0.1:7070',
  after: 'resume',
  scans: { count: 10, totalMs: 5, maxMs: 1 },
  rounds: sent.map((s, i) => ({
    round: i + 1,
    pagesSent: s,
    pagesDirtied: Math.floor(s / 3),
    pagesFiltered: policy === 'markov' ? 7 : 0,
    durationMs: 10,
    bytesSent: s * 4096,
    final: i === sent.length - 1,
  })),
  machine: { cpus: 2, note: 'measured on test, 2 cores shared' },
  startedAt: '2026-01-01T00:00:00Z',
});

describe('forecopy-source report --html', () => {
  it('renders reports side by side with a chart per report, offline', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-report-'));
    try {
      // Pre-copy's report counts the pages sent again (rounds 2-4 resend written pages); markov's is
      // one written before they were counted, and leaves that row blank.
      fs.writeFileSync(path.join(dir, 'a.json'), JSON.stringify({ ...report('precopy', [1000, 300, 90, 20]), pagesResent: 410 }));
      fs.writeFileSync(path.join(dir, 'b.json'), JSON.stringify(report('markov', [993, 250, 60, 25])));
      const out = path.join(dir, 'r.html');
      const r = spawnSync(process.execPath, [SOURCE_BIN, 'report', path.join(dir, 'a.json'), path.join(dir, 'b.json'), '--html', out], {
        encoding: 'utf8',
        cwd: ROOT,
      });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const html = fs.readFileSync(out, 'utf8');
      expect(html).toMatch(/<th>precopy<\/th><th>markov<\/th>/);
      expect(html).toContain('<td>1,410</td>'); // precopy's pages sent
      expect(html).toContain('<td>28</td>'); // markov's pages filtered: 4 rounds x 7
      expect(html).toContain('<tr><th>of them sent again</th><td>410</td><td></td></tr>');
      expect(html.match(/<svg /g)).toHaveLength(2);
      expect(html.match(/<rect /g)).toHaveLength(2 * 4 * 3); // 4 rounds x (sent, written, filtered)
      expect(html).toContain('round 4 (stop-and-copy): 20 pages sent');
      expect(html).not.toMatch(/<script|https?:\/\//); // self-contained: nothing to fetch
      const bad = spawnSync(process.execPath, [SOURCE_BIN, 'report', path.join(ROOT, 'README.md'), '--html', out], { encoding: 'utf8' });
      expect(bad.status).toBe(2);
      expect(bad.stderr).toMatch(/^forecopy-source: cannot read the report .*README.md: /);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
