import { PAGE_SIZE } from '@forecopy/protocol';

/** A round shorter than this does not measure the link's rate (QEMU's BUFFER_DELAY). */
export const MEASURE_MS = 100;

export interface LinkRate {
  /** Pages a second the rest of the migration is forecast to go at (0: not known yet). */
  pageRate: number;
  /** The most bytes a second the link has carried in a round that measured it. */
  wireRate: number;
}

/**
 * The link's rate after a round that sent `pagesSent` pages as `bytesOnWire` bytes in
 * `durationMs`, from the rate before it; `bandwidthBps` is --bandwidth (0: unpaced).
 *
 * What the rest will take is forecast as if its pages did not compress: the pages written again
 * are the live data, which compresses less than a first round's zeros and fresh allocations
 * (MariaDB's final round went at 40% of round 1's page rate). So the rate is the lowest of the
 * pages a second measured, and, in whole pages, the most bytes a second the link has carried so
 * far and --bandwidth (the pacer lets a short round burst above it).
 *
 * A round too short to measure the link keeps the rate known before it (--bandwidth's, or an
 * earlier round's), as QEMU measures its bandwidth over at least 100 ms: its time is mostly the
 * round trip, and its bytes may be a few pages that compress to almost nothing. Live: forecast's
 * round 1 on bzip2 sent 284 pages (most of them zero pages), 9,090 bytes on the wire in 11 ms,
 * read as 6 Mbit/s of a 500 Mbit/s link; the rest (1,630 pages) was forecast to take 8.4 s, and a
 * round that was not needed followed. Without a rate yet, any round measures it.
 */
export function measureLink(
  before: LinkRate,
  round: { pagesSent: number; bytesOnWire: number; durationMs: number },
  bandwidthBps: number,
): LinkRate {
  const { pagesSent, bytesOnWire, durationMs } = round;
  if (!(pagesSent > 0 && durationMs > 0)) return before;
  if (durationMs < MEASURE_MS && before.pageRate > 0) return before;
  const wireRate = Math.max(before.wireRate, (bytesOnWire / durationMs) * 1000);
  const paced = bandwidthBps > 0 ? bandwidthBps / 8 : Number.POSITIVE_INFINITY;
  return { wireRate, pageRate: Math.min((pagesSent / durationMs) * 1000, Math.min(wireRate, paced) / PAGE_SIZE) };
}
