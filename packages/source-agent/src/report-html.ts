import type { MigrationReport } from './report.js';

// Renders one or more migration reports as a self-contained HTML page (inline CSS and SVG, no
// script, no network): a summary table side by side, and for each report a chart of pages sent,
// written and filtered per round. Opens offline in any browser.

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const num = (n: number) => n.toLocaleString('en-US');

export function renderHtml(reports: MigrationReport[], title = 'forecopy migration report'): string {
  const rows: Array<[string, (r: MigrationReport) => string]> = [
    ['verified', (r) => (r.verified ? 'yes' : 'NO')],
    ['downtime', (r) => `${r.downtimeMs.toFixed(1)} ms`],
    ['total time', (r) => `${(r.totalMs / 1000).toFixed(2)} s`],
    ['verification', (r) => `${r.verifyMs.toFixed(0)} ms`],
    ['rounds', (r) => String(r.rounds.length)],
    ['pages sent', (r) => num(r.pagesSent)],
    // A report from before pagesResent was counted leaves it blank.
    ['of them sent again', (r) => (r.pagesResent === undefined ? '' : num(r.pagesResent))],
    ['memory pages', (r) => num(r.memoryPages)],
    ['MiB on the wire', (r) => (r.bytesSent / 2 ** 20).toFixed(1)],
    ['pages filtered', (r) => num(r.rounds.reduce((n, x) => n + x.pagesFiltered, 0))],
    ['stopped by', (r) => r.stopReason],
    ['tracker', (r) => `${r.tracker}, ${r.scans.count} scans, ${(r.scans.totalMs / Math.max(1, r.scans.count)).toFixed(2)} ms avg`],
  ];
  const table = `<table><thead><tr><th></th>${reports.map((r) => `<th>${esc(r.policy)}</th>`).join('')}</tr></thead><tbody>${rows
    .map(([k, f]) => `<tr><th>${esc(k)}</th>${reports.map((r) => `<td>${esc(f(r))}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
  const charts = reports.map((r) => `<section><h2>${esc(r.policy)}: pages per round</h2>${roundChart(r)}</section>`).join('\n');
  const note = reports[0]?.machine.note ?? '';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
thead th,tbody th{background:#f4f4f4;text-align:left}
.legend span{display:inline-block;margin-right:1.5em}.sw{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:middle}
svg text{font:11px system-ui,sans-serif;fill:#444}
</style></head><body>
<h1>${esc(title)}</h1>
<p>pid ${esc(reports[0]?.pid ?? '')} to ${esc(reports[0]?.destination ?? '')}. ${esc(note)}.</p>
${table}
<p class="legend"><span><i class="sw" style="background:#3b6fb6"></i>sent</span><span><i class="sw" style="background:#e08a2e"></i>written during the round</span><span><i class="sw" style="background:#5aa05a"></i>filtered (held back or skipped)</span></p>
${charts}
</body></html>
`;
}

/** Grouped bars per round, log-free linear scale, the stop-and-copy round marked. */
function roundChart(r: MigrationReport): string {
  const W = 1000;
  const H = 260;
  const pad = { l: 70, r: 10, t: 10, b: 40 };
  const n = r.rounds.length;
  const max = Math.max(1, ...r.rounds.flatMap((x) => [x.pagesSent, x.pagesDirtied, x.pagesFiltered]));
  const gw = (W - pad.l - pad.r) / Math.max(1, n);
  const bw = Math.max(1, (gw - 4) / 3);
  const y = (v: number) => pad.t + (H - pad.t - pad.b) * (1 - v / max);
  const bars: string[] = [];
  r.rounds.forEach((x, i) => {
    const x0 = pad.l + i * gw + 2;
    [
      [x.pagesSent, '#3b6fb6', 'sent'],
      [x.pagesDirtied, '#e08a2e', 'written'],
      [x.pagesFiltered, '#5aa05a', 'filtered'],
    ].forEach(([v, color, what], k) => {
      const top = y(v as number);
      bars.push(
        `<rect x="${(x0 + k * bw).toFixed(1)}" y="${top.toFixed(1)}" width="${bw.toFixed(1)}" height="${(H - pad.b - top).toFixed(1)}" fill="${color}"><title>round ${x.round}${x.final ? ' (stop-and-copy)' : ''}: ${num(v as number)} pages ${what}</title></rect>`,
      );
    });
    if (n <= 40 || i % Math.ceil(n / 40) === 0) {
      bars.push(`<text x="${(x0 + gw / 2 - 2).toFixed(1)}" y="${H - pad.b + 14}" text-anchor="middle">${x.final ? 'S' : x.round}</text>`);
    }
  });
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = Math.round(max * f);
    return `<line x1="${pad.l}" x2="${W - pad.r}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/><text x="${pad.l - 6}" y="${(y(v) + 4).toFixed(1)}" text-anchor="end">${num(v)}</text>`;
  });
  return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="pages per round">${ticks.join('')}${bars.join('')}<text x="${W / 2}" y="${H - 6}" text-anchor="middle">round (S = stop-and-copy)</text></svg>`;
}

export interface SimRowLike {
  policy: string;
  states: number | null;
  downtimeMs: number;
  totalMs: number;
  pagesSent: number;
  shareOfOracle: number | null;
  /** The run outlasted the trace and replayed its start (a column of its own when any did). */
  wrapped?: boolean;
}

/** The three sweep charts (Fig. 4, 5 and 6 analogs): file-name suffix, title, value, unit. */
export const SIM_CHARTS: ReadonlyArray<{ key: string; title: string; value: (r: SimRowLike) => number; unit: string }> = [
  { key: 'downtime', title: 'Downtime (Fig. 4 analog)', value: (r) => r.downtimeMs, unit: 'ms' },
  { key: 'time', title: 'Migration time (Fig. 5 analog)', value: (r) => r.totalMs, unit: 'ms' },
  { key: 'pages', title: 'Pages sent (Fig. 6 analog)', value: (r) => r.pagesSent, unit: 'pages' },
];

/**
 * One horizontal bar chart of a sweep: a bar per policy and S. `standalone` makes it a file of
 * its own (XML namespace, title, fixed size, white background) instead of an inline element.
 */
export function simChartSvg(rows: SimRowLike[], title: string, value: (r: SimRowLike) => number, unit: string, standalone = false): string {
  const label = (r: SimRowLike) => (r.states === null ? r.policy : `${r.policy} S=${r.states}`);
  const W = 900;
  const rowH = 22;
  const top = standalone ? 30 : 10;
  const H = rows.length * rowH + top + 10;
  const max = Math.max(1e-9, ...rows.map(value));
  const bars = rows
    .map((r, i) => {
      const w = ((W - 260) * value(r)) / max;
      const y = top + i * rowH;
      return `<text x="150" y="${y + 14}" text-anchor="end">${esc(label(r))}</text><rect x="160" y="${y + 3}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${r.policy === 'oracle' ? '#999' : r.policy === 'markov' ? '#5aa05a' : '#3b6fb6'}"/><text x="${(166 + w).toFixed(1)}" y="${y + 14}">${esc(num(Math.round(value(r))))} ${unit}</text>`;
    })
    .join('');
  if (!standalone) return `<svg viewBox="0 0 ${W} ${H}" width="100%" role="img" aria-label="${esc(title)}">${bars}</svg>`;
  return `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(title)}"><title>${esc(title)}</title><style>text{font:12px sans-serif;fill:#333}</style><rect width="100%" height="100%" fill="#fff"/><text x="10" y="18" style="font-weight:bold">${esc(title)}</text>${bars}</svg>
