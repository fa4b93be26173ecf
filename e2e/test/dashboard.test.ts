import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, ROOT, SOURCE_BIN, migrateArgs, rootSkipReason, start, startDest, startMw, warnIfSkipped } from '../src/procs.js';

/**
 * The live dashboard in a real browser (Debian's chromium driven by playwright-core) during a
 * real migration: the heat map and the round table fill with live figures. The screenshot is kept
 * in e2e/artifacts/ (not in git).
 */
const CHROMIUM = '/usr/bin/chromium';
const skip = warnIfSkipped(
  'dashboard',
  rootSkipReason() ?? (fs.existsSync(CHROMIUM) ? null : `${CHROMIUM} is missing (apt-get install chromium; .ci/run installs it)`),
);

describe.skipIf(skip)('live dashboard', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  it('shows the heat map and the rounds of a running migration', async () => {
    const { chromium } = await import('playwright-core');
    const mw = await startMw(c, ['--mb', '64', '--pattern', 'hotspot', '--hot-mb', '1', '--write-rate', '20000']);
    const dest = await startDest(c, ['--once']);
    // Markov, modelled for 2 s, at 100 Mbit/s, with the dashboard on a port of its choosing.
    const args = [
      '--policy',
      'markov',
      '--states',
      '64',
      '--model-seconds',
      '2',
      '--bandwidth',
      '100mbit',
      '--after',
      'resume',
      '--ui',
      '0',
    ];
    const src = c.proc(start(process.execPath, [SOURCE_BIN, ...migrateArgs(mw.pid, dest, args)]));
    const url = (await src.waitFor(/^dashboard: (http:\/\/127\.0\.0\.1:\d+\/)$/))[1];
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    c.defer(() => browser.close());
    const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
    await page.goto(url);
    await page.waitForFunction(() => document.querySelectorAll('#heatmap .col').length >= 10, null, { timeout: 30_000 });
    await page.waitForFunction(() => document.querySelectorAll('#rounds tbody tr').length >= 2, null, { timeout: 60_000 });
    const firstRound = await page.$$eval('#rounds tbody tr:first-child td', (tds) => tds.map((td) => td.textContent));
    expect(firstRound[0]).toBe('1');
    expect(Number(firstRound[1]!.replace(/,/g, ''))).toBeGreaterThan(10_000); // round 1 sends the whole 64 MiB
    const cells = await page.$$eval('#heatmap .col:last-child .cell', (cs) => cs.length);
    expect(cells).toBe(64);
    expect(await page.textContent('#state')).toMatch(/^state \d+/); // the Markov state is shown
    await page
      .waitForFunction(() => /VERIFIED/.test(document.getElementById('downtime')!.textContent ?? ''), null, { timeout: 60_000 })
      .catch(() => {});
    fs.mkdirSync(path.join(ROOT, 'e2e/artifacts'), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, 'e2e/artifacts/dashboard.png'), fullPage: true });
    expect(await src.exited).toBe(0);
  }, 180_000);
});
