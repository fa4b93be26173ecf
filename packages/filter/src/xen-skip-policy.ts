import { PageBitmap } from './page-bitmap.js';
import type { Policy } from './policy.js';

/**
 * Xen's reactive skip rule (old libxc's `to_skip`): hold nothing back when a round is planned,
 * but before each batch the sender peeks at the pages written so far in this round and skips
 * those: they will be sent again anyway. Without this baseline a filter's gain is overstated.
 */
export class XenSkipPolicy implements Policy {
  readonly name = 'xen-skip';
  readonly skipRedirtied = true;
  holdBack(unsynced: PageBitmap): PageBitmap {
    return new PageBitmap(unsynced.size);
  }
}
