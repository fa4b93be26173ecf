// A debugging aid for a checksum mismatch, off unless FORECOPY_DEBUG_PAGES names a file: keeps,
// for every page, when it was last sent (round, time, hash of what was sent) and when the
// tracker last reported it written, and on a mismatch writes both for the pages that differ
// next to the frozen page's hash. Tells a write the tracker missed (changed after its last send,
// never reported) from a report that was not acted on (reported after its last send) from a
// page damaged on the way (the hash sent is the frozen one).

export interface PageHistory {
  sent?: { round: number; atMs: number; hash: string };
  dirty?: { scan: number; atMs: number };
}

export class PageTrace {
  private readonly pages = new Map<number, PageHistory>();
  private readonly t0 = performance.now();

  constructor(
    readonly file: string,
    readonly hash: (page: Uint8Array) => bigint,
  ) {}

  private at(index: number): PageHistory {
    let h = this.pages.get(index);
    if (!h) this.pages.set(index, (h = {}));
    return h;
  }

  sent(index: number, round: number, page: Uint8Array): void {
    this.at(index).sent = { round, atMs: performance.now() - this.t0, hash: this.hash(page).toString(16) };
  }

  dirty(index: number, scan: number): void {
    this.at(index).dirty = { scan, atMs: performance.now() - this.t0 };
  }

  history(index: number): PageHistory {
    return this.pages.get(index) ?? {};
  }
}
