import type { Logger } from 'pino';
import type { Policy, StopRules } from '@forecopy/filter';
import type { Security, VerifyMode } from '@forecopy/protocol';
import type { TrackerChoice } from '@forecopy/linux';
import type { PageSpace } from '../page-space.js';
import type { Sampler } from '../sampler.js';
import type { Progress } from '../progress.js';
import type { UiEvent } from '../ui-events.js';
import type { AfterAction } from './release.js';
import type { AutoConvergeOptions } from './auto-converge.js';

export interface MigrateOptions {
  pid: number;
  host: string;
  port: number;
  stopRules: StopRules;
  /** Bits per second; 0 = unpaced. */
  bandwidthBps: number;
  after: AfterAction;
  intervalMs: number;
  compress: boolean;
  batchPages: number;
  /** Connections to send pages on, the session's own included (`--streams`; 1 = that one only). */
  streams?: number;
  tracker: TrackerChoice;
  /**
   * Makes the policy once tracking runs. It may sample the process first (modelling) through the
   * sampler it is given.
   */
  makePolicy: (ctx: PolicyContext) => Promise<Policy>;
  log: Logger;
  onProgress?: (p: Progress) => void;
  connectTimeoutMs?: number;
  /** How long to wait for any answer of the destination. */
  replyTimeoutMs?: number;
  /** Mutual TLS or a pre-shared key; null/undefined = plain TCP. */
  security?: Security | null;
  /** Live events for the dashboard (--ui). */
  onEvent?: (e: UiEvent) => void;
  /** Fault injection for tests: the agent dies (SIGKILL) right after freezing the process. */
  dieWhenFrozen?: boolean;
  /** Fault injection for tests: the agent dies (SIGKILL) once the destination restored and held the process. */
  dieWhenRestored?: boolean;
  /** QEMU's auto-converge: throttle the process while it writes faster than the link carries. */
  autoConverge?: AutoConvergeOptions;
  /**
   * How the image is verified: the frozen memory hashed again (full), or one digest
   * (incremental), or full where it fits a quarter of the downtime limit (auto, the default).
   */
  verify?: VerifyMode | 'auto';
  /** Move only the memory image, even where that leaves no running copy (--image-only). */
  imageOnly?: boolean;
  /** Where handovers in progress are recorded for `forecopy-source resolve`. */
  stateDir: string;
}

/** What `makePolicy` is given. */
export interface PolicyContext {
  sampler: Sampler;
  space: PageSpace;
  log: Logger;
  onProgress?: (p: Progress) => void;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_REPLY_TIMEOUT_MS = 60_000;

/** How long to wait for any answer of the destination. */
export function replyTimeoutOf(opts: MigrateOptions): number {
  return opts.replyTimeoutMs ?? DEFAULT_REPLY_TIMEOUT_MS;
}
