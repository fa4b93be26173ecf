import type { RoundSummary } from '@forecopy/filter';
import type { AfterAction } from './migration/release.js';

// The source agent's metrics, declared once. The CLI table, the JSON report (--report) and the
// logs all come from `MigrationReport`.
//
// Time figures are wall-clock milliseconds on the source host. On a single machine the workload,
// the source and the destination share the same cores: say so next to any figure you publish.

/** A round as the filter summarizes it (the simulator reports the same), with the bytes it put on the wire. */
export interface RoundReport extends RoundSummary, Partial<RoundConvergence> {
  /** Bytes on the wire for the round (frames, compressed). */
  bytesSent: number;
  /** Of pagesSent, the pages an earlier round had sent too (written again since, or sent again after a hold). */
  pagesResent: number;
}

/** What a round says of convergence (auto-converge and the downtime limit). */
export interface RoundConvergence {
  /** The CPU throttle in force while the round ran, in percent (auto-converge). */
  throttlePercent: number;
  /** Pages written per second during the round. */
  dirtyRate: number;
  /** The link rate measured so far (by rounds of 100 ms or more; before any, --bandwidth's), in bits per second of page data. */
  bandwidthBps: number;
  /** How long the stop-and-copy round would take if the migration stopped after this round. */
  expectedDowntimeMs: number;
  /**
   * The CPUs the process used while the round ran (1.0 = one CPU all the time), from its threads'
   * run time (ns): beside `autoConverge.baselineCpus`, how much the throttle in force slowed it. A
   * program paced by the clock may make up for a duty cycle's stops and use what it used before.
   * Absent where the process's threads could not be read.
   */
  processCpus?: number;
}

/** A round's report, its fields in the order the JSON report and the logs have always had. */
export function roundReport(summary: RoundSummary, bytesSent: number, pagesResent: number, c?: RoundConvergence): RoundReport {
  const { final, ...counts } = summary;
  return { ...counts, bytesSent, final, pagesResent, ...(c && !final ? c : {}) };
}

