import { PAGE_SIZE } from '@forecopy/protocol';
import { startTracking, type DirtyTracker, type TrackerChoice } from '@forecopy/linux';
import { PageSpace } from './page-space.js';
import { Sampler } from './sampler.js';
import { undoOnInterrupt } from './interrupt.js';

/** A process whose writes are tracked, as migrate, model and record use it. */
export interface Tracking {
  readonly tracker: DirtyTracker;
  /** The process's migratable memory as one page space; the sampler keeps it in line. */
  readonly space: PageSpace;
  /** The tracker's one owner; not started yet. */
  readonly sampler: Sampler;
  /** Stops the sampler and removes all tracking from the process. */
  close(): void;
}

/**
 * Starts tracking process `pid` (`kind`: the tracker asked for, or `auto`) and lays its memory out
 * as a page space, sampled every `intervalMs` once the sampler is started. Tracking starts before
 * any page is read: a page read first and written before tracking began would be lost.
 */
export function openTracking(pid: number, kind: TrackerChoice, intervalMs: number): Tracking {
  const { tracker, mappings } = startTracking(pid, kind);
  const space = new PageSpace(PAGE_SIZE);
  space.reconcile(mappings);
  const sampler = new Sampler(pid, tracker, space, intervalMs);
  const close = () => {
    sampler.stop();
    tracker.stop();
  };
  const drop = undoOnInterrupt(`removed the tracking from process ${pid}`, close);
  return {
    tracker,
    space,
    sampler,
    close() {
      drop();
      close();
    },
  };
}
