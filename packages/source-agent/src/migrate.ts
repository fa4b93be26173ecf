import net from 'node:net';
import tls from 'node:tls';
import os from 'node:os';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  MarkovPolicy,
  PageBitmap,
  PrecopyDriver,
  type Policy,
  type RoundPlan,
  type StopRules,
} from '@forecopy/filter';
import {
  MessageChannel,
  MessageType,
  PAGE_SIZE,
  PROTOCOL_VERSION,
  abort,
  checksums,
  commit,
  hello,
  query,
  PeerAbortError,
  type Security,
  roundEnd,
  roundStart,
  stopAndCopy,
} from '@forecopy/protocol';
import { randomBytes } from 'node:crypto';
import {
  Freezer,
  PageReader,
  sleepSync,
  createTracker,
  isMigratable,
  readMaps,
  type DirtyTracker,
  type FrozenProcess,
} from '@forecopy/linux';
import { PageSpace } from './page-space.js';
import { Sampler } from './sampler.js';
import { PageSender } from './sender.js';
import { hashPages, pageHasher } from './checksum.js';
import { PageTrace } from './debug-pages.js';
import {
  ConnectionError,
  DestinationAbortError,
  InDoubtError,
  ProcessError,
  ProcessExitedError,
  SourceError,
  TrackingError,
  VerificationError,
} from './errors.js';
import type { MigrationReport, RoundReport } from './report.js';
import type { UiEvent } from './ui-server.js';

export type AfterAction = 'kill' | 'stop' | 'resume';

export interface MigrateOptions {
  pid: number;
  host: string;
  port: number;
  stopRules: StopRules;
  /** Bits per second; 0 = unpaced. */
  bandwidthBps: number;
  after: AfterAction;
  intervalMs: number;
  compress: boolean;
  batchPages: number;
  tracker: 'auto' | 'uffd-wp' | 'soft-dirty';
  /**
   * Makes the policy once tracking runs. It may sample the process first (modelling) through the
   * sampler it is given.
   */
  makePolicy: (ctx: PolicyContext) => Promise<Policy>;
  log: Logger;
  onProgress?: (p: Progress) => void;
  connectTimeoutMs?: number;
  /** How long to wait for any answer of the destination. */
  replyTimeoutMs?: number;
  /** Mutual TLS or a pre-shared key; null/undefined = plain TCP. */
  security?: Security | null;
  /** Live events for the dashboard (--ui). */
  onEvent?: (e: UiEvent) => void;
  /** Fault injection for tests: the agent dies (SIGKILL) right after freezing the process. */
  dieWhenFrozen?: boolean;
}

export interface PolicyContext {
  sampler: Sampler;
  space: PageSpace;
  log: Logger;
  onProgress?: (p: Progress) => void;
}

export type Progress =
  | { phase: 'modelling'; doneMs: number; totalMs: number; samples: number }
  | { phase: 'round'; round: number; pagesSent: number; pagesPlanned: number; final: boolean }
  | { phase: 'verify'; pages: number };

/**
 * One live migration, source side. The order of the steps is what keeps the process safe:
 * nothing touches the process before the destination has answered Hello, and until the
 * destination confirms the checksums, every failure leaves the process running with all
 * tracking removed.
 */