export interface MigrationReport {
  /** The destination compared every page's checksum with the frozen source and found them equal. */
  verified: boolean;
  /**
   * The whole time the process did not run: from the freeze until it runs again (restored and
   * released at the destination, or thawed here with --after resume); with --after kill or stop
   * and no restore, until the handover ended. Its parts are in `downtimeParts`.
   */
  downtimeMs: number;
  /** From the freeze to the destination's acknowledgement that the final round is applied. */
  stopCopyMs: number;
  /**
   * Where stopCopyMs went, ms: freezeMs (stopping every thread), collectMs (the last writes and
   * mappings collected, the state captured for a restore), announceMs (StopAndCopy and the final
   * RoundStart sent), sendMs (the final round's pages read and sent), ackMs (RoundEnd sent until
   * the destination acknowledged the round applied). They add up to stopCopyMs.
   */
  stopCopyParts?: Record<string, number>;
  /**
   * The parts of the downtime, in ms: stopCopyMs (freeze, capture of the state for a restore, last
   * round), stateMs (sending the state), verifyMs, handoverMs (Commit to Committed, the restore at
   * the destination included), restoreMs (the destination's own measure of its restore),
   * releaseMs (the original killed and gone, Release answered; or the thaw).
   */
  downtimeParts?: Record<string, number>;
  /** From the start of the migration (after any modelling) to the verification answer. */
  totalMs: number;
  /** Time spent hashing and comparing after the final round (the process stays frozen). */
  verifyMs: number;
  /** How the image was verified: full (every page hashed again) or incremental (one digest). */
  verifyMode?: 'full' | 'incremental';
  /** Why that mode (--verify auto chooses by the downtime limit). */
  verifyReason?: string;
  /** Time spent building the policy's model before the migration began (markov), else ~0. */
  modelMs: number;
  /** Live pages of the process's migrated memory at the end. */
  memoryPages: number;
  /** Pages sent over all rounds, the final one included. */
  pagesSent: number;
  /** Of pagesSent, the pages an earlier round had sent too: pages sent less this is the pages sent at all. */
  pagesResent: number;
  /** Bytes on the wire over all rounds (frame headers and payload, after compression). */
  bytesSent: number;
  /** Bytes of memory those pages cover (pagesSent x page size). */
  bytesOfMemory: number;
  zeroPages: number;
  /** Pages sent lz4-compressed. */
  lz4Pages: number;
  /** Pages lz4 ran on: those sent lz4, the rest of the batches it was tried on, and the samples of batches sent raw. */
  pagesCompressed?: number;
  /** Connections the pages went out on (`--streams`, as many as the destination accepted). */
  streams?: number;
  /** Pages per PageBatch (`--batch-pages`, or its default for the link). */
  batchPages?: number;
  /** Payload bytes lz4 saved (a page's size less its compressed size, over the pages sent lz4). */
  compressionSavedBytes?: number;
  policy: string;
  stopReason: string;
  tracker: string;
  /**
   * How long the tracker could hold the process up outside the downtime, ms (upper bounds: the
   * whole calls). startMs: starting it, before the first round (the uffd-wp tracker stops the
   * process for one injected system call; registering and write-protecting its memory hold its
   * memory map, which a write fault of the process waits for). stopMs, with --after resume:
   * removing it once the process runs again (the write protection is lifted under the same
   * hold). Each time the process may not run is in this report: these, the downtime and the
   * throttle (autoConverge).
   */
  trackingHoldMs?: { startMs: number; stopMs?: number };
  pid: number;
  destination: string;
  after: AfterAction;
  /** Scans of the dirty tracker and the time they took. */
  scans: { count: number; totalMs: number; maxMs: number };
  rounds: RoundReport[];
  policyStatus?: Record<string, unknown>;
  /** Pages that differed, when verification failed. */
  mismatch?: {
    pages: number;
    firstPages: number[];
    /** Where the first pages are in the process: address and mapping (perms and path). */
    where?: Array<{ page: number; address: string | null; mapping: string | null }>;
    /** The process state (registers, mappings, files) the destination checked differs (restore). */
    state?: boolean;
    /** Incremental verification: the digests of the page hashes differ. */
    digest?: boolean;
  };
  machine: { cpus: number; note: string };
  startedAt: string;
  /**
   * When the freeze began, the downtime's start (ISO 8601, this host's wall clock, to the ms): to
   * set it beside the process's own logs.
   */
  frozenAt?: string;
  /** The process's pid at the destination, when the destination restored it. */
  restoredPid?: number;
  /** How long the destination took to rebuild the process (part of the downtime). */
  restoreMs?: number;
  /** --downtime-limit-ms, when set; whether the downtime stayed within it, and by how much it did not. */
  downtimeLimitMs?: number;
  downtimeLimitMet?: boolean;
  downtimeOverMs?: number;
  /** Auto-converge: how it throttled (cgroup-v1, cgroup-v2, ptrace), the most it did, or why it could not. */
  autoConverge?: {
    throttle: string | null;
    maxPercent: number;
    /** The CPUs the process used before it was throttled; a cgroup's quota is a share of this. */
    baselineCpus?: number;
    /**
     * When the duty cycle held the process at the stop decision, its hold became the freeze (the
     * process did not run between): how long it had held it by then, ms. Not part of downtimeMs,
     * which starts at the stop decision; the process did not run for both.
     */
    heldIntoFreezeMs?: number;
    /**
     * The time the throttle took from the process, ms: the time each throttle was in force times
     * its percent (at 50% for 2 s: 1,000). What the process paid for the downtime it saved.
     */
    throttledMs?: number;
    unavailable?: string;
  };
}

const num = (n: number) => n.toLocaleString('en-US');
const ms = (n: number) => `${n.toFixed(1)} ms`;
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

