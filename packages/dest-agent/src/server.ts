import fs from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import tls from 'node:tls';
import { MessageChannel, type Security } from '@forecopy/protocol';
import { runSession, type PendingSessions, type SessionOptions, type SessionOutcome } from './session.js';
import { cleanUpRestoring } from './restore-step.js';

/**
 * The destination's listener: accepts migrations, at most `maxSessions` at a time (more are
 * refused at once), each handled by `runSession`. A failed session never stops the listener.
 */
export interface ListenOptions
  extends Pick<
    SessionOptions,
    'imageDir' | 'credit' | 'maxImageBytes' | 'log' | 'corruptPages' | 'dieAtStopAndCopy' | 'dropCommitted' | 'delayHelloAckMs' | 'restore'
  > {
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

export function listen(opts: ListenOptions): { server: net.Server; done: Promise<ListenResult> } {
  fs.mkdirSync(opts.imageDir, { recursive: true });
  // Partial images of a previous run that died are never made final: discard them.
  for (const d of fs.readdirSync(opts.imageDir)) {
    if (!/^[0-9a-f]{32}\.partial$/.test(d)) continue;
    cleanUpRestoring(path.join(opts.imageDir, d), opts.log);
    fs.rmSync(path.join(opts.imageDir, d), { recursive: true, force: true });
    fs.writeFileSync(
      path.join(opts.imageDir, d.replace('.partial', '.failed.json')),
      JSON.stringify({ verified: false, reason: 'found unfinished after a restart of the destination' }, null, 2),
    );
    opts.log.warn({ session: d.slice(0, 32) }, 'discarded an unfinished image left by a previous run');
  }
  const pending: PendingSessions = new Map();
  let queriesOnly = false;
  const sessions: SessionOutcome[] = [];
  let active = 0;
  // With security, a peer reaches 'secureConnection' only after it passed the handshake: an
  // unauthenticated peer is refused before a single frame is read.
  const server = opts.security ? tls.createServer(opts.security.server) : net.createServer();
  if (opts.security) {
    server.on('tlsClientError', (e: Error, s: tls.TLSSocket) => {
      opts.log.warn({ peer: `${s.remoteAddress}:${s.remotePort}`, err: e.message }, 'refused a peer that failed authentication');
    });
  }
  const done = new Promise<ListenResult>((resolve, reject) => {
    server.on('error', reject);
    server.on('close', () => resolve({ sessions }));
  });
  server.on(opts.security ? 'secureConnection' : 'connection', (socket: net.Socket) => {
    const peer = `${socket.remoteAddress}:${socket.remotePort}`;
    if (active >= opts.maxSessions) {
      opts.log.warn({ peer }, `refused a connection: ${opts.maxSessions} migrations already running`);
      socket.destroy();
      return;
    }
    active++;
    socket.setNoDelay(true);
    const channel = new MessageChannel(socket);
    const log = opts.log.child({ peer });
    const { imageDir, credit, maxImageBytes, corruptPages, dieAtStopAndCopy, dropCommitted, delayHelloAckMs, restore } = opts;
    runSession(channel, {
      imageDir,
      credit,
      maxImageBytes,
      corruptPages,
      dieAtStopAndCopy,
      dropCommitted,
      delayHelloAckMs,
      log,
      pending,
      queriesOnly,
      restore,
    })
      .then((outcome) => {
        sessions.push(outcome);
        // --once ends after one migration that got past Hello (a stray probe does not count);
        // if the source may not have heard Committed, linger for its Query first.
        if (opts.once && outcome.sessionId && !queriesOnly) {
          if (outcome.answerMayBeLost) {
            queriesOnly = true;
            setTimeout(() => server.close(), opts.lingerMs ?? 15_000).unref();
            opts.log.warn({ session: outcome.sessionId }, 'the source did not confirm the handover: answering queries for a while');
          } else server.close();
        }
      })
      .catch((e: Error) => {
        log.error({ err: e.message }, 'session crashed');
        sessions.push({ verified: false, error: e.message });
      })
      .finally(() => {
        active--;
        // Close gently: a source still sending must first read our last word (Abort, Verified).
        // Destroying at once would answer its data with a reset, and a reset makes the peer's
        // kernel drop what it had not read yet. Discard what arrives, close within 2 s.
        socket.resume();
        socket.end();
        setTimeout(() => socket.destroy(), 2000).unref();
      });
  });
  server.listen(opts.port, opts.host, () => opts.onListening?.(server.address() as net.AddressInfo));
  return { server, done };
}