export async function migrate(opts: MigrateOptions): Promise<MigrationReport> {
  const { pid, log } = opts;
  const startedAt = new Date().toISOString();
  let t0 = performance.now();
  const replyTimeout = opts.replyTimeoutMs ?? 60_000;
  checkProcess(pid);

  const channel = await connect(opts.host, opts.port, opts.connectTimeoutMs ?? 5000, opts.security ?? null, replyTimeout);
  let tracker: DirtyTracker | null = null;
  let sampler: Sampler | null = null;
  let frozen: FrozenProcess | null = null;
  let sender: PageSender | null = null;
  let confirmed = false;
  try {
    // Tracking starts before the first page is read (design.md: order is correctness).
    const mappings = readMapsOf(pid).filter(isMigratable);
    try {
      tracker = createTracker(pid, opts.tracker);
      tracker.start(mappings);
    } catch (e) {
      tracker = null;
      throw asSourceError(e, pid);
    }
    const space = new PageSpace(PAGE_SIZE);
    space.reconcile(mappings);
    sampler = new Sampler(pid, tracker, space, opts.intervalMs);
    const debugFile = process.env.FORECOPY_DEBUG_PAGES;
    const trace = debugFile ? new PageTrace(debugFile, await pageHasher()) : null;
    sampler.trace = trace;
    log.info({ pid, tracker: tracker.kind, pages: space.livePages, mappings: space.list().length }, 'tracking started');

    const sessionId = randomBytes(16).toString('hex');
    sampler.start();
    const mt = performance.now();
    const policy = await opts.makePolicy({ sampler, space, log, onProgress: opts.onProgress });
    // Modelling comes before the migration proper (the paper builds its model in normal
    // operation): it is reported as modelMs, and totalMs starts after it.
    const modelMs = performance.now() - mt;
    t0 = performance.now();
    sampler.onSample((s) => policy.observeSample?.(s.pages, s.atMs));
    const emit = opts.onEvent;
    if (emit) {
      emit({ type: 'hello', pid, policy: policy.name, pages: space.livePages, buckets: UI_BUCKETS });
      sampler.onSample((s) => emit(sampleEvent(s.pages, s.atMs, policy)));
    }

    // The layout the Hello announces. The sampler runs on while we wait for the answer, and may
    // change the space meanwhile: round 1 announces whatever is newer than this.
    const helloLayoutVersion = space.layoutVersion;
    await channel.send(
      hello({
        magic: 'FCPY',
        version: PROTOCOL_VERSION,
        sessionId,
        pageSize: PAGE_SIZE,
        totalPages: space.totalPages,
        policy: policy.name,
        layout: space.layout(),
      }),
    );
    const ack = await channel.expect(MessageType.HelloAck, replyTimeout).catch((e) => {
      throw asChannelError(e);
    });
    sender = new PageSender(channel, new PageReader(pid), space, {
      batchPages: opts.batchPages,
      bandwidthBps: opts.bandwidthBps,
      compress: opts.compress,
      creditTimeoutMs: replyTimeout,
    });
    sender.grant(ack.header.credit);
    sender.trace = trace;

    // Round 1 sends everything there is: writes so far need no record. The scan that take()
    // makes may add mappings, so the driver is sized after it, or round 1 would miss them.
    sampler.take();
    const driver = new PrecopyDriver(space.totalPages, opts.stopRules, policy);
    const rounds: RoundReport[] = [];
    let pageRate = opts.bandwidthBps > 0 ? opts.bandwidthBps / 8 / PAGE_SIZE : 0;
    let announced = helloLayoutVersion;
    const totals = { pagesSent: 0, bytesSent: 0, zeroPages: 0, lz4Pages: 0 };

    let plan: RoundPlan = driver.firstRound({ pageRate, nowMs: sampler.now() });
    let stop: { reason: string; remaining: PageBitmap };
    for (;;) {
      const rt = performance.now();
      const layoutChanged = space.layoutVersion !== announced;
      announced = space.layoutVersion;
      await channel.send(
        roundStart({
          round: plan.round,
          final: false,
          plannedPages: plan.send.count(),
          ...(layoutChanged ? { layout: space.layout() } : {}),
        }),
      );
      const skipFn = policy.skipRedirtied ? () => sampler!.peek(10) : undefined;
      const res = await sender.sendPages(plan.round, plan.send, skipFn);
      let dirtied = sampler.take();
      for (const p of res.unreadable) if (p < dirtied.size) dirtied.set(p);
      await channel.send(roundEnd({ round: plan.round, pagesSent: res.pagesSent, batches: res.batches }));
      await expectRoundAck(channel, plan.round, replyTimeout);
      const durationMs = performance.now() - rt;
      if (res.pagesSent > 0 && durationMs > 0) pageRate = (res.pagesSent / durationMs) * 1000;
      // The space may have grown while we waited for the acknowledgement (the sampler runs on).
      driver.resize(space.totalPages);
      if (dirtied.size !== space.totalPages) dirtied = dirtied.resized(space.totalPages);
      dirtied.and(space.live);
      totals.pagesSent += res.pagesSent;
      totals.bytesSent += res.bytesOnWire;
      totals.zeroPages += res.zeroPages;
      totals.lz4Pages += res.lz4Pages;
      const decision = driver.endRound(
        { pagesSent: res.pagesSent, pagesSkipped: res.pagesSkipped, dirtied, durationMs, pageRate },
        { pageRate, nowMs: sampler.now() },
      );
      const rec = driver.records[driver.records.length - 1];
      rounds.push({
        round: rec.round,
        pagesSent: rec.pagesSent,
        pagesDirtied: rec.pagesDirtied,
        pagesFiltered: rec.pagesFiltered,
        durationMs,
        bytesSent: res.bytesOnWire,
        final: false,
      });
      log.info({ ...rounds[rounds.length - 1] }, 'round done');
      opts.onEvent?.({ type: 'round', ...rounds[rounds.length - 1] });
      opts.onProgress?.({ phase: 'round', round: rec.round, pagesSent: rec.pagesSent, pagesPlanned: rec.pagesPlanned, final: false });
      if (decision.kind === 'stop') {
        stop = decision;
        break;
      }
      plan = decision.plan;
    }

    // Stop-and-copy: freeze, collect the last writes, send what remains.
    sampler.stop();
    const freezeAt = performance.now();
    try {
      frozen = new Freezer().freeze(pid);
    } catch (e) {
      throw asSourceError(e, pid);
    }
    if (opts.dieWhenFrozen) process.kill(process.pid, 'SIGKILL');
    const finalRound = rounds.length + 1;
    const last = sampler.take();
    const remaining = stop.remaining.resized(space.totalPages).or(last).and(space.live);
    const layoutChanged = space.layoutVersion !== announced;
    await channel.send(stopAndCopy({ round: finalRound }));
    await channel.send(
      roundStart({
        round: finalRound,
        final: true,
        plannedPages: remaining.count(),
        ...(layoutChanged ? { layout: space.layout() } : {}),
      }),
    );
    const fr = await sender.sendPages(finalRound, remaining);
    if (fr.unreadable.length > 0) {
      throw new ProcessExitedError(`${fr.unreadable.length} pages of the frozen process could not be read`);
    }
    await channel.send(roundEnd({ round: finalRound, pagesSent: fr.pagesSent, batches: fr.batches }));
    await expectRoundAck(channel, finalRound, replyTimeout);
    const downtimeMs = performance.now() - freezeAt;
    totals.pagesSent += fr.pagesSent;
    totals.bytesSent += fr.bytesOnWire;
    totals.zeroPages += fr.zeroPages;
    totals.lz4Pages += fr.lz4Pages;
    rounds.push({
      round: finalRound,
      pagesSent: fr.pagesSent,
      pagesDirtied: 0,
      pagesFiltered: 0,
      durationMs: downtimeMs,
      bytesSent: fr.bytesOnWire,
      final: true,
    });
    opts.onProgress?.({ phase: 'round', round: finalRound, pagesSent: fr.pagesSent, pagesPlanned: remaining.count(), final: true });
    opts.onEvent?.({ type: 'round', ...rounds[rounds.length - 1] });

    // Verification: hash the frozen memory, the destination compares with its image.
    const vt = performance.now();
    opts.onProgress?.({ phase: 'verify', pages: space.livePages });
    const reader = new PageReader(pid);
    for (const seg of space.list()) {
      for (let first = 0; first < seg.pages; first += CHECKSUM_CHUNK) {
        const count = Math.min(CHECKSUM_CHUNK, seg.pages - first);
        const hashes = await hashPages(reader, seg.start + first * PAGE_SIZE, count);
        await channel.send(checksums({ algorithm: 'xxh64', firstPage: seg.indexBase + first, count }, hashes));
      }
    }
    const answer = await channel.next(replyTimeout).catch((e) => {
      throw asChannelError(e);
    });
    const verifyMs = performance.now() - vt;
    const report: MigrationReport = {
      verified: answer.type === MessageType.Verified,
      downtimeMs,
      totalMs: performance.now() - t0,
      verifyMs,
      modelMs,
      memoryPages: space.livePages,
      pagesSent: totals.pagesSent,
      bytesSent: totals.bytesSent,
      bytesOfMemory: totals.pagesSent * PAGE_SIZE,
      zeroPages: totals.zeroPages,
      lz4Pages: totals.lz4Pages,
      policy: policy.name,
      stopReason: stop.reason,
      tracker: tracker.kind,
      pid,
      destination: `${opts.host}:${opts.port}`,
      after: opts.after,
      scans: { ...sampler.scans },
      rounds,
      policyStatus: policy.status?.(),
      machine: machineNote(),
      startedAt,
    };
    if (answer.type === MessageType.Mismatch) {
      const where = answer.header.firstPages.map((p) => {
        const seg = space.segmentOfIndex(p);
        return seg ? { page: p, address: `0x${space.addressOf(p).toString(16)}`, mapping: `${seg.prot} ${seg.name || '[anon]'}` } : { page: p, address: null, mapping: null };
      });
      report.mismatch = { pages: answer.header.mismatched, firstPages: answer.header.firstPages, where };
      if (trace) {
        // still frozen: what the page holds now, against what we sent and when we last heard of it
        const buf = Buffer.alloc(PAGE_SIZE);
        const rows = answer.header.firstPages.map((p) => {
          const seg = space.segmentOfIndex(p);
          const read = seg ? reader.readRanges([{ addr: space.addressOf(p), pages: 1 }], buf)[0] : 0;
          return { page: p, segment: seg ? { id: seg.id, start: `0x${seg.start.toString(16)}`, pages: seg.pages, indexBase: seg.indexBase } : null, frozenHash: read ? trace.hash(buf).toString(16) : null, ...trace.history(p) };
        });
        try {
          writeFileSync(trace.file, JSON.stringify({ scans: sampler.scans.count, rounds: rounds.length, pages: rows }, null, 2));
        } catch (e) {
          log.error({ err: (e as Error).message }, `could not write FORECOPY_DEBUG_PAGES=${trace.file}`);
        }
      }
      // Not confirmed: the process resumes on the source below.
      throw Object.assign(new VerificationError(`the destination found ${answer.header.mismatched} pages that differ from the frozen source (first: ${where.slice(0, 4).map((w) => (w.address ? `${w.page} at ${w.address} in ${w.mapping}` : String(w.page))).join(', ')}); the process was left running here`), { report });
    }
    if (answer.type === MessageType.Abort) throw new DestinationAbortError(`the destination aborted: ${answer.header.reason}`);
    if (answer.type !== MessageType.Verified) {
      throw new ConnectionError(`the destination answered ${MessageType[answer.type]} instead of Verified or Mismatch`);
    }
    // The handover: only once the destination says the image is final does the process leave
    // this host. If its answer is lost, ask on a new connection; if that fails too, nobody can
    // know here, so the process stays (exit 9 names the session to check on the destination).
    await channel.send(commit({ sessionId }));
    let final: boolean | null = await channel.expect(MessageType.Committed, replyTimeout).then(
      () => true,
      () => null,
    );
    if (final === null) {
      log.info({ session: sessionId }, 'no answer to Commit: asking the destination on a new connection');
      final = await askCommitted(opts, sessionId, replyTimeout, log);
    }
    if (final === false) {
      throw new ConnectionError(`the destination did not make the image final (session ${sessionId}); the process was left running here`);
    }
    if (final === null) {
      throw new InDoubtError(
        `could not learn whether the destination made session ${sessionId} final; the process was left running here: if <image-dir>/${sessionId} exists on the destination, delete it`,
      );
    }
    confirmed = true;
    channel.close();
    finish(opts.after, tracker, frozen);
    tracker = null;
    frozen = null;
    report.totalMs = performance.now() - t0;
    opts.onEvent?.({ type: 'done', verified: true, downtimeMs: report.downtimeMs, totalMs: report.totalMs, pagesSent: report.pagesSent });
    return report;
  } catch (e) {
    const err = asChannelError(asSourceError(e, pid));
    opts.onEvent?.({ type: 'done', verified: false, downtimeMs: 0, totalMs: performance.now() - t0, pagesSent: 0, error: (err as Error).message });
    if (!confirmed && !channel.closed) {
      const reason = err instanceof Error ? err.message : String(err);
      await channel.send(abort({ code: (err as SourceError).code ?? 'E_SOURCE', reason })).catch(() => {});
    }
    channel.destroy();
    throw err;
  } finally {
    sampler?.stop();
    sender?.abort();
    // Every path that did not hand the process over leaves it running, untracked.
    if (tracker || frozen) releaseProcess(tracker, frozen, log, pid);
  }
}

