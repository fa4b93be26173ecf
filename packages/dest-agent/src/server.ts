import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { MessageChannel, type Security } from '@forecopy/protocol';
import { runSession, type PendingSessions, type SessionOptions, type SessionOutcome } from './session.js';
import { cleanUpRestoring } from './restore-step.js';

/** The listener's options that each session takes as they are. */
const SESSION_SETTINGS = [
  'imageDir',
  'credit',
  'maxImageBytes',
  'corruptPages',
  'corruptInTransit',
  'dieAtStopAndCopy',
  'dropCommitted',
  'dieWhenCommitted',
  'delayHelloAckMs',
  'restore',
] as const;
type SessionSettings = Pick<SessionOptions, (typeof SESSION_SETTINGS)[number]>;

/**
 * The destination's listener: accepts migrations, at most `maxSessions` at a time (more are
 * refused at once), each handled by `runSession`. A failed session never stops the listener.
 */
export interface ListenOptions extends SessionSettings, Pick<SessionOptions, 'log'> {
  host: string;
  port: number;
  once: boolean;
  maxSessions: number;
  /** How long a --once listener answers queries after a handover the source did not confirm. */
  lingerMs?: number;
  /** Mutual TLS or a pre-shared key; null = plain TCP. */
  security?: Security | null;
  onListening?: (addr: net.AddressInfo) => void;
}

export interface ListenResult {
  sessions: SessionOutcome[];
}

/**
 * Partial images of a previous run that died are never made final: discards each (and ends
 * what it was restoring), leaving a .failed.json that says why.
 */
function discardPartialSessions(imageDir: string, log: ListenOptions['log']): void {
  for (const d of fs.readdirSync(imageDir)) {
    if (!/^[0-9a-f]{32}\.partial$/.test(d)) continue;
    cleanUpRestoring(path.join(imageDir, d), log);
    fs.rmSync(path.join(imageDir, d), { recursive: true, force: true });
    fs.writeFileSync(
      path.join(imageDir, d.replace('.partial', '.failed.json')),
      JSON.stringify({ verified: false, reason: 'found unfinished after a restart of the destination' }, null, 2),
    );
    log.warn({ session: d.slice(0, 32) }, 'discarded an unfinished image left by a previous run');
  }
}

function sessionSettings(opts: ListenOptions): SessionSettings {
  return Object.fromEntries(SESSION_SETTINGS.map((k) => [k, opts[k]])) as SessionSettings;
}

/** What the listener's connections share: the sessions served so far, and those running. */
interface ListenerState {
  server: net.Server;
  pending: PendingSessions;
  sessions: SessionOutcome[];
  active: number;
  /** --once after a handover the source did not confirm: only queries are answered until close. */
  queriesOnly: boolean;
}

/** One connection: refused when `maxSessions` run already, else a session, closed gently after. */
function handleConnection(opts: ListenOptions, state: ListenerState, socket: net.Socket): void {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  if (state.active >= opts.maxSessions) {
    opts.log.warn({ peer }, `refused a connection: ${opts.maxSessions} migrations already running`);
    socket.destroy();
    return;
  }
  state.active++;
  socket.setNoDelay(true);
  const channel = new MessageChannel(socket);
  const log = opts.log.child({ peer });
  runSession(channel, {
    ...sessionSettings(opts),
    log,
    pending: state.pending,
    queriesOnly: state.queriesOnly,
  })
    .then((outcome) => {
      state.sessions.push(outcome);
      if (opts.once) endAfterOnce(opts, state, outcome);
    })
    .catch((e: Error) => {
      log.error({ err: e.message }, 'session crashed');
      state.sessions.push({ verified: false, error: e.message });
    })
    .finally(() => {
      state.active--;
      // Close gently: a source still sending must first read our last word (Abort, Verified).
      // Destroying at once would answer its data with a reset, and a reset makes the peer's
      // kernel drop what it had not read yet. Discard what arrives, close within 2 s.
      socket.resume();
      socket.end();
      setTimeout(() => socket.destroy(), 2000).unref();
    });
}

/**
 * --once ends after one migration that got past Hello (a stray probe does not count); if the
 * source may not have heard Committed, linger for its Query first.
 */
function endAfterOnce(opts: ListenOptions, state: ListenerState, outcome: SessionOutcome): void {
  if (!outcome.sessionId || state.queriesOnly) return;
  if (outcome.answerMayBeLost) {
    state.queriesOnly = true;
    setTimeout(() => state.server.close(), opts.lingerMs ?? 15_000).unref();
    opts.log.warn({ session: outcome.sessionId }, 'the source did not confirm the handover: answering queries for a while');
  } else state.server.close();
}

export function listen(opts: ListenOptions): { server: net.Server; done: Promise<ListenResult> } {
  fs.mkdirSync(opts.imageDir, { recursive: true });
  discardPartialSessions(opts.imageDir, opts.log);
  // With security, a peer reaches 'secureConnection' only after it passed the handshake: an
  // unauthenticated peer is refused before a single frame is read.
  const server = opts.security ? tls.createServer(opts.security.server) : net.createServer();
  if (opts.security) {
    server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
      opts.log.warn({ peer: `${s.remoteAddress}:${s.remotePort}`, err: e.message }, 'refused a peer that failed authentication');
    });
  }
  const state: ListenerState = { server, pending: new Map(), sessions: [], active: 0, queriesOnly: false };
  const done = new Promise<ListenResult>((resolve, reject) => {
    server.on('error', reject);
    server.on('close', () => resolve({ sessions: state.sessions }));
  });
  server.on(opts.security ? 'secureConnection' : 'connection', (socket: net.Socket) => handleConnection(opts, state, socket));
  server.listen(opts.port, opts.host, () => opts.onListening?.(server.address() as net.AddressInfo));
  return { server, done };
}
