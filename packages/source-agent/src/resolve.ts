import fs from 'node:fs';
import { MessageType, discard, release, type Security } from '@forecopy/protocol';
import { findBlockers, sameProcessRuns } from '@forecopy/linux';
import { ConnectionError, InputError, NotMigratableError } from './errors.js';
import { asChannelError } from './errno-map.js';
import { askOnNewConnection } from './migration/connect.js';
import { recordPath, removeRecord, type SessionRecord } from './migration/restore.js';
import { requireProcess } from './process-checks.js';

// `forecopy-source resolve` and `forecopy-source check`.

export interface ResolveOptions {
  sessionId: string;
  host: string;
  port: number;
  security: Security | null;
  stateDir: string;
  timeoutMs: number;
}

/**
 * Ends a handover this host could not finish: the destination holds the restored process
 * stopped, waiting to hear that the original is gone. Only this host knows whether it is: if the
 * original (same pid, same start time) still runs, the destination ends its copy (Discard);
 * otherwise it lets its copy run (Release). Returns the line to print.
 */
export async function resolveSession(o: ResolveOptions): Promise<string> {
  if (!/^[0-9a-f]{32}$/.test(o.sessionId)) throw new InputError(`--session must be 32 hex characters, got ${o.sessionId}`);
  const file = recordPath(o.stateDir, o.sessionId);
  let record: SessionRecord;
  try {
    record = JSON.parse(fs.readFileSync(file, 'utf8')) as SessionRecord;
  } catch {
    throw new InputError(
      `no handover of session ${o.sessionId} is recorded in ${o.stateDir} (it finished, or ran with another --state-dir)`,
    );
  }
  const runsHere = sameProcessRuns(record.pid, record.startTime);
  const answer = await askOnNewConnection(
    { host: o.host, port: o.port, security: o.security },
    o.timeoutMs,
    async (channel, left) => {
      await channel.send(runsHere ? discard({ sessionId: o.sessionId }) : release({ sessionId: o.sessionId }));
      return channel.expect(MessageType.Resolved, left()).catch((e) => {
        throw asChannelError(e);
      });
    },
    () => {},
  );
  if (!answer)
    throw new ConnectionError(
      `could not reach the destination ${o.host}:${o.port} within ${o.timeoutMs / 1000} s; nothing changed, try again`,
    );
  const { running, pid, reason } = answer.header;
  const asked = `${o.host}:${o.port}`;
  // A destination that knows nothing of the session, and is not the one recorded, was the wrong
  // one to ask (another address of the same host may be right): the record stays.
  if (!running && pid === 0 && asked !== record.destination) {
    throw new InputError(
      `the destination ${asked} knows nothing of session ${o.sessionId}; its handover was recorded with ${record.destination}: run resolve --to ${record.destination} (nothing changed)`,
    );
  }
  removeRecord(o.stateDir, o.sessionId);
  if (runsHere) {
    return `session ${o.sessionId}: the original runs here (pid ${record.pid}); the destination ${running ? 'still runs its copy (!)' : `ended its copy (${reason})`}`;
  }
  return running
    ? `session ${o.sessionId}: the process runs at the destination ${o.host}:${o.port} (pid ${pid}); the original here is gone`
    : `session ${o.sessionId}: the original here is gone and the destination has no running copy: ${reason}`;
}

/** `check`: what would stop the process from moving. Throws NotMigratableError naming each. */
export function checkProcess(pid: number): {
  pid: number;
  migratable: boolean;
  blockers: Array<{ kind: string; id: number; message: string }>;
} {
  requireProcess(pid);
  const blockers = findBlockers(pid, { ourPid: process.pid });
  return { pid, migratable: blockers.length === 0, blockers };
}

export function notMigratable(r: ReturnType<typeof checkProcess>): NotMigratableError {
  return new NotMigratableError(
    r.pid,
    r.blockers.map((b) => b.message),
  );
}