const CHECKSUM_CHUNK = 16384;
const UI_BUCKETS = 64;

/** A sample for the dashboard: pages written per 1/64 of the page space, and the Markov state. */
export function sampleEvent(pages: PageBitmap, atMs: number, policy: Policy | null): UiEvent {
  const hist: number[] = [];
  const step = Math.max(1, Math.ceil(pages.size / UI_BUCKETS));
  for (let b = 0; b < UI_BUCKETS; b++) hist.push(pages.countRange(b * step, (b + 1) * step));
  let state: number | null = null;
  let forecast: number[] = [];
  if (policy instanceof MarkovPolicy) {
    state = policy.currentState();
    forecast = policy.currentModel.forecast(state, 3);
  }
  return { type: 'sample', atMs, hist, state, forecast };
}

/** Query: did the destination make `sessionId` final? true, false, or null when it cannot be asked. */
async function askCommitted(opts: MigrateOptions, sessionId: string, timeoutMs: number, log: Logger): Promise<boolean | null> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    try {
      const ch = await connect(opts.host, opts.port, Math.max(500, deadline - performance.now()), opts.security ?? null, timeoutMs);
      try {
        await ch.send(query({ sessionId }));
        const m = await ch.next(Math.max(500, deadline - performance.now()));
        return m.type === MessageType.Committed && m.header.sessionId === sessionId;
      } catch (e) {
        if (e instanceof PeerAbortError) return false; // the destination's answer: not final, and never will be
        throw e;
      } finally {
        ch.destroy();
      }
    } catch (e) {
      log.info({ err: (e as Error).message }, 'could not ask the destination yet');
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return null;
}

