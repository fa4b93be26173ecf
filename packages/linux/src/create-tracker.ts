import { SoftDirtyTracker } from './soft-dirty-tracker.js';
import { TrackerUnsupportedError } from './errors.js';
import { UffdWpTracker, pagemapScanSupported, type DirtyTracker } from './uffd-tracker.js';

/** The dirty-page trackers there are (DirtyTracker.kind). */
export const TRACKER_KINDS = ['uffd-wp', 'soft-dirty'] as const;
export type TrackerKind = (typeof TRACKER_KINDS)[number];

/** What a user may ask for (--tracker): a tracker by kind, or `auto`, the best this kernel has. */
export const TRACKER_CHOICES = ['auto', ...TRACKER_KINDS] as const;
export type TrackerChoice = (typeof TRACKER_CHOICES)[number];

export const TRACKER_REQUIREMENT =
  'Linux >= 6.7 (userfaultfd asynchronous write-protect + the PAGEMAP_SCAN ioctl) or a kernel built with CONFIG_MEM_SOFT_DIRTY';

/** The dirty tracker for `pid`: uffd-wp where the kernel has it, else soft-dirty, else an error. */
export function createTracker(pid: number, prefer: TrackerChoice = 'auto'): DirtyTracker {
  const uffd = prefer !== 'soft-dirty' && pagemapScanSupported();
  if (uffd) return new UffdWpTracker(pid);
  if (prefer === 'uffd-wp') {
    throw new TrackerUnsupportedError(
      `this kernel has no PAGEMAP_SCAN ioctl, so --tracker uffd-wp cannot work: it needs ${TRACKER_REQUIREMENT.split(' or ')[0]}`,
    );
  }
  if (SoftDirtyTracker.supported()) return new SoftDirtyTracker(pid);
  throw new TrackerUnsupportedError(
    prefer === 'soft-dirty'
      ? 'this kernel keeps no soft-dirty bits (it was built without CONFIG_MEM_SOFT_DIRTY): use --tracker auto or uffd-wp'
      : `this kernel cannot track dirty pages: forecopy needs ${TRACKER_REQUIREMENT}`,
  );
}
