import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../src/procs.js';

/**
 * docker-compose.yml for real: a `source` container (mw + forecopy-source) migrates to a `dest`
 * container (forecopy-dest) over a private compose network with no route out. Builds the image
 * from the Dockerfile (on the base that scripts/docker-base.sh makes without a registry).
 */
process.env.TESTCONTAINERS_RYUK_DISABLED = 'true'; // the reaper image cannot be pulled here

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

const skip = dockerSkipReason();
if (skip) console.warn(`compose: skipped: ${skip}`);

describe.skipIf(skip)('docker-compose deployment', () => {
  const id = randomBytes(4).toString('hex');
  let env: { down: (o?: object) => Promise<unknown> } | null = null;
  afterAll(async () => {
    await env?.down({ timeout: 10_000, removeVolumes: true });
  }, 120_000);

  it('migrates mw from the source container to the dest container, verified', async () => {
    const { DockerComposeEnvironment, Wait } = await import('testcontainers');
    const started = await new DockerComposeEnvironment(ROOT, 'docker-compose.yml')
      .withBuild()
      .withProjectName(`forecopy${id}`)
      .withEnvironment({ FORECOPY_ID: id, MW_MB: '64', POLICY: 'precopy', FORECOPY_PSK: randomBytes(32).toString('hex') })
      .withClientOptions({ executable: { standalone: true, executablePath: 'docker-compose' } })
      .withWaitStrategy(`forecopy-dest-${id}`, Wait.forLogMessage(/listening on/))
      .withWaitStrategy(`forecopy-source-${id}`, Wait.forOneShotStartup())
      .withStartupTimeout(600_000)
      .up();
    env = started;
    const code = execFileSync('docker', ['wait', `forecopy-source-${id}`], { encoding: 'utf8', timeout: 300_000 }).trim();
    const sourceOut = execFileSync('docker', ['logs', `forecopy-source-${id}`], { encoding: 'utf8' });
    expect(code, sourceOut).toBe('0');
    expect(sourceOut).toMatch(/VERIFIED/);
    const destCode = execFileSync('docker', ['wait', `forecopy-dest-${id}`], { encoding: 'utf8', timeout: 60_000 }).trim();
    expect(destCode).toBe('0');
    
    // The network is internal: no route out of the containers.
    const nets = execFileSync('docker', ['network', 'inspect', `forecopy${id}_migration`, '--format', '{{.Internal}}'], { encoding: 'utf8' }).trim();
    expect(nets).toBe('true');
  }, 900_000);
});