function finish(after: AfterAction, tracker: DirtyTracker, frozen: FrozenProcess): void {
  if (after === 'kill') {
    frozen.kill();
    return;
  }
  tracker.stop(frozen);
  if (after === 'stop') frozen.stopped();
  else frozen.thaw();
}

/** Removes tracking and thaws; never throws (it runs on failure paths). */
function releaseProcess(tracker: DirtyTracker | null, frozen: FrozenProcess | null, log: Logger, pid: number): void {
  try {
    tracker?.stop(frozen);
  } catch (e) {
    // Nothing to remove from a process that is gone.
    if (!processGone(pid)) log.error({ err: (e as Error).message }, 'could not remove tracking from the process');
  }
  try {
    frozen?.thaw();
  } catch (e) {
    log.error({ err: (e as Error).message }, 'could not thaw the process');
  }
}

async function expectRoundAck(channel: MessageChannel, round: number, timeoutMs: number): Promise<void> {
  const ack = await channel.expect(MessageType.RoundAck, timeoutMs).catch((e) => {
    throw asChannelError(e);
  });
  if (ack.header.round !== round) {
    throw new ConnectionError(`the destination acknowledged round ${ack.header.round} while round ${round} was expected`);
  }
}

function checkProcess(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new ProcessError(`--pid must be a positive whole number, got ${pid}`);
  if (pid === process.pid) throw new ProcessError(`pid ${pid} is this agent itself; migrate another process`);
  if (!existsSync(`/proc/${pid}`)) throw new ProcessError(`no process with pid ${pid}`);
}

