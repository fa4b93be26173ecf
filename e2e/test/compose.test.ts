import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../src/procs.js';

/**
 * docker-compose.yml for real: a `source` container (mw + forecopy-source) moves mw to a `dest`
 * container (forecopy-dest --restore) over a private compose network with no route out, and mw
 * runs on in the dest container. Builds the image from the Dockerfile (on the base that
 * scripts/docker-base.sh makes without a registry).
 */
process.env.TESTCONTAINERS_RYUK_DISABLED = 'true'; // the reaper image cannot be pulled here

/** Where the image puts the workloads (Dockerfile: WORKDIR /opt/forecopy). */
const MW_IN_IMAGE = '/opt/forecopy/workloads/bin/mw';

function dockerSkipReason(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    return 'no Docker engine answers (.ci/run installs docker.io and starts dockerd)';
  }
  try {
    execFileSync('docker-compose', ['version'], { stdio: 'ignore' });
  } catch {
    return 'docker-compose is not installed';
  }
  try {
    execFileSync('docker', ['image', 'inspect', 'node:20-bookworm-slim'], { stdio: 'ignore' });
  } catch {
    return 'the base image node:20-bookworm-slim is missing: run scripts/docker-base.sh';
  }
  return null;
}

function docker(...args: string[]): string {
  return execFileSync('docker', args, { encoding: 'utf8', timeout: 60_000, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A container's output, stdout and stderr both. */
function logs(container: string): string {
  const r = spawnSync('docker', ['logs', container], { encoding: 'utf8', timeout: 60_000 });
  return `${r.stdout}${r.stderr}`;
}

const skip = dockerSkipReason();
if (skip) console.warn(`compose: skipped: ${skip}`);

describe.skipIf(skip)('docker-compose deployment', () => {
  const id = randomBytes(4).toString('hex');
  const project = `forecopy${id}`;
  const source = `forecopy-source-${id}`;
  const dest = `forecopy-dest-${id}`;
  let env: { down: (o?: object) => Promise<unknown> } | null = null;
  let tmp: string | null = null;
  afterAll(async () => {
    try {
      await env?.down({ timeout: 10_000, removeVolumes: true });
    } finally {
      // Also when up() failed half-way (env never set) or down() threw: nothing of ours is left.
      for (const args of [
        ['rm', '-f', '-v', source, dest],
        ['network', 'rm', `${project}_migration`],
      ]) {
        try {
          execFileSync('docker', args, { stdio: 'ignore', timeout: 60_000 });
        } catch {
          // already gone
        }
      }
      if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    }
  }, 120_000);

  /** The restored process's stdout at the destination, inside the dest container. */
  function destStdout(session: string): string[] {
    return docker('exec', dest, 'cat', `/images/${session}/stdout.log`).split('\n').filter(Boolean);
  }

  /** Sends SIGUSR1 to `pid` inside the dest container and waits for a new `mw check ok` line. */
  async function askCheck(pid: number, session: string): Promise<string> {
    const re = /^mw check ok .*writes=(\d+)/;
    const before = destStdout(session).filter((l) => re.test(l)).length;
    docker('exec', dest, 'kill', '-USR1', String(pid));
    for (let i = 0; i < 100; i++) {
      const hits = destStdout(session).filter((l) => re.test(l));
      if (hits.length > before) return hits[hits.length - 1];
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`pid ${pid} in ${dest} did not answer its check; its output: ${destStdout(session).slice(-3).join(' | ')}`);
  }

  it('moves mw from the source container to the dest container, where it runs on', async () => {
    const { DockerComposeEnvironment, Wait } = await import('testcontainers');
    const started = await new DockerComposeEnvironment(ROOT, 'docker-compose.yml')
      .withBuild()
      .withProjectName(project)
      .withEnvironment({ FORECOPY_ID: id, MW_MB: '64', POLICY: 'precopy', FORECOPY_PSK: randomBytes(32).toString('hex') })
      .withClientOptions({ executable: { standalone: true, executablePath: 'docker-compose' } })
      .withWaitStrategy(dest, Wait.forLogMessage(/listening on/))
      .withWaitStrategy(source, Wait.forOneShotStartup())
      .withStartupTimeout(600_000)
      .up();
    env = started;

    // The source: verified, handed over, its mw killed once the copy ran at dest.
    const code = execFileSync('docker', ['wait', source], { encoding: 'utf8', timeout: 300_000 }).trim();
    const sourceOut = logs(source);
    expect(code, sourceOut).toBe('0');
    expect(sourceOut).toMatch(/VERIFIED/);
    expect(sourceOut).toMatch(/^source: mw pid=\d+ fds: 0 1 2 $/m); // nothing else open
    expect(sourceOut, sourceOut).toMatch(/^source: mw pid=\d+ ended here, status 137$/m); // SIGKILL
    expect(docker('inspect', '-f', '{{.State.Running}}', source).trim()).toBe('false'); // nothing runs there
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'forecopy-compose-'));
    docker('cp', `${source}:/tmp/report.json`, path.join(tmp, 'report.json'));
    const report = JSON.parse(fs.readFileSync(path.join(tmp, 'report.json'), 'utf8'));
    expect(report.verified).toBe(true);
    expect(report.restoredPid).toBeGreaterThan(0);
    expect(report.restoreMs).toBeGreaterThan(0);

    // The dest: it restored the process and stays up while it runs.
    const destOut = logs(dest);
    const m = /forecopy-dest: session ([0-9a-f]{32}) runs as pid (\d+)/.exec(destOut);
    expect(m, destOut).not.toBeNull();
    const session = m![1];
    const pid = Number(m![2]);
    expect(pid).toBe(report.restoredPid);
    expect(docker('inspect', '-f', '{{.State.Running}}', dest).trim(), destOut).toBe('true');
    expect(docker('exec', dest, 'cat', '/run/forecopy/restored.pid').trim()).toBe(String(pid));
    expect(docker('exec', dest, 'readlink', `/proc/${pid}/exe`).trim()).toBe(MW_IN_IMAGE);
    const state = /^State:\s+(\S)/m.exec(docker('exec', dest, 'cat', `/proc/${pid}/status`))?.[1];
    expect(state).not.toBe('T'); // released: it runs
    expect(/^TracerPid:\s+(\d+)/m.exec(docker('exec', dest, 'cat', `/proc/${pid}/status`))?.[1]).toBe('0');

    // It answers its self-check there, and keeps writing.
    const first = await askCheck(pid, session);
    await new Promise((r) => setTimeout(r, 500));
    const second = await askCheck(pid, session);
    const writes = (l: string) => Number(/writes=(\d+)/.exec(l)?.[1] ?? 0);
    expect(writes(second), `${first} then ${second}`).toBeGreaterThan(writes(first));

    // The network is internal: no route out of the containers.
    const nets = docker('network', 'inspect', `${project}_migration`, '--format', '{{.Internal}}').trim();
    expect(nets).toBe('true');
  }, 900_000);
});
