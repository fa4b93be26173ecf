import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { packMap, type Mapping } from '@forecopy/protocol';
import {
  Husk,
  RestoreError,
  RestoredProcess,
  checkIdentity,
  parseProcessState,
  parseRestorePreview,
  restoreProcess,
  sameProcessRuns,
  startTimeOf,
  vdsoFingerprint,
  type ProcessState,
  type StdioBinding,
} from '@forecopy/linux';
import { HuskImage } from './husk-image.js';

// The destination's part of a restore (forecopy-dest listen --restore):
// - at Hello: the files the process needs exist here (and those it only reads are the same), the
//   kernel's vDSO is the source's, a husk is started and made room in: the image is its memory;
// - after the final round: the process state arrives, is checked, and hashed for verification;
// - at Commit: the process is rebuilt in the husk and held stopped; it runs on Release.
// A record (restore.json in the session's directory) names the held or restoring process, so a
// later listener can answer Release or Discard, and clean up after a crash mid-restore.

export interface RestoreSettings {
  /** Where standard streams that were pipes, terminals or sockets go (default: DIR/<session>/). */
  stdin?: string;
  stdout?: string;
  stderr?: string;
  /** Write the restored pid here once it runs. */
  pidFile?: string;
  /** Fault injection: the restore fails (E_RESTORE_TEST) after the husk is built. */
  failForTest?: boolean;
  /** Fault injection: flip a byte of the received process state (verification must catch it). */
  corruptStateForTest?: boolean;
  /** Fault injection: the whole agent dies (exit 137) in the middle of the restore. */
  dieDuringForTest?: boolean;
}

export interface RestoreRecord {
  pid: number;
  startTime: number;
  status: 'restoring' | 'held' | 'running' | 'discarded';
}

/** Checks a Hello's preview, starts the husk and returns the image that lives in it. */
export function prepareRestore(
  raw: Record<string, unknown> | undefined,
  imageDir: string,
  sessionId: string,
  maxBytes: number,
  layout: readonly Mapping[],
): HuskImage {
  if (!raw) throw new RestoreError('E_RESTORE_STATE', 'the source sent nothing to restore from (an older forecopy-source?)');
  const preview = parseRestorePreview(raw);
  for (const f of preview.files) {
    if (!fs.existsSync(f.path)) throw new RestoreError('E_RESTORE_FILE', `${f.path}, which the process uses, does not exist here`);
    if (!f.writable) checkIdentity(f.path, f.size, f.mtimeNs);
  }
  const husk = Husk.spawn();
  try {
    const mine = vdsoFingerprint(husk.pid);
    if (preview.vdso && mine && preview.vdso.sha256 !== mine.sha256) {
      throw new RestoreError('E_RESTORE_KERNEL', 'the vDSO differs between the hosts: both must run the same kernel build');
    }
    husk.prepare(preview.vmas);
    const image = new HuskImage(imageDir, sessionId, maxBytes, husk);
    image.applyLayout(layout);
    return image;
  } catch (e) {
    husk.kill();
    throw e;
  }
}

/** A ProcessState as received: checked, and hashed as the source hashed it. */
export interface ReceivedState {
  state: ProcessState;
  contents: Buffer;
  /** xxh64 of the state packed again and its contents, 16 hex digits. */
  hash: string;
}

export function receiveState(
  raw: Record<string, unknown>,
  contents: Buffer,
  h64: (b: Uint8Array) => bigint,
  settings: RestoreSettings,
): ReceivedState {
  let state: ProcessState;
  try {
    state = parseProcessState(raw);
  } catch (e) {
    throw new RestoreError('E_RESTORE_STATE', `the process state is malformed: ${(e as Error).message}`, e);
  }
  const pages = state.contents.reduce((n, c) => n + c.pages, 0);
  if (pages * 4096 !== contents.length)
    throw new RestoreError('E_RESTORE_STATE', `the process state announces ${pages} pages of contents, ${contents.length} bytes came`);
  if (settings.corruptStateForTest) state.threads[0].regs[8 * 16] ^= 0xff; // the main thread's rip
  const hash = h64(Buffer.concat([packMap(state as unknown as Record<string, unknown>), contents]))
    .toString(16)
    .padStart(16, '0');
  return { state, contents, hash };
}

