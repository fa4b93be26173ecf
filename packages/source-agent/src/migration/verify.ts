import { writeFileSync } from 'node:fs';
import { MessageType, PAGE_SIZE, checksums, digest, type MismatchHeader } from '@forecopy/protocol';
import { PageReader, type FrozenProcess } from '@forecopy/linux';
import { hashPages } from '../checksum.js';
import { ConnectionError, DestinationAbortError, VerificationError } from '../errors.js';
import { asChannelError } from '../errno-map.js';
import type { MigrationReport } from '../report.js';
import type { PageTrace } from '../debug-pages.js';
import type { MigrationSession } from './session.js';

/** Pages a Checksums message covers at most. */
const CHECKSUM_CHUNK = 16384;

export type Mismatch = NonNullable<MigrationReport['mismatch']>;

export interface Verification {
  /** From the first checksum to the destination's answer. */
  verifyMs: number;
  /** performance.now() when the answer came. */
  answeredAt: number;
  /** The pages that differ, when the destination found any. */
  mismatch: Mismatch | null;
}

/**
 * Verification, full: hashes the frozen process's memory (xxh64 per page) and sends the
 * checksums; the destination compares them with its image. Incremental: one digest over the
 * hashes of the pages as they were sent (PageHashes), which the destination compares with the
 * digest of the pages as it wrote them. Either way it answers Verified or Mismatch. A mismatch of
 * pages is located (address and mapping of the first pages) and, with FORECOPY_DEBUG_PAGES, the
 * history of those pages written out. Abort or any other answer ends the migration.
 */
export async function verify(s: MigrationSession, frozen: FrozenProcess, hashed: FrozenHashes | null = null): Promise<Verification> {
  const t = performance.now();
  s.opts.onProgress?.({ phase: 'verify', pages: s.tracking.space.livePages });
  if (s.sender.sentHashes) await sendDigest(s, s.sender.sentHashes);
  else await sendChecksums(s, hashed ?? hashFrozen(s, frozen));
  const answer = await s.channel.next(s.replyTimeoutMs).catch((e) => {
    throw asChannelError(e);
  });
  const answeredAt = performance.now();
  const verifyMs = answeredAt - t;
  if (answer.type === MessageType.Mismatch) {
    if (s.trace) writePageHistory(s, s.trace, new PageReader(frozen.pid), answer.header.firstPages);
    return { verifyMs, answeredAt, mismatch: locate(s, answer.header) };
  }
  if (answer.type === MessageType.Abort) throw new DestinationAbortError(`the destination aborted: ${answer.header.reason}`);
  if (answer.type !== MessageType.Verified) {
    throw new ConnectionError(`the destination answered ${MessageType[answer.type]} instead of Verified or Mismatch`);
  }
  return { verifyMs, answeredAt, mismatch: null };
}

/** The error a mismatch ends the migration with; the report (with its `mismatch`) goes along. */
export function mismatchError(report: MigrationReport, mismatch: Mismatch): VerificationError {
  const { pages, where = [] } = mismatch;
  const first = where.slice(0, 4).map((w) => (w.address ? `${w.page} at ${w.address} in ${w.mapping}` : String(w.page)));
  const what = [
    ...(pages > 0 ? [`${pages} pages that differ from the frozen source (first: ${first.join(', ')})`] : []),
    ...(mismatch.digest ? ['an image that differs from the pages sent (the digests of the page hashes differ)'] : []),
    ...(mismatch.state ? ['a process state (registers, mappings, files) that differs from the one sent'] : []),
  ];
  return new VerificationError(`the destination found ${what.join(' and ')}; the process was left running here`, report);
}

async function sendDigest(s: MigrationSession, sent: NonNullable<MigrationSession['sender']['sentHashes']>): Promise<void> {
  const { digest: value, pages } = sent.hashes.digest(s.tracking.space.list(), sent.h64);
  await s.channel.send(
    digest({ algorithm: 'xxh64-of-page-hashes', pages, digest: value, ...(s.stateHash ? { stateHash: s.stateHash } : {}) }),
  );
}