/** The human-readable table printed at the end of `migrate`. */
export function formatReport(r: MigrationReport): string {
  const lines: string[] = [];
  lines.push(`forecopy migration of pid ${r.pid} to ${r.destination}: ${r.verified ? 'VERIFIED' : 'NOT VERIFIED'}`);
  const fate =
    r.restoredPid !== undefined
      ? `process restored at the destination as pid ${r.restoredPid} (in ${ms(r.restoreMs ?? 0)}), killed here`
      : `process ${afterWord(r.after)} after verification`;
  lines.push(`  policy ${r.policy}, tracker ${r.tracker}, stopped by ${r.stopReason}, ${fate}`);
  lines.push(
    `  downtime ${ms(r.downtimeMs)}   total ${ms(r.totalMs)}   verify ${ms(r.verifyMs)}${r.verifyMode ? ` (${r.verifyMode})` : ''}${r.modelMs >= 1 ? `   modelling ${ms(r.modelMs)} (before)` : ''}`,
  );
  if (r.downtimeParts) {
    const names: Record<string, string> = {
      stopCopyMs: 'stop-and-copy',
      stateMs: 'state',
      verifyMs: 'verify',
      handoverMs: 'handover',
      restoreMs: 'of which restore',
      releaseMs: 'release',
    };
    const parts = Object.entries(r.downtimeParts).map(([k, v]) => `${names[k] ?? k} ${ms(v)}`);
    lines.push(`  the process did not run for ${ms(r.downtimeMs)}: ${parts.join(', ')}`);
  }
  if (r.stopCopyParts && Object.keys(r.stopCopyParts).length > 0) {
    const parts = Object.entries(r.stopCopyParts).map(([k, v]) => `${k.replace(/Ms$/, '')} ${ms(v)}`);
    lines.push(`  stop-and-copy ${ms(r.stopCopyMs)}: ${parts.join(', ')}`);
  }
  lines.push(
    `  memory ${num(r.memoryPages)} pages (${mib(r.memoryPages * 4096)})   sent ${num(r.pagesSent)} pages (${r.pagesResent !== undefined ? `${num(r.pagesResent)} of them sent again; ` : ''}${mib(r.bytesOfMemory)} of memory, ${mib(r.bytesSent)} on the wire; ${num(r.zeroPages)} zero, ${num(r.lz4Pages)} lz4${r.pagesCompressed !== undefined ? ` of ${num(r.pagesCompressed)} tried, ${mib(r.compressionSavedBytes ?? 0)} saved` : ''}${(r.streams ?? 1) > 1 ? `; over ${r.streams} connections` : ''})`,
  );
  lines.push(
    `  tracker scans ${r.scans.count}, ${ms(r.scans.totalMs)} in all, ${ms(r.scans.maxMs)} at most${r.trackingHoldMs ? `; starting it held the process up for at most ${ms(r.trackingHoldMs.startMs)}${r.trackingHoldMs.stopMs !== undefined ? `, removing it after the thaw ${ms(r.trackingHoldMs.stopMs)}` : ''} (not downtime)` : ''}`,
  );
  lines.push('');
  // Auto-converge's columns only where it throttled.
  const throttled = r.rounds.some((x) => (x.throttlePercent ?? 0) > 0);
  // A report written before pagesResent was counted has no "again" column.
  const again = r.rounds.every((x) => x.pagesResent !== undefined);
  const head = [
    'round',
    'sent',
    ...(again ? ['again'] : []),
    'dirtied',
    'filtered',
    'ms',
    'wire MiB',
    ...(throttled ? ['throttle %', 'expected ms'] : []),
  ];
  const rows = r.rounds.map((x) => [
    x.final ? `${x.round} (stop)` : String(x.round),
    num(x.pagesSent),
    ...(again ? [num(x.pagesResent)] : []),
    num(x.pagesDirtied),
    num(x.pagesFiltered),
    x.durationMs.toFixed(1),
    (x.bytesSent / 1048576).toFixed(2),
    ...(throttled ? [x.final ? '' : String(x.throttlePercent ?? 0), x.final ? '' : (x.expectedDowntimeMs ?? 0).toFixed(0)] : []),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const fmt = (row: string[]) => `  ${row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')}`;
  lines.push(fmt(head));
  for (const row of rows) lines.push(fmt(row));
  if (r.downtimeLimitMs !== undefined) {
    lines.push(
      `  downtime limit ${r.downtimeLimitMs} ms: ${r.downtimeLimitMet ? 'met' : `not met, by ${ms(r.downtimeOverMs ?? 0)}`}${r.autoConverge ? `; auto-converge throttled to ${r.autoConverge.maxPercent}%${r.autoConverge.throttledMs ? `, taking ${ms(r.autoConverge.throttledMs)} of the process's time` : ''}${r.autoConverge.heldIntoFreezeMs !== undefined ? ` (its hold of the last ${ms(r.autoConverge.heldIntoFreezeMs)} ran on into the freeze)` : ''}${r.autoConverge.unavailable ? ` (unavailable: ${r.autoConverge.unavailable})` : ''}` : ''}`,
    );
  }
  if (r.mismatch) lines.push(`  MISMATCH: ${num(r.mismatch.pages)} pages differ, first: ${r.mismatch.firstPages.join(', ')}`);
  lines.push(`  (${r.machine.note})`);
  return lines.join('\n');
}

function afterWord(a: MigrationReport['after']): string {
  return a === 'kill' ? 'killed' : a === 'stop' ? 'left stopped' : 'resumed';
}
