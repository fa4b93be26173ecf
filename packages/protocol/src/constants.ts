/** Wire constants of the forecopy protocol. */
export const MAGIC = 'FCPY';
export const PROTOCOL_VERSION = 1;
/** Versions this build accepts: its own and the one before (there is none before 1 yet). */
export const SUPPORTED_VERSIONS: readonly number[] = [1];
export const PAGE_SIZE = 4096;

/** u32 frame length + u8 type + u32 header length. */
export const FRAME_PREFIX_BYTES = 9;
/** A frame holds at most 1024 raw pages and a header: 4 MiB + room. */
export const MAX_FRAME_BYTES = 8 * 1024 * 1024;
/** A header is a msgpack map; the largest is a Hello with a big layout. */
export const MAX_HEADER_BYTES = 1024 * 1024;
export const MAX_PAGES_PER_BATCH = 1024;

/**
 * Pages per batch when `--batch-pages` is not given: a batch lasts on the wire about as long as
 * 256 pages do at 500 Mbit/s (17 ms: the per-batch skip and the pacer act once a batch), and
 * holds 256 pages at least; unpaced (0), the most. Each batch costs some 0.3 ms of CPU over the
 * two agents (lz4's estimate, the ack, the header), so on a fast link larger batches move memory
 * faster (BENCHMARKS.md, line rate). The simulator sizes its batches the same way.
 */
export function defaultBatchPages(bandwidthBps: number): number {
  if (!(bandwidthBps > 0)) return MAX_PAGES_PER_BATCH;
  return Math.min(MAX_PAGES_PER_BATCH, Math.max(256, Math.round((256 * bandwidthBps) / 500e6)));
}
export const MAX_RANGES_PER_BATCH = 1024;
export const MAX_MAPPINGS = 4096;
export const MAX_MISMATCH_PAGES = 16;
/** Connections one migration may send pages on (`--streams`), its own included. */
export const MAX_STREAMS = 16;
/** Checksums of at most this many pages in one frame. */
export const MAX_CHECKSUMS_PER_FRAME = 65536;
/** lz4 block worst case for one page (LZ4_COMPRESSBOUND) plus lz4-napi's 4-byte size prefix. */
export const LZ4_PAGE_BOUND = PAGE_SIZE + Math.floor(PAGE_SIZE / 255) + 16 + 4;

/** How a page travels in a PageBatch. */
export const PAGE_KIND = Object.freeze({ RAW: 0, LZ4: 1, ZERO: 2 } as const);
export type PageKind = (typeof PAGE_KIND)[keyof typeof PAGE_KIND];