/** The frozen process's page hashes, chunk by chunk as the Checksums messages carry them; each chunk's as it is made. */
export interface FrozenHashes {
  chunks: Array<{ firstPage: number; count: number; hashes: Promise<Buffer> }>;
  /** Stops the hashing (a migration that ends before its verification). */
  cancel(): void;
}

/**
 * Hashes the frozen process's memory for full verification.
 * Started once the frozen process's last writes are collected (migrate()): from then on its
 * pages and mappings do not change, so their hashes are computed while the final round is on
 * the wire rather than after it (bzip2 at 500 Mbit/s: 7-16 ms of the downtime before). Chunk
 * after chunk, yielding to the sender between every 256 pages; verify() sends each chunk's
 * checksums as soon as it is hashed, so the destination compares one while the next is hashed.
 * A failure surfaces when verify() awaits that chunk; a migration that ends first cancels it
 * (migrate()), so a failed one does not go on reading for seconds.
 */
export function hashFrozen(s: MigrationSession, frozen: FrozenProcess): FrozenHashes {
  const reader = new PageReader(frozen.pid);
  const chunks: FrozenHashes['chunks'] = [];
  const state = { cancelled: false };
  let before: Promise<unknown> = Promise.resolve();
  for (const seg of s.tracking.space.list()) {
    for (let first = 0; first < seg.pages; first += CHECKSUM_CHUNK) {
      const count = Math.min(CHECKSUM_CHUNK, seg.pages - first);
      const hashes = before.then(() => hashPages(reader, seg.start + first * PAGE_SIZE, count, state));
      hashes.catch(() => {}); // handled where verify() awaits it
      chunks.push({ firstPage: seg.indexBase + first, count, hashes });
      before = hashes;
    }
  }
  return { chunks, cancel: () => (state.cancelled = true) };
}

async function sendChecksums(s: MigrationSession, hashed: FrozenHashes): Promise<void> {
  // The hash of the process state (restore) rides on the first message.
  let stateHash = s.stateHash ?? undefined;
  for (const { firstPage, count, hashes } of hashed.chunks) {
    await s.channel.send(checksums({ algorithm: 'xxh64', firstPage, count, ...(stateHash ? { stateHash } : {}) }, await hashes));
    stateHash = undefined;
  }
}

/** Where the first differing pages are in the process: address and mapping (perms and path). */
function locate(s: MigrationSession, m: MismatchHeader): Mismatch {
  const { space } = s.tracking;
  const where = m.firstPages.map((p) => {
    const seg = space.segmentOfIndex(p);
    return seg
      ? { page: p, address: `0x${space.addressOf(p).toString(16)}`, mapping: `${seg.prot} ${seg.name || '[anon]'}` }
      : { page: p, address: null, mapping: null };
  });
  return {
    pages: m.mismatched,
    firstPages: m.firstPages,
    where,
    ...(m.state ? { state: true } : {}),
    ...(m.digest ? { digest: true } : {}),
  };
}

/**
 * FORECOPY_DEBUG_PAGES: for each differing page, what it holds now (the process is still frozen)
 * next to what was sent of it and when the tracker last reported it written.
 */
function writePageHistory(s: MigrationSession, trace: PageTrace, reader: PageReader, pages: number[]): void {
  const { space, sampler } = s.tracking;
  const buf = Buffer.alloc(PAGE_SIZE);
  const rows = pages.map((p) => {
    const seg = space.segmentOfIndex(p);
    const read = seg ? reader.readRanges([{ addr: space.addressOf(p), pages: 1 }], buf)[0] : 0;
    return {
      page: p,
      segment: seg ? { id: seg.id, start: `0x${seg.start.toString(16)}`, pages: seg.pages, indexBase: seg.indexBase } : null,
      frozenHash: read ? trace.hash(buf).toString(16) : null,
      ...trace.history(p),
    };
  });
  try {
    writeFileSync(trace.file, JSON.stringify({ scans: sampler.scans.count, rounds: s.rounds.length, pages: rows }, null, 2));
  } catch (e) {
    s.log.error({ err: (e as Error).message }, `could not write FORECOPY_DEBUG_PAGES=${trace.file}`);
  }
}
