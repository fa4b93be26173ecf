import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { MessageChannel, MessageType, abort, type Security } from '@forecopy/protocol';
import { runSession, type PendingSessions, type SessionOptions, type SessionOutcome, type StreamJoiners } from './session.js';
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
  'maxStreams',
] as const;
type SessionSettings = Pick<SessionOptions, (typeof SESSION_SETTINGS)[number]>;

/**
 * The destination's listener: accepts migrations, at most `maxSessions` at a time (more are
 * refused with Abort E_BUSY), each handled by `runSession`, and the extra connections a running
 * migration sends pages on (StreamJoin, `--streams`). A failed session never stops the listener.
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
  /** Running sessions that take extra connections, by session id. */
  joiners: StreamJoiners;
}

/** How long a connection may take to send its first message (a source models before its Hello). */
const FIRST_MESSAGE_MS = 120_000;

/**
 * One connection: its first message tells what it is. A StreamJoin joins the running session it
 * names (it is not a session of its own); anything else starts a session, refused with Abort
 * E_BUSY when `maxSessions` run already.
 */
function handleConnection(opts: ListenOptions, state: ListenerState, socket: net.Socket): void {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  socket.setNoDelay(true);
  const channel = new MessageChannel(socket);
  const log = opts.log.child({ peer });
  void channel.peek(FIRST_MESSAGE_MS).then(async (first) => {
    if (first?.type === MessageType.StreamJoin) {
      await channel.next();
      const join = state.joiners.get(first.header.sessionId);
      if (join) return join(channel, first);
      log.warn({ session: first.header.sessionId }, 'refused a stream of a session that is not running here');
      return refuseConnection(channel, 'E_UNEXPECTED', `session ${first.header.sessionId} is not running here`);
    }
    if (state.active >= opts.maxSessions) {
      log.warn({ peer }, `refused a connection: ${opts.maxSessions} migrations already running`);
      return refuseConnection(channel, 'E_BUSY', `this destination runs ${opts.maxSessions} migrations already (--max-sessions)`);
    }
    serveSession(opts, state, channel, log);
  });
}

/** Answers Abort and closes. */
async function refuseConnection(channel: MessageChannel, code: string, reason: string): Promise<void> {
  await channel.send(abort({ code, reason })).catch(() => {});
  channel.close();
  setTimeout(() => channel.destroy(), 2000).unref();
}

/** A session on `channel`; the connection is closed gently after it. */
function serveSession(opts: ListenOptions, state: ListenerState, channel: MessageChannel, log: ListenOptions['log']): void {
  const { socket } = channel;
  state.active++;
  runSession(channel, {
    ...sessionSettings(opts),
    log,
    pending: state.pending,
    queriesOnly: state.queriesOnly,
    joiners: state.joiners,
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
  const state: ListenerState = { server, pending: new Map(), sessions: [], active: 0, queriesOnly: false, joiners: new Map() };
  const done = new Promise<ListenResult>((resolve, reject) => {
    server.on('error', reject);
    server.on('close', () => resolve({ sessions: state.sessions }));
  });
  server.on(opts.security ? 'secureConnection' : 'connection', (socket: net.Socket) => handleConnection(opts, state, socket));
  server.listen(opts.port, opts.host, () => opts.onListening?.(server.address() as net.AddressInfo));
  return { server, done };
}