/** Whether the process is gone within `ms` (an exiting process answers ESRCH before it is a zombie). */
function goneSoon(pid: number, ms: number): boolean {
  for (let t = 0; t <= ms; t += 10) {
    if (processGone(pid)) return true;
    sleepSync(10);
  }
  return false;
}

/** PF_EXITING in /proc/PID/stat's flags (field 9): the process is in exit, tearing down its memory. */
const PF_EXITING = 0x4;

/**
 * Gone, a zombie its parent has not reaped yet, or already exiting (a big process can take a
 * while to release its memory, and answers ptrace with EPERM meanwhile): either way it exited.
 */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' '); // from field 3, the state
    return fields[0] === 'Z' || fields[0] === 'X' || (Number(fields[6]) & PF_EXITING) !== 0;
  } catch {
    return true;
  }
}

function readMapsOf(pid: number) {
  try {
    return readMaps(pid);
  } catch (e) {
    throw asSourceError(e, pid);
  }
}

function connect(host: string, port: number, timeoutMs: number, security: Security | null, sendTimeoutMs: number): Promise<MessageChannel> {
  return new Promise((resolve, reject) => {
    const socket = security ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...security.client }) : net.connect({ host, port });
    socket.setNoDelay(true);
    const t = setTimeout(() => {
      socket.destroy();
      reject(new ConnectionError(`no answer from ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once(security ? 'secureConnect' : 'connect', () => {
      clearTimeout(t);
      socket.removeAllListeners('error');
      resolve(new MessageChannel(socket, { sendTimeoutMs }));
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(t);
      const why =
        e.code === 'ECONNREFUSED'
          ? 'nothing is listening there'
          : security
            ? `the ${security.kind === 'psk' ? 'pre-shared key' : 'TLS'} handshake failed (${e.code ?? e.message}): do both agents use the same ${security.kind === 'psk' ? 'key' : 'CA'}?`
            : e.message;
      reject(new ConnectionError(`cannot connect to the destination ${host}:${port}: ${why}`));
    });
  });
}

function asSourceError(e: unknown, pid: number): Error {
  if (e instanceof SourceError) return e;
  const err = e as { code?: string; message?: string; name?: string };
  if (err.name === 'TrackerUnsupportedError') return new TrackingError(err.message ?? String(e), { cause: e });
  // A process that dies under us can answer ptrace with EPERM and /proc with EACCES as well.
  if (['ESRCH', 'ENOENT', 'EPERM', 'EACCES'].includes(err.code ?? '') && goneSoon(pid, 500)) {
    return new ProcessExitedError(`process ${pid} exited during the migration`, { cause: e });
  }
  if (err.code === 'ESRCH' || err.code === 'ENOENT') {
    return processGone(pid)
      ? new ProcessExitedError(`process ${pid} exited during the migration`, { cause: e })
      : new ProcessError(`process ${pid}: ${err.message}`, { cause: e });
  }
  if (err.code === 'EPERM' || err.code === 'EACCES') {
    return new ProcessError(
      `not permitted to trace process ${pid}: run as root or with CAP_SYS_PTRACE (and the same user), and check /proc/sys/kernel/yama/ptrace_scope`,
      { cause: e },
    );
  }
  return e as Error;
}

function asChannelError(e: unknown): Error {
  if (e instanceof SourceError) return e;
  if (e instanceof PeerAbortError) return new DestinationAbortError(`the destination aborted: ${e.reason}`, { cause: e });
  const err = e as { code?: string; message?: string };
  if (typeof err.code === 'string' && err.code.startsWith('E_')) {
    return new ConnectionError(`the connection to the destination failed: ${err.message}`, { cause: e });
  }
  return e as Error;
}

function machineNote(): MigrationReport['machine'] {
  const cpus = os.cpus().length;
  return {
    cpus,
    note: `measured on ${os.hostname()}, ${cpus} cores shared by the workload, the source and any local destination`,
  };
}
