import os from 'node:os';
import { PAGE_SIZE } from '@forecopy/protocol';
import type { MigrationReport } from '../report.js';
import type { MigrationSession } from './session.js';
import type { Verification } from './verify.js';

/** What the steps measured, for the report. */
export interface Measured {
  startedAt: string;
  /** performance.now() when the migration proper began (after any modelling). */
  t0: number;
  modelMs: number;
  /** From the freeze to the destination's acknowledgement of the final round. */
  stopCopyMs: number;
  stopReason: string;
}

/** The migration's report, once the destination answered the checksums. */
export function migrationReport(s: MigrationSession, m: Measured, v: Verification): MigrationReport {
  const { totals, opts } = s;
  const { tracker, space, sampler } = s.tracking;
  return {
    verified: v.mismatch === null,
    // Until the process runs again; migrate() sets the whole once the handover ended. A report of a
    // failed verification keeps this: the process was thawed right after.
    downtimeMs: m.stopCopyMs + v.verifyMs,
    stopCopyMs: m.stopCopyMs,
    stopCopyParts: { ...s.stopCopyParts },
    totalMs: v.answeredAt - m.t0,
    verifyMs: v.verifyMs,
    verifyMode: s.verify.mode,
    verifyReason: s.verify.reason,
    modelMs: m.modelMs,
    memoryPages: space.livePages,
    pagesSent: totals.pagesSent,
    pagesResent: totals.pagesResent,
    bytesSent: totals.bytesSent,
    bytesOfMemory: totals.pagesSent * PAGE_SIZE,
    zeroPages: totals.zeroPages,
    lz4Pages: totals.lz4Pages,
    ...s.sender.compression,
    streams: s.sender.streams,
    batchPages: s.opts.batchPages,
    policy: s.policy.name,
    stopReason: m.stopReason,
    tracker: tracker.kind,
    trackingHoldMs: { startMs: tracker.startHoldMs },
    pid: opts.pid,
    destination: `${opts.host}:${opts.port}`,
    after: opts.after,
    scans: { ...sampler.scans },
    rounds: s.rounds,
    policyStatus: s.policy.status?.(),
    machine: machineNote(),
    startedAt: m.startedAt,
    ...(v.mismatch ? { mismatch: v.mismatch } : {}),
  };
}

function machineNote(): MigrationReport['machine'] {
  const cpus = os.cpus().length;
  return {
    cpus,
    note: `measured on ${os.hostname()}, ${cpus} cores shared by the workload, the source and any local destination`,
  };
}
