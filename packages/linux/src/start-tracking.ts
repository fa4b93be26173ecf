import { createTracker, type TrackerChoice } from './create-tracker.js';
import { isMigratable, readMaps, type ProcMapping } from './proc-maps.js';
import type { DirtyTracker } from './uffd-tracker.js';

export interface StartedTracking {
  tracker: DirtyTracker;
  /** The migratable mappings tracking started on. */
  mappings: ProcMapping[];
}

/**
 * Starts tracking the writes of process `pid` to its migratable memory: reads its mappings,
 * creates the tracker (`kind`, or the best this kernel has) and starts it. On failure nothing is
 * left in the process.
 */
export function startTracking(pid: number, kind: TrackerChoice = 'auto'): StartedTracking {
  const mappings = readMaps(pid).filter(isMigratable);
  const tracker = createTracker(pid, kind);
  try {
    tracker.start(mappings);
  } catch (e) {
    try {
      tracker.stop();
    } catch {
      // the start's error is the one that explains
    }
    throw e;
  }
  return { tracker, mappings };
}
