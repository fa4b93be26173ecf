import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { MessageChannel } from '@forecopy/protocol';
import { pino } from 'pino';
import { afterAll } from 'vitest';
import { pipePair } from '../../protocol/test/pipe-pair.js';
import { runSession, type PendingSessions, type SessionOptions, type SessionOutcome } from '../src/session.js';

/**
 * The destination's session state machine without a socket: `runSession` on one end of an
 * in-memory stream pair, the test playing the source on the other.
 */

/**
 * Image directories for one test file: each call makes a new, empty one under a temporary root
 * that is removed after the file's tests. Call it at the top of the file.
 */
export function imageDirs(prefix: string): () => string {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
  let n = 0;
  return () => {
    const dir = path.join(root, String(n++));
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  };
}

export interface SessionUnderTest {
  /** The source's end of the stream: frames written here reach the session, its answers come out here. */
  stream: Duplex;
  /** What `runSession` settles with. */
  outcome: Promise<SessionOutcome>;
  /** The sessions table this session reads and settles. */
  pending: PendingSessions;
}

const quiet = pino({ level: 'silent' });

/**
 * Runs a destination session on one end of an in-memory stream. Unless `opts` says otherwise: a
 * credit of 8, images up to 1 MiB, no log, a new sessions table, and 2 s to wait for a reply.
 */
export function startSession(opts: Pick<SessionOptions, 'imageDir'> & Partial<SessionOptions>): SessionUnderTest {
  const [stream, dest] = pipePair();
  const options: SessionOptions = {
    credit: 8,
    maxImageBytes: 1 << 20,
    log: quiet,
    pending: new Map(),
    replyTimeoutMs: 2000,
    ...opts,
  };
  return { stream, outcome: runSession(new MessageChannel(dest), options), pending: options.pending };
}
