import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  Cleanup,
  DEST_BIN,
  SOURCE_BIN,
  expectUntracked,
  expectVerified,
  migrateArgs,
  mwCheck,
  rootSkipReason,
  runSource,
  start,
  startDest,
  startMw,
  warnIfSkipped,
} from '../src/procs.js';

/**
 * The migration channel's security: a pre-shared key or mutual TLS authenticates both agents
 * before a page flows; a peer that cannot authenticate is refused and nothing is written.
 */
const skip = warnIfSkipped('security', rootSkipReason());

function writeKey(c: Cleanup, hex = randomBytes(32).toString('hex')): string {
  const f = path.join(c.tmpdir('forecopy-key-'), 'key');
  fs.writeFileSync(f, hex);
  return f;
}

/** A CA and two certificates it signed (for 127.0.0.1), made with openssl. */
function makePki(c: Cleanup, name: string): { ca: string; cert: string; key: string; dir: string } {
  const dir = c.tmpdir(`forecopy-pki-${name}-`);
  const run = (...a: string[]) => execFileSync('openssl', a, { cwd: dir, stdio: 'ignore' });
  /** `openssl req` arguments: a new P-256 key, unencrypted, written to `keyFile`. */
  const newKey = (keyFile: string) => ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', keyFile];
  run('req', '-x509', ...newKey('ca.key'), '-out', 'ca.pem', '-days', '1', '-subj', `/CN=forecopy test CA ${name}`);
  fs.writeFileSync(path.join(dir, 'ext.cnf'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  run('req', ...newKey('agent.key'), '-out', 'agent.csr', '-subj', '/CN=127.0.0.1');
  run(
    'x509',
    '-req',
    '-in',
    'agent.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'agent.pem',
    '-days',
    '1',
    '-extfile',
    'ext.cnf',
  );
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'agent.pem'), key: path.join(dir, 'agent.key'), dir };
}

/** The arguments of either agent for mutual TLS: its certificate and key, and the CA it trusts. */
const tlsArgs = (pki: { cert: string; key: string; ca: string }) => ['--tls-cert', pki.cert, '--tls-key', pki.key, '--tls-ca', pki.ca];

