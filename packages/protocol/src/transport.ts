import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { SecurityConfigError } from './errors.js';

/**
 * How the agents authenticate each other and encrypt the migration channel:
 * - mutual TLS (`--tls-cert`, `--tls-key`, `--tls-ca` on both sides): each side proves its
 *   certificate, signed by the CA the other trusts;
 * - a pre-shared key (`--psk-file` on both sides): TLS 1.2 with PSK-AES256-GCM-SHA384, so both
 *   sides prove they hold the key before a byte of the protocol flows;
 * - neither: plain TCP, allowed on loopback, and elsewhere only with an explicit `--insecure`.
 * A peer that fails the handshake is refused before it can send a single frame.
 * Unusable flags throw SecurityConfigError (E_SECURITY_CONFIG), a user's mistake, not a bug.
 */
export interface SecurityFlags {
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  pskFile?: string;
}

export interface Security {
  kind: 'mtls' | 'psk';
  server: tls.TlsOptions;
  client: tls.ConnectionOptions;
}

const PSK_IDENTITY = 'forecopy';
const PSK_CIPHERS = 'PSK-AES256-GCM-SHA384';

function read(file: string, what: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw new SecurityConfigError(`cannot read ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** A PSK file holds the key as hex (64 hex digits for 32 bytes) or as at least 16 raw bytes. */
export function readPsk(file: string): Buffer {
  const raw = read(file, 'the pre-shared key file');
  const text = raw.toString('utf8').trim();
  if (/^[0-9a-fA-F]+$/.test(text) && text.length % 2 === 0 && text.length >= 32) return Buffer.from(text, 'hex');
  if (raw.length >= 16 && !/^[0-9a-fA-F\s]*$/.test(text)) return raw;
  throw new SecurityConfigError(
    `the pre-shared key in ${file} is too short: use at least 16 random bytes (e.g. openssl rand -hex 32 > ${file})`,
  );
}

/** Builds the security of an agent from its flags; null for plain TCP. */
export function loadSecurity(f: SecurityFlags): Security | null {
  const tlsGiven = [f.tlsCert, f.tlsKey, f.tlsCa].filter(Boolean).length;
  if (f.pskFile && tlsGiven) throw new SecurityConfigError('give either --psk-file or --tls-cert/--tls-key/--tls-ca, not both');
  if (tlsGiven > 0 && tlsGiven < 3) throw new SecurityConfigError('mutual TLS needs all of --tls-cert, --tls-key and --tls-ca');
  if (f.pskFile) {
    const key = readPsk(f.pskFile);
    const common = { ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2' as const, maxVersion: 'TLSv1.2' as const };
    return {
      kind: 'psk',
      server: { ...common, pskCallback: (_s: tls.TLSSocket, identity: string) => (identity === PSK_IDENTITY ? key : null) },
      client: { ...common, pskCallback: () => ({ psk: key, identity: PSK_IDENTITY }), checkServerIdentity: () => undefined },
    };
  }
  if (tlsGiven === 3) {
    const cert = read(f.tlsCert!, 'the certificate');
    const key = read(f.tlsKey!, 'the private key');
    const ca = read(f.tlsCa!, 'the CA certificate');
    // Parsed now, not at the first connection: a file that is not PEM, or a key that is not the
    // certificate's, is the user's mistake, said in one line before any work starts.
    try {
      tls.createSecureContext({ cert, key, ca });
    } catch (e) {
      throw new SecurityConfigError(
        `--tls-cert ${f.tlsCert}, --tls-key ${f.tlsKey} and --tls-ca ${f.tlsCa} do not make a TLS identity: ${(e as Error).message}`,
      );
    }
    return {
      kind: 'mtls',
      server: { cert, key, ca, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
      client: { cert, key, ca, rejectUnauthorized: true, minVersion: 'TLSv1.3' },
    };
  }
  return null;
}

/** Whether an address is loopback (where plain TCP needs no --insecure). */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (net.isIPv4(host)) return host.startsWith('127.');
  if (net.isIPv6(host)) return host === '::1' || host.startsWith('::ffff:127.');
  return false;
}
