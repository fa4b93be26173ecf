import fs from 'node:fs';
import path from 'node:path';
import { MessageType, packMap, processState, release, type Message, type MessageChannel } from '@forecopy/protocol';
import { captureState, findBlockers, prepareDir, readProcStat, type CapturedProcess, type FrozenProcess } from '@forecopy/linux';
import { pageHasher } from '../checksum.js';
import { InDoubtError, InputError, NotMigratableError, ProcessError } from '../errors.js';
import { processGone } from '../errno-map.js';
import { askOnNewConnection } from './connect.js';
import type { HeldProcess } from './release.js';
import type { MigrationSession } from './session.js';

// The source's part of a restore at the destination:
// - before the first page: what cannot move is named and the migration refused (blockers);
// - frozen, after the final round: the process's state is captured and sent (ProcessState),
//   and its hash goes with the checksums, so verification covers it as it covers the pages;
// - after Committed (the destination restored the process and holds it stopped): this copy is
//   killed, and only once it is gone does Release let the other one run. A record of the session
//   (pid and start time of the original) lets `forecopy-source resolve` finish a handover that
//   this agent could not (it died, or the destination became unreachable).

/** Refuses, naming each, what a restore could not carry. Nothing has moved yet. */
export function refuseBlockers(s: MigrationSession): void {
  const blockers = findBlockers(s.opts.pid, { ignoreFds: new Set(s.tracking.tracker.installedFds()), ourPid: process.pid });
  if (blockers.length > 0)
    throw new NotMigratableError(
      s.opts.pid,
      blockers.map((b) => b.message),
    );
}

/** Captures the state of the frozen process, after checking again for what cannot move. */
export function captureProcess(s: MigrationSession, frozen: FrozenProcess): CapturedProcess {
  refuseBlockers(s); // it may have made a child or opened a socket since Hello
  const ignoreFds = new Set(s.tracking.tracker.installedFds());
  try {
    return captureState(frozen, { ignoreFds });
  } catch (e) {
    throw new ProcessError(`could not capture the state of process ${s.opts.pid}: ${(e as Error).message}`, { cause: e });
  }
}

/** Sends the captured state; returns its hash (xxh64, hex). */
export async function sendProcessState(s: MigrationSession, captured: CapturedProcess): Promise<string> {
  const state = captured.state as unknown as Record<string, unknown>;
  await s.channel.send(processState({ state }, captured.contents));
  return stateHash(packMap(state), captured.contents);
}

/** xxh64 over the packed state and the contents, as 16 hex digits. */
export async function stateHash(packed: Buffer, contents: Buffer): Promise<string> {
  const hash = await pageHasher();
  return hash(Buffer.concat([packed, contents]))
    .toString(16)
    .padStart(16, '0');
}

/** What the source keeps of a handover in progress, for `forecopy-source resolve`. */
export interface SessionRecord {
  sessionId: string;
  pid: number;
  /** Field 22 of /proc/PID/stat: tells the original from a later process with the same pid. */
  startTime: number;
  destination: string;
  at: string;
}

export function recordPath(stateDir: string, sessionId: string): string {
  return path.join(stateDir, `${sessionId}.json`);
}

export function writeRecord(stateDir: string, r: SessionRecord): void {
  const unusable = prepareDir(stateDir);
  if (unusable !== null) throw new InputError(`cannot record the handover in --state-dir ${stateDir}: ${unusable}`);
  const file = recordPath(stateDir, r.sessionId);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(r, null, 2));
  fs.renameSync(`${file}.tmp`, file);
}

export function removeRecord(stateDir: string, sessionId: string): void {
  fs.rmSync(recordPath(stateDir, sessionId), { force: true });
}

/** The record of this migration's handover, written before Commit. */
export function recordOf(s: MigrationSession): SessionRecord {
  const { opts } = s;
  return {
    sessionId: s.sessionId,
    pid: opts.pid,
    startTime: readProcStat(opts.pid).field(22),
    destination: `${opts.host}:${opts.port}`,
    at: new Date().toISOString(),
  };
}

/**
 * After Committed(restoredPid): the restored copy waits, stopped, until this one is gone, so
 * there are never two running. Kills the original, waits until it is gone, sends Release.
 */
export async function handOverRestored(s: MigrationSession, restoredPid: number, held: HeldProcess): Promise<void> {
  if (s.opts.dieWhenRestored) process.kill(process.pid, 'SIGKILL');
  held.finish('kill');
  await waitGone(s.opts.pid);
  await releaseRestored(s, restoredPid);
  removeRecord(s.opts.stateDir, s.sessionId);
}

/** Waits (up to `ms`) until the killed original is gone or a zombie: it runs no more. */
export async function waitGone(pid: number, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!processGone(pid)) {
    if (performance.now() > deadline) throw new ProcessError(`process ${pid} was killed but is still there after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

/**
 * Release: the destination lets the restored process run. Asked on the migration's connection,
 * then on new ones until the timeout; InDoubtError (exit 9) when the destination cannot be
 * reached or answers otherwise, naming the resolve command: the original is gone by now, and the
 * copy there stays stopped until it is run.
 */
export async function releaseRestored(s: MigrationSession, restoredPid: number): Promise<void> {
  const { sessionId } = s;
  const answer = await s.channel
    .send(release({ sessionId }))
    .then(() => s.channel.expect(MessageType.Resolved, s.replyTimeoutMs))
    .catch(() => null); // any failure here: ask again on a new connection
  const resolved =
    answer ??
    (await askOnNewConnection(
      s.opts,
      s.replyTimeoutMs,
      (ch, left) => ask(ch, sessionId, left),
      () => {},
    ));
  if (!resolved) {
    throw new InDoubtError(
      `the process was restored at ${s.opts.host}:${s.opts.port} (pid ${restoredPid}, held stopped there) and its copy here is gone, but the destination could not be told to run it: run forecopy-source resolve --session ${sessionId} --to ${s.opts.host}:${s.opts.port}`,
    );
  }
  if (!resolved.header.running) {
    throw new InDoubtError(`the destination did not run the restored process: ${resolved.header.reason} (session ${sessionId})`);
  }
}

type Resolved = Extract<Message, { type: MessageType.Resolved }>;

async function ask(channel: MessageChannel, sessionId: string, left: () => number): Promise<Resolved> {
  await channel.send(release({ sessionId }));
  return channel.expect(MessageType.Resolved, left());
}
