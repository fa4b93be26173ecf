import { MessageType, PeerAbortError, commit, query } from '@forecopy/protocol';
import { ConnectionError, InDoubtError, RestoreFailedError } from '../errors.js';
import { askOnNewConnection, type Destination } from './connect.js';
import { removeRecord } from './restore.js';
import type { MigrationSession } from './session.js';

/**
 * The handover, once the destination verified its image: Commit, and only when the destination
 * answers Committed (the image is final) may the process leave this host. If that answer is
 * lost, ask on a new connection (Query); if that fails too, nobody can know here, so the process
 * stays (InDoubtError, exit 9, names the session to check on the destination).
 */
export async function handover(s: MigrationSession): Promise<Committed> {
  const { sessionId } = s;
  await s.channel.send(commit({ sessionId }));
  let final: Committed | false | null = await s.channel.expect(MessageType.Committed, s.replyTimeoutMs).then(
    (m) => ({ restoredPid: m.header.restoredPid, restoreMs: m.header.restoreMs }),
    (e) => {
      // The destination's own answer: it could not restore, and discarded everything.
      if (e instanceof PeerAbortError && e.peerCode.startsWith('E_RESTORE')) {
        settledHere(s);
        throw restoreFailed(e);
      }
      return null;
    },
  );
  if (final === null) {
    s.log.info({ session: sessionId }, 'no answer to Commit: asking the destination on a new connection');
    final = await askCommitted(s.opts, sessionId, s.replyTimeoutMs, (e) =>
      s.log.info({ err: e.message }, 'could not ask the destination yet'),
    );
  }
  if (s.restore && final && final.restoredPid === undefined) final = false;
  if (final === false) {
    settledHere(s);
    throw new ConnectionError(`the destination did not make the image final (session ${sessionId}); the process was left running here`);
  }
  if (final === null) {
    const settle = s.restore
      ? `once the destination can be reached, run forecopy-source resolve --session ${sessionId} --to ${s.opts.host}:${s.opts.port}: it ends any copy the destination holds`
      : `if <image-dir>/${sessionId} exists on the destination, delete it`;
    throw new InDoubtError(
      `could not learn whether the destination made session ${sessionId} final; the process was left running here: ${settle}`,
    );
  }
  return final;
}

/**
 * The destination said no for certain: it holds no copy, and the process runs on here. The
 * handover's record (for resolve) is removed: there is nothing left to resolve.
 */
function settledHere(s: MigrationSession): void {
  if (s.restore) removeRecord(s.opts.stateDir, s.sessionId);
}

/** The destination's answer to Commit: the image is final; with a restore, the held process. */
export interface Committed {
  restoredPid?: number;
  restoreMs?: number;
}

function restoreFailed(e: PeerAbortError): RestoreFailedError {
  return new RestoreFailedError(`the destination could not restore the process (${e.peerCode}): ${e.reason}; the process runs on here`, {
    cause: e,
  });
}

/** Query: did the destination make `sessionId` final? true, false, or null when it cannot be asked. */
function askCommitted(
  to: Destination,
  sessionId: string,
  timeoutMs: number,
  onRetry: (e: Error) => void,
): Promise<Committed | false | null> {
  return askOnNewConnection(
    to,
    timeoutMs,
    async (channel, leftMs) => {
      try {
        await channel.send(query({ sessionId }));
        const m = await channel.next(leftMs());
        if (m.type !== MessageType.Committed || m.header.sessionId !== sessionId) return false;
        return { restoredPid: m.header.restoredPid, restoreMs: m.header.restoreMs };
      } catch (e) {
        if (e instanceof PeerAbortError) return false; // the destination's answer: not final, and never will be
        throw e;
      }
    },
    onRetry,
  );
}
