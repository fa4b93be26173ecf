import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { main } from '../src/cli.js';

/** forecopy-dest's exit codes and one-line messages for a user's mistakes. */
const dirs: string[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

async function run(args: string[]): Promise<{ code: number; stderr: string }> {
  let stderr = '';
  vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    stderr += String(s);
    return true;
  });
  vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
  const code = await main(args);
  vi.restoreAllMocks();
  return { code, stderr };
}

function imageDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-dest-cli-'));
  dirs.push(d);
  return d;
}

describe('forecopy-dest exit codes', () => {
  it('bad arguments: 2, one sentence and a pointer to --help', async () => {
    const r = await run(['listen', '--port', '70000', '--image-dir', imageDir()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe("forecopy-dest: --port must be between 0 and 65535\nRun 'forecopy-dest --help' for the commands and examples.\n");
  });

  it('a credit that is not whole, or a choice not offered: 2, in one line', async () => {
    const c = await run(['listen', '--port', '0', '--image-dir', imageDir(), '--credit', '1.5']);
    expect(c.code).toBe(2);
    expect(c.stderr.split('\n')[0]).toBe('forecopy-dest: --credit must be a whole number from 1 to 1024, got 1.5');
    const l = await run(['listen', '--port', '0', '--image-dir', imageDir(), '--log-level', 'loud']);
    expect(l.code).toBe(2);
    expect(l.stderr.split('\n')[0]).toBe(
      'forecopy-dest: Invalid values: Argument: log-level, Given: "loud", Choices: "debug", "info", "warn", "error"',
    );
  });

  it('security flags that cannot be used: 2', async () => {
    const r = await run(['listen', '--port', '0', '--image-dir', imageDir(), '--tls-cert', 'x.pem']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe('forecopy-dest: mutual TLS needs all of --tls-cert, --tls-key and --tls-ca');
  });

  it('a port in use: 3, saying so', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      const r = await run(['listen', '--port', String(port), '--image-dir', imageDir(), '--log-level', 'error']);
      expect(r.code).toBe(3);
      expect(r.stderr).toBe(`forecopy-dest: port ${port} on 127.0.0.1 is already in use\n`);
    } finally {
      busy.close();
    }
  });
});
