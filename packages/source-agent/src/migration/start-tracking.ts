import { pageHasher } from '../checksum.js';
import { PageTrace } from '../debug-pages.js';
import { openTracking, type Tracking } from '../tracking.js';
import type { MigrateOptions } from './options.js';
import type { HeldProcess } from './release.js';

/**
 * Starts tracking the process's writes, held by `held` from then on, with the page debugging aid
 * when FORECOPY_DEBUG_PAGES names a file.
 */
export async function startTracking(opts: MigrateOptions, held: HeldProcess): Promise<{ tracking: Tracking; trace: PageTrace | null }> {
  const tracking = openTracking(opts.pid, opts.tracker, opts.intervalMs);
  held.tracking = tracking;
  const debugFile = process.env.FORECOPY_DEBUG_PAGES;
  const trace = debugFile ? new PageTrace(debugFile, await pageHasher()) : null;
  tracking.sampler.trace = trace;
  const { tracker, space } = tracking;
  opts.log.info({ pid: opts.pid, tracker: tracker.kind, pages: space.livePages, mappings: space.list().length }, 'tracking started');
  return { tracking, trace };
}
