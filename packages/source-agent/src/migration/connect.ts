import net from 'node:net';
import tls from 'node:tls';
import { MessageChannel, type Security } from '@forecopy/protocol';
import { ConnectionError } from '../errors.js';

/** Where the destination listens, and how the two agents authenticate (null: plain TCP). */
export interface Destination {
  host: string;
  port: number;
  security?: Security | null;
}

/**
 * Opens a channel to the destination: TCP, or TLS (a pre-shared key or certificates) when
 * `security` is set. Fails with a ConnectionError that says why in the user's terms.
 */
export function connect(to: Destination, timeoutMs: number, sendTimeoutMs: number): Promise<MessageChannel> {
  const { host, port } = to;
  const security = to.security ?? null;
  return new Promise((resolve, reject) => {
    const socket = security
      ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }), ...security.client })
      : net.connect({ host, port });
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

/**
 * Calls `ask` on fresh connections to the destination until it answers or `timeoutMs` has passed
 * (then null). A failed attempt is logged through `onRetry` and retried after 500 ms.
 */
export async function askOnNewConnection<T>(
  to: Destination,
  timeoutMs: number,
  ask: (channel: MessageChannel, leftMs: () => number) => Promise<T>,
  onRetry: (e: Error) => void,
): Promise<T | null> {
  const deadline = performance.now() + timeoutMs;
  const left = () => Math.max(500, deadline - performance.now());
  while (performance.now() < deadline) {
    try {
      const channel = await connect(to, left(), timeoutMs);
      try {
        return await ask(channel, left);
      } finally {
        channel.destroy();
      }
    } catch (e) {
      onRetry(e as Error);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  return null;
}