/** Rebuilds the process in the image's husk and holds it stopped. Kills the husk on failure. */
export function runRestore(image: HuskImage, received: ReceivedState, settings: RestoreSettings, log: Logger): RestoredProcess {
  const stdio: StdioBinding = {
    stdin: settings.stdin ?? '/dev/null',
    stdout: settings.stdout ?? image.stdioPath('stdout.log'),
    stderr: settings.stderr ?? image.stdioPath('stderr.log'),
  };
  writeRecord(image.partialDir, { pid: image.husk.pid, startTime: Number(startTimeOf(image.husk.pid)), status: 'restoring' });
  const restored = restoreProcess(image.husk, received.state, received.contents, {
    stdio,
    onStep: (step) => {
      log.debug({ step }, 'restore step done');
      if (step === 'process' && settings.failForTest)
        throw new RestoreError('E_RESTORE_TEST', 'the restore failed on purpose (--test-fail-restore)');
      if (step === 'threads' && settings.dieDuringForTest) process.exit(137);
    },
  });
  writeRecord(image.partialDir, { pid: restored.pid, startTime: Number(restored.startTime), status: 'held' });
  return restored;
}

export function recordFile(dir: string): string {
  return path.join(dir, 'restore.json');
}

export function writeRecord(dir: string, r: RestoreRecord): void {
  fs.writeFileSync(`${recordFile(dir)}.tmp`, JSON.stringify(r, null, 2));
  fs.renameSync(`${recordFile(dir)}.tmp`, recordFile(dir));
}

export function readRecord(dir: string): RestoreRecord | null {
  try {
    return JSON.parse(fs.readFileSync(recordFile(dir), 'utf8')) as RestoreRecord;
  } catch {
    return null;
  }
}

/**
 * Release or Discard of a session's held process, on the connection of the migration or any
 * later one. Returns the answer's fields. Idempotent: a second Release finds it running.
 */
export function resolveHeld(
  sessionDir: string,
  run: boolean,
  settings: RestoreSettings,
): { running: boolean; pid: number; reason: string } {
  const r = readRecord(sessionDir);
  if (!r) return { running: false, pid: 0, reason: 'no restored process is recorded for this session here' };
  if (!sameProcessRuns(r.pid, r.startTime)) {
    writeRecord(sessionDir, { ...r, status: 'discarded' });
    return { running: false, pid: r.pid, reason: `the restored process ${r.pid} is gone` };
  }
  const held = new RestoredProcess(r.pid, String(r.startTime));
  if (run) {
    held.release();
    writeRecord(sessionDir, { ...r, status: 'running' });
    if (settings.pidFile) fs.writeFileSync(settings.pidFile, `${r.pid}\n`);
    return { running: true, pid: r.pid, reason: 'running' };
  }
  if (r.status === 'running') return { running: true, pid: r.pid, reason: 'it already runs: the source released it before' };
  held.discard();
  writeRecord(sessionDir, { ...r, status: 'discarded' });
  return { running: false, pid: r.pid, reason: 'ended: the original runs at the source' };
}

/**
 * At start-up: a partial session left by a listener that died mid-restore may have a husk or a
 * half-restored process: end it (it never ran), so that nothing of it lingers.
 */
export function cleanUpRestoring(partialDir: string, log: Logger): void {
  const r = readRecord(partialDir);
  if (!r || !sameProcessRuns(r.pid, r.startTime)) return;
  try {
    process.kill(r.pid, 'SIGKILL');
    log.warn({ pid: r.pid }, 'ended a process left half-restored by a previous run');
  } catch {
    // gone meanwhile
  }
}
