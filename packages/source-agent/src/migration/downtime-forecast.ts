import { type PageReader, threadsOf } from '@forecopy/linux';
import { PAGE_SIZE, type VerifyMode } from '@forecopy/protocol';
import { pageHasher } from '../checksum.js';

// The downtime is more than sending what remains: the process is frozen, its last writes are
// collected, its state captured, the image verified and handed over before it runs again. The
// stop rule (--downtime-limit-ms) compares the transfer of the unsynchronized pages *plus* these
// fixed costs with the limit, so that a tight limit is not overshot by them. The estimate is
// made of what the agent measures as it goes (the round trip to the destination, the tracker's
// scan, this machine's hash rate) and, for the steps that run only once, of costs measured on a
// 2-core machine (BENCHMARKS.md, issues 12 and 13), scaled by what they grow with.

/** Freezing: a seize and an interrupt per thread (about 0.1-0.3 ms each measured here). */
const FREEZE_MS = 1;
const FREEZE_MS_PER_THREAD = 0.3;
/** Capturing the state for a restore: registers, mappings, descriptors (1-4 ms measured, threads add). */
const CAPTURE_MS = 4;
/** The restore at the destination, Commit to Committed (11-18 ms measured for mw, 4 threads). */
const RESTORE_MS = 15;
/** The original killed and gone, then Release answered (4-19 ms measured). */
const RELEASE_MS = 8;
/** Incremental verification: the digest over every page's hash on both sides (5-20 ms for 1 GiB). */
const DIGEST_MS_PER_PAGE = 40e-6;
/** Verification's own round trip and set-up on both sides (a full check of 8 MiB took 19-23 ms). */
const VERIFY_MS = 5;

export interface ForecastInputs {
  pid: number;
  /** The destination restores the process (the capture, the restore and the release count). */
  restore: boolean;
  verify: VerifyMode;
  /** Pages of the process's memory now (the space grows and shrinks as it runs). */
  livePages: () => number;
  /** The tracker's mean scan time so far, ms. */
  scanMs: () => number;
  /** Hashing one page (read included), ms, as measured by calibrateHashMs(). */
  hashMsPerPage: number;
}

/** The fixed costs of the downtime, forecast from measurements as the migration runs. */
export class DowntimeForecast {
  /** The shortest round trip seen: RoundEnd sent to RoundAck received. */
  private rttMs = Number.POSITIVE_INFINITY;

  constructor(private readonly inputs: ForecastInputs) {}

  /** A round's RoundEnd-to-RoundAck time (the destination applied what was in flight, then answered). */
  observeRoundTrip(ms: number): void {
    if (ms >= 0) this.rttMs = Math.min(this.rttMs, ms);
  }

  /** The downtime's parts that do not depend on the pages left to send, ms. */
  fixedMs(): number {
    const i = this.inputs;
    const rtt = Number.isFinite(this.rttMs) ? this.rttMs : 1;
    const pages = i.livePages();
    const freeze = FREEZE_MS + FREEZE_MS_PER_THREAD * threadCount(i.pid) + i.scanMs();
    const verify = VERIFY_MS + (i.verify === 'full' ? fullVerifyMs(pages, i.hashMsPerPage) : pages * DIGEST_MS_PER_PAGE);
    const handover = i.restore ? CAPTURE_MS + RESTORE_MS + RELEASE_MS + 3 * rtt : rtt;
    return freeze + verify + rtt + handover;
  }
}

/**
 * Full verification: both agents read and hash every page. On one host they share the cores;
 * across two they run side by side, so this is an upper bound there.
 */
export function fullVerifyMs(pages: number, hashMsPerPage: number): number {
  return 2 * pages * hashMsPerPage;
}

/** The calibration reads this many runs of RUN_PAGES pages of the process (16 MiB), spread over all of it. */
const CALIBRATION_RUNS = 16;
const RUN_PAGES = 256;

