import { randomBytes } from 'node:crypto';
import type { Policy } from '@forecopy/filter';
import {
  MessageType,
  PAGE_SIZE,
  PROTOCOL_VERSION,
  PageHashes,
  SOURCE_UNSET,
  hello as helloMessage,
  streamJoin,
  type HelloAckHeader,
  type MessageChannel,
} from '@forecopy/protocol';
import { PageReader, previewRestore } from '@forecopy/linux';
import { InputError } from '../errors.js';
import { PageSender } from '../sender.js';
import { pageHasher } from '../checksum.js';
import { asChannelError } from '../errno-map.js';
import type { PageTrace } from '../debug-pages.js';
import type { Tracking } from '../tracking.js';
import { replyTimeoutOf, type MigrateOptions } from './options.js';
import type { MigrationSession } from './session.js';
import type { AutoConverge } from './auto-converge.js';
import { DowntimeForecast, calibrateHashMs, calibrationRuns, chooseVerify } from './downtime-forecast.js';
import { connect } from './connect.js';
import { DEFAULT_CONNECT_TIMEOUT_MS } from './options.js';

/** What the steps before Hello made. */
export interface HelloInput {
  opts: MigrateOptions;
  channel: MessageChannel;
  tracking: Tracking;
  trace: PageTrace | null;
  policy: Policy;
  autoConverge: AutoConverge | null;
}

/**
 * Hello: announces a new session, the policy and the layout of the page space; the destination
 * creates its image and answers HelloAck with the sender's first credit. Returns the session the
 * remaining steps share.
 */
export async function hello(h: HelloInput): Promise<MigrationSession> {
  const { opts, channel, tracking, trace, policy } = h;
  const { space } = tracking;
  const replyTimeoutMs = replyTimeoutOf(opts);
  const sessionId = randomBytes(16).toString('hex');
  // The layout the Hello announces. The sampler runs on while we wait for the answer, and may
  // change the space meanwhile: round 1 announces whatever is newer than this.
  const announcedLayout = space.layoutVersion;
  // Calibrated on the process's own pages, read as a full check reads them (with the reader
  // the sender then uses).
  const reader = new PageReader(opts.pid);
  const hashMsPerPage = await calibrateHashMs({ reader, runs: calibrationRuns(space.layout()) });
  const verify = chooseVerify(opts.verify ?? 'auto', opts.stopRules.downtimeLimitMs, space.livePages, hashMsPerPage);
  opts.log.info({ verify: verify.mode, why: verify.reason }, 'verification');
  await channel.send(
    helloMessage({
      magic: 'FCPY',
      version: PROTOCOL_VERSION,
      sessionId,
      pageSize: PAGE_SIZE,
      totalPages: space.totalPages,
      policy: policy.name,
      layout: space.layout(),
      restore: previewRestore(opts.pid) as unknown as Record<string, unknown>,
      verify: verify.mode,
      ...((opts.streams ?? 1) > 1 ? { streams: opts.streams } : {}),
    }),
  );
  const ack = await channel.expect(MessageType.HelloAck, replyTimeoutMs).catch((e) => {
    throw asChannelError(e);
  });
  const restore = ack.header.restore === true;
  checkFate(opts, restore);
  const sender = new PageSender(channel, reader, space, {
    batchPages: opts.batchPages,
    bandwidthBps: opts.bandwidthBps,
    compress: opts.compress,
    creditTimeoutMs: replyTimeoutMs,
  });
  sender.grant(ack.header.credit);
  await joinStreams(opts, sender, sessionId, ack.header, replyTimeoutMs);
  sender.trace = trace;
  if (verify.mode === 'incremental') sender.sentHashes = { hashes: new PageHashes(SOURCE_UNSET), h64: await pageHasher() };
  return {
    opts,
    log: opts.log,
    channel,
    replyTimeoutMs,
    tracking,
    policy,
    sessionId,
    sender,
    trace,
    totals: { pagesSent: 0, pagesResent: 0, bytesSent: 0, zeroPages: 0, lz4Pages: 0 },
    rounds: [],
    announcedLayout,
    pageRate: opts.bandwidthBps > 0 ? opts.bandwidthBps / 8 / PAGE_SIZE : 0,
    wireRate: 0,
    restore,
    stateHash: null,
    stopCopyParts: {},
    autoConverge: h.autoConverge,
    verify,
    forecast: new DowntimeForecast({
      pid: opts.pid,
      restore,
      verify: verify.mode,
      livePages: () => space.livePages,
      scanMs: () => (tracking.sampler.scans.count > 0 ? tracking.sampler.scans.totalMs / tracking.sampler.scans.count : 0),
      hashMsPerPage,
    }),
  };
}

/**
 * The extra connections the destination accepted (HelloAck.streams, at most --streams): each
 * opens as the session's own did (TCP or TLS), names the session and its token in StreamJoin,
 * and becomes a lane of the sender with the credit its HelloAck grants.
 */
async function joinStreams(
  opts: MigrateOptions,
  sender: PageSender,
  sessionId: string,
  ack: HelloAckHeader,
  replyTimeoutMs: number,
): Promise<void> {
  const streams = Math.min(ack.streams ?? 1, opts.streams ?? 1);
  if (streams <= 1 || !ack.streamToken) return;
  const token = ack.streamToken;
  const tries = await Promise.allSettled(
    Array.from({ length: streams - 1 }, async (_, i) => {
      const ch = await connect(opts, opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS, replyTimeoutMs);
      try {
        await ch.send(streamJoin({ sessionId, token, stream: i + 1 }));
        const a = await ch.expect(MessageType.HelloAck, replyTimeoutMs);
        return { ch, credit: a.header.credit };
      } catch (e) {
        ch.destroy();
        throw asChannelError(e);
      }
    }),
  );
  const failed = tries.find((t) => t.status === 'rejected');
  if (failed) {
    for (const t of tries) if (t.status === 'fulfilled') t.value.ch.destroy();
    throw failed.reason;
  }
  for (const t of tries) if (t.status === 'fulfilled') sender.addStream(t.value.ch, t.value.credit);
  opts.log.info({ streams }, 'pages go out on several connections');
}

/**
 * Exactly one running copy at the end: a destination that restores needs the copy here to go
 * (--after kill); one that keeps only an image must not end with none running unless asked by
 * name (--image-only).
 */
function checkFate(opts: MigrateOptions, restore: boolean): void {
  const dest = `${opts.host}:${opts.port}`;
  if (restore && opts.imageOnly) {
    throw new InputError(
      `the destination ${dest} restores processes (forecopy-dest listen --restore), and --image-only asks for an image only: start it without --restore`,
    );
  }
  if (restore && opts.after !== 'kill') {
    throw new InputError(
      `the destination ${dest} restores the process: --after ${opts.after} would leave two running copies; use --after kill (the default)`,
    );
  }
  if (!restore && opts.after === 'kill' && !opts.imageOnly) {
    throw new InputError(
      `the destination ${dest} keeps only a memory image (it was not started with --restore): --after kill would leave no running copy of the process; restore there (forecopy-dest listen --restore), keep the process here (--after resume or stop), or ask for an image only (--image-only)`,
    );
  }
}
