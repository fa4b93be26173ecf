import type { PageBitmap, Policy } from '@forecopy/filter';
import type { RoundReport } from './report.js';

// What the live dashboard (ui-server.ts) is sent while `migrate --ui` or `record --ui` runs, and
// how a sample becomes a heat-map column.

export type UiEvent =
  | { type: 'hello'; pid: number; policy: string; pages: number; buckets: number }
  | { type: 'sample'; atMs: number; hist: number[]; state: number | null; forecast: number[] }
  | ({ type: 'round' } & RoundReport)
  | { type: 'done'; verified: boolean; downtimeMs: number; totalMs: number; pagesSent: number; error?: string };

/** Columns of the heat map: the page space in 64 slices. */
export const UI_BUCKETS = 64;

/** How many states after the current one the dashboard shows. */
const FORECAST_STEPS = 3;

/** The first event: what is migrated (or recorded: `policy` says 'recording'). */
export function helloEvent(pid: number, policy: string, pages: number): UiEvent {
  return { type: 'hello', pid, policy, pages, buckets: UI_BUCKETS };
}

/** A sample: pages written per 1/64 of the page space, and the policy's state and forecast if it has them. */
export function sampleEvent(pages: PageBitmap, atMs: number, policy: Policy | null): UiEvent {
  const hist: number[] = [];
  const step = Math.max(1, Math.ceil(pages.size / UI_BUCKETS));
  for (let b = 0; b < UI_BUCKETS; b++) hist.push(pages.countRange(b * step, (b + 1) * step));
  const now = policy?.currentForecast?.(FORECAST_STEPS);
  return { type: 'sample', atMs, hist, state: now?.state ?? null, forecast: now?.forecast ?? [] };
}