/**
 * This machine's time to read and hash one page with the verification's hash, ms. First the best
 * of a few passes over a 2 MiB buffer (which also warms the JIT up: 0.44-0.6 us here); then, given
 * runs of the process's pages, one pass over them read and hashed as a full check reads and
 * hashes them (hashPages: a run of 256 pages a read), and the larger of the two. A buffer of 2 MiB
 * stays in the caches where a process larger than them does not: on stress-ng-vm (65,000 pages)
 * the buffer alone forecast a full check of 67-74 ms, and it took 101-110 (BENCHMARKS.md, session
 * 13), so auto chose it where it took over a third of the 300 ms limit, not a quarter. Once: a
 * second pass over the same runs would find them in the caches. A calibration that cannot read
 * the process (it is gone, say) keeps the buffer's figure: what fails then is the migration's
 * business, not the forecast's.
 */
export async function calibrateHashMs(own?: { reader: PageReader; runs: ReadonlyArray<{ addr: number; pages: number }> }): Promise<number> {
  const hash = await pageHasher();
  const pages = 512;
  const src = Buffer.alloc(pages * PAGE_SIZE, 0x5a);
  const dst = Buffer.allocUnsafe(src.length);
  let best = Number.POSITIVE_INFINITY;
  for (let pass = 0; pass < 6; pass++) {
    const t = performance.now();
    src.copy(dst); // the read: process_vm_readv copies the same way
    for (let i = 0; i < pages; i++) hash(dst.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
    best = Math.min(best, performance.now() - t);
  }
  const buffered = best / pages;
  let read = 0;
  const t = performance.now();
  try {
    for (const run of own?.runs ?? []) {
      // As hashPages reads a chunk, into a buffer already touched (a new one would measure its page faults).
      const [got] = own!.reader.readRanges([{ addr: run.addr, pages: Math.min(run.pages, pages) }], dst);
      for (let i = 0; i < got; i++) hash(dst.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      read += got;
    }
  } catch {
    return buffered;
  }
  const ms = performance.now() - t;
  return read >= pages ? Math.max(buffered, ms / read) : buffered;
}

/**
 * Runs of pages spread evenly over the live pages of `layout` (for calibrateHashMs): up to
 * `runs` of up to `pages` pages each, each within one mapping.
 */
export function calibrationRuns(
  layout: ReadonlyArray<{ start: number; pages: number }>,
  runs = CALIBRATION_RUNS,
  pages = RUN_PAGES,
): { addr: number; pages: number }[] {
  const live = layout.reduce((n, m) => n + m.pages, 0);
  const step = Math.max(pages, live / runs);
  const out: { addr: number; pages: number }[] = [];
  let base = 0; // live pages before mapping m
  let next = 0; // where the next run starts, as a live page number
  for (const m of layout) {
    for (; next < base + m.pages && out.length < runs; next += step) {
      const at = Math.floor(next - base);
      out.push({ addr: m.start + at * PAGE_SIZE, pages: Math.min(pages, m.pages - at) });
    }
    base += m.pages;
  }
  return out;
}

/** --verify auto: full where it fits the downtime limit comfortably, incremental where it would not. */
export interface VerifyChoice {
  mode: VerifyMode;
  /** Why, in a sentence (for the log and the report). */
  reason: string;
}

/**
 * Full verification proves the dirty tracker right as well as the transfer, so auto takes it
 * whenever it is forecast to cost at most a quarter of the downtime limit (the forecast is of a
 * quiet machine; a busy one takes up to twice as long); without a limit, always.
 */
export function chooseVerify(
  requested: VerifyMode | 'auto',
  limitMs: number | undefined,
  pages: number,
  hashMsPerPage: number,
): VerifyChoice {
  if (requested !== 'auto') return { mode: requested, reason: `--verify ${requested}` };
  if (limitMs === undefined) return { mode: 'full', reason: 'no downtime limit' };
  const fullMs = fullVerifyMs(pages, hashMsPerPage);
  return fullMs <= limitMs / 4
    ? { mode: 'full', reason: `a full check, about ${fullMs.toFixed(0)} ms, fits a quarter of the ${limitMs} ms limit` }
    : { mode: 'incremental', reason: `a full check would take about ${fullMs.toFixed(0)} ms, over a quarter of the ${limitMs} ms limit` };
}

function threadCount(pid: number): number {
  try {
    return threadsOf(pid).length;
  } catch {
    return 1; // gone: the forecast no longer matters
  }
}