`;
}

/**
 * A row's share of the bound's saving, as the tables print it. The bound is the fewest pages at
 * no more downtime than pre-copy's, so a row over 100% sent fewer only by taking more downtime:
 * it says so rather than print a ratio against a bound it was not held to.
 */
export function shareText(share: number | null): string {
  if (share === null) return '';
  return share > 1 + 1e-9 ? '>100%, more downtime' : `${(share * 100).toFixed(0)}%`;
}

/**
 * A simulator sweep as a self-contained page: downtime, migration time and pages sent per policy
 * and S (the analogs of the paper's Fig. 4, 5 and 6), one bar chart each, and the table.
 */
export function renderSimHtml(rows: SimRowLike[], caption: string): string {
  const wraps = rows.some((r) => r.wrapped);
  const table = `<table><thead><tr><th>policy</th><th>S</th><th>downtime ms</th><th>total ms</th><th>pages sent</th><th>of the oracle's saving</th>${wraps ? '<th>wrapped</th>' : ''}</tr></thead><tbody>${rows
    .map(
      (r) =>
        `<tr><td>${esc(r.policy)}</td><td>${r.states ?? ''}</td><td>${r.downtimeMs.toFixed(1)}</td><td>${r.totalMs.toFixed(0)}</td><td>${num(r.pagesSent)}</td><td>${shareText(r.shareOfOracle)}</td>${wraps ? `<td>${r.wrapped ? 'yes' : ''}</td>` : ''}</tr>`,
    )
    .join('')}</tbody></table>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forecopy-sim</title>
<style>body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:3px 9px;text-align:right}svg text{font:12px system-ui,sans-serif;fill:#333}</style>
</head><body><h1>forecopy-sim</h1><p>${esc(caption)}</p>
${SIM_CHARTS.map((c) => `<h2>${esc(c.title)}</h2>${simChartSvg(rows, c.title, c.value, c.unit)}`).join('\n')}
${table}
</body></html>
`;
}
