// What a long command (migrate, model, record) reports as it goes, and its one-line display on a
// terminal.

export type Progress =
  | { phase: 'modelling'; doneMs: number; totalMs: number; samples: number }
  | { phase: 'round'; round: number; pagesSent: number; pagesPlanned: number; final: boolean }
  | { phase: 'verify'; pages: number };

/** Prints progress on one line of stderr when it is a terminal; nothing otherwise. */
export function progressPrinter(): ((p: Progress) => void) | undefined {
  if (!process.stderr.isTTY) return undefined;
  return (p) => {
    let line = '';
    if (p.phase === 'modelling') {
      const frac = Math.min(1, p.doneMs / p.totalMs);
      const bar = '#'.repeat(Math.round(frac * 20)).padEnd(20, '.');
      line = `modelling [${bar}] ${(p.doneMs / 1000).toFixed(1)}/${(p.totalMs / 1000).toFixed(0)} s, ${p.samples} samples`;
    } else if (p.phase === 'round') {
      line = `${p.final ? 'stop-and-copy' : `round ${p.round}`}: sent ${p.pagesSent.toLocaleString('en-US')} of ${p.pagesPlanned.toLocaleString('en-US')} planned pages`;
    } else line = `verifying ${p.pages.toLocaleString('en-US')} pages`;
    process.stderr.write(`\r\x1b[K${line}`);
    if (p.phase !== 'modelling' && p.phase !== 'round') process.stderr.write('\n');
  };
}

/** Clears the progress line before the command's own output. */
export function clearProgress(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}