describe.skipIf(skip)('authenticated migration channel', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  it('migrates with a pre-shared key, and refuses a wrong key and a plain peer', async () => {
    const key = writeKey(c);
    const mw = await startMw(c, ['--mb', '16', '--pattern', 'random', '--write-rate', '2000']);
    const dest = await startDest(c, ['--psk-file', key, '--log-level', 'warn']);
    // a wrong key: refused in the handshake, one line, the process untouched
    const wrong = await runSource(c, migrateArgs(mw.pid, dest, ['--image-only', '--psk-file', writeKey(c)]));
    expect(wrong.code).toBe(5);
    expect(wrong.stderr).toMatch(
      /^forecopy-source: cannot connect to the destination 127\.0\.0\.1:\d+: the pre-shared key handshake failed .*same key\?$/,
    );
    // no key at all: the destination refuses before reading a frame
    const plain = await runSource(c, migrateArgs(mw.pid, dest, ['--image-only']));
    expect(plain.code).toBe(5);
    expect(fs.readdirSync(dest.imageDir)).toEqual([]);
    expectUntracked(mw.pid);
    expectVerified(await runSource(c, migrateArgs(mw.pid, dest, ['--psk-file', key, '--after', 'resume'])));
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
    expect(dest.proc.stderrLines.join('\n')).toMatch(/refused a peer that failed authentication/);
  });

  it('migrates over mutual TLS (on 2 connections), and refuses a source whose certificate another CA signed', async () => {
    const a = makePki(c, 'a');
    const b = makePki(c, 'b');
    const mw = await startMw(c, ['--mb', '16', '--pattern', 'random', '--write-rate', '2000']);
    const dest = await startDest(c, ['--once', ...tlsArgs(a), '--log-level', 'warn']);
    const foreign = await runSource(c, migrateArgs(mw.pid, dest, ['--image-only', ...tlsArgs({ ...b, ca: a.ca })]));
    expect(foreign.code).toBe(5);
    expect(foreign.stderr.split('\n')).toHaveLength(1);
    // Every extra connection (--streams) passes the same handshake.
    const run = await runSource(c, migrateArgs(mw.pid, dest, [...tlsArgs(a), '--streams', '2', '--after', 'resume']));
    expect(expectVerified(run).streams).toBe(2);
    expect(await dest.proc.exited).toBe(0);
    expect(await mwCheck(mw)).toMatch(/^mw check ok/);
  });

  it('will not listen on a non-loopback address without authentication unless told --insecure', async () => {
    // The check comes before any socket is opened: 192.0.2.1 (TEST-NET-1) is never bound.
    const p = c.proc(start(process.execPath, [DEST_BIN, 'listen', '--host', '192.0.2.1', '--port', '7070', '--image-dir', c.tmpdir()]));
    expect(await p.exited).toBe(2);
    expect(p.stderrLines[0]).toMatch(/^forecopy-dest: listening on 192\.0\.2\.1 without authentication would let anyone send pages/);
    const half = c.proc(start(process.execPath, [DEST_BIN, 'listen', '--port', '0', '--image-dir', c.tmpdir(), '--tls-cert', 'x.pem']));
    expect(await half.exited).toBe(2);
    expect(half.stderrLines[0]).toBe('forecopy-dest: mutual TLS needs all of --tls-cert, --tls-key and --tls-ca');
  });

  it('refuses at once a path it could not write and limits that are not numbers', async () => {
    const dir = c.tmpdir();
    for (const [args, said] of [
      [['--image-dir', '/proc/forecopy-none/img'], '--image-dir: cannot make the directory /proc/forecopy-none: ENOENT'],
      [['--image-dir', '/dev/null'], '--image-dir: /dev/null is not a directory'],
      [
        ['--image-dir', dir, '--restore', '--pid-file', '/proc/forecopy-none/pid'],
        '--pid-file: cannot write /proc/forecopy-none/pid: /proc/forecopy-none does not exist',
      ],
      [['--image-dir', dir, '--max-sessions', '0'], '--max-sessions must be a whole number >= 1, got 0'],
      [['--image-dir', dir, '--max-image-gb', 'many'], '--max-image-gb must be a number > 0, got NaN'],
    ] as Array<[string[], string]>) {
      const p = c.proc(start(process.execPath, [DEST_BIN, 'listen', '--port', '0', ...args]));
      expect(await p.exited, args.join(' ')).toBe(2);
      expect(p.stderrLines[0]).toBe(`forecopy-dest: ${said}`);
    }
    // TLS files that are not PEM, or a key that is not the certificate's: one line, either agent.
    const a = makePki(c, 'a');
    const b = makePki(c, 'b');
    for (const pki of [
      { cert: '/etc/hostname', key: '/etc/hostname', ca: '/etc/hostname' },
      { ...a, key: b.key },
    ]) {
      const said = new RegExp(`^--tls-cert ${pki.cert}, --tls-key ${pki.key} and --tls-ca ${pki.ca} do not make a TLS identity: \\S`);
      const p = c.proc(start(process.execPath, [DEST_BIN, 'listen', '--port', '0', '--image-dir', dir, ...tlsArgs(pki)]));
      expect(await p.exited).toBe(2);
      expect(p.stderrLines[0].replace('forecopy-dest: ', '')).toMatch(said);
      const s = c.proc(start(process.execPath, [SOURCE_BIN, 'migrate', '--pid', '999999999', '--to', '127.0.0.1:9', ...tlsArgs(pki)]));
      expect(await s.exited).toBe(2);
      expect(s.stderrLines.filter(Boolean)).toHaveLength(1);
      expect(s.stderrLines[0].replace('forecopy-source: ', '')).toMatch(said);
    }
  });
});
