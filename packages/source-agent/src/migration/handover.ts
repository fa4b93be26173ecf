import { MessageType, PeerAbortError, commit, query } from '@forecopy/protocol';
import { ConnectionError, InDoubtError } from '../errors.js';
import { askOnNewConnection, type Destination } from './connect.js';
import type { MigrationSession } from './session.js';

/**
 * The handover, once the destination verified its image: Commit, and only when the destination
 * answers Committed (the image is final) may the process leave this host. If that answer is
 * lost, ask on a new connection (Query); if that fails too, nobody can know here, so the process
 * stays (InDoubtError, exit 9, names the session to check on the destination).
 */
export async function handover(s: MigrationSession): Promise<void> {
  const { sessionId } = s;
  await s.channel.send(commit({ sessionId }));
  let final: boolean | null = await s.channel.expect(MessageType.Committed, s.replyTimeoutMs).then(
    () => true,
    () => null,
  );
  if (final === null) {
    s.log.info({ session: sessionId }, 'no answer to Commit: asking the destination on a new connection');
    final = await askCommitted(s.opts, sessionId, s.replyTimeoutMs, (e) => s.log.info({ err: e.message }, 'could not ask the destination yet'));
  }
  if (final === false) {
    throw new ConnectionError(`the destination did not make the image final (session ${sessionId}); the process was left running here`);
  }
  if (final === null) {
    throw new InDoubtError(
      `could not learn whether the destination made session ${sessionId} final; the process was left running here: if <image-dir>/${sessionId} exists on the destination, delete it`,
    );
  }
}

/** Query: did the destination make `sessionId` final? true, false, or null when it cannot be asked. */
function askCommitted(to: Destination, sessionId: string, timeoutMs: number, onRetry: (e: Error) => void): Promise<boolean | null> {
  return askOnNewConnection(
    to,
    timeoutMs,
    async (channel, leftMs) => {
      try {
        await channel.send(query({ sessionId }));
        const m = await channel.next(leftMs());
        return m.type === MessageType.Committed && m.header.sessionId === sessionId;
      } catch (e) {
        if (e instanceof PeerAbortError) return false; // the destination's answer: not final, and never will be
        throw e;
      }
    },
    onRetry,
  );
}
