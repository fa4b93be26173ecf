import type { Logger } from 'pino';
import type { Policy } from '@forecopy/filter';
import type { MessageChannel } from '@forecopy/protocol';
import type { PageSender, SendResult } from '../sender.js';
import type { PageTrace } from '../debug-pages.js';
import type { RoundReport } from '../report.js';
import type { Tracking } from '../tracking.js';
import type { MigrateOptions } from './options.js';
import type { AutoConverge } from './auto-converge.js';
import type { DowntimeForecast, VerifyChoice } from './downtime-forecast.js';

/** Totals over all rounds, the final one included. */
export interface Totals {
  pagesSent: number;
  /** Of pagesSent, pages an earlier round had sent too. */
  pagesResent: number;
  /** Bytes on the wire. */
  bytesSent: number;
  zeroPages: number;
  lz4Pages: number;
}

/** What the steps from Hello on share (hello.ts makes it). */
export interface MigrationSession {
  readonly opts: MigrateOptions;
  readonly log: Logger;
  readonly channel: MessageChannel;
  /** How long to wait for any answer of the destination. */
  readonly replyTimeoutMs: number;
  readonly tracking: Tracking;
  readonly policy: Policy;
  readonly sessionId: string;
  readonly sender: PageSender;
  /** FORECOPY_DEBUG_PAGES: what was sent and reported written, page by page; null when off. */
  readonly trace: PageTrace | null;
  readonly totals: Totals;
  /** One report a round, in order, the stop-and-copy round last. */
  readonly rounds: RoundReport[];
  /** The version of the page space's layout the destination was last told (Hello, RoundStart). */
  announcedLayout: number;
  /** The link rate in pages a second: measured over the last round, the bandwidth before that. */
  pageRate: number;
  /** The most bytes a second the link has carried in a round so far. */
  wireRate: number;
  /** The destination rebuilds the process and runs it (HelloAck.restore). */
  readonly restore: boolean;
  /** xxh64 of the ProcessState sent (restore only), verified with the checksums. */
  stateHash: string | null;
  /** Throttles the process while it writes faster than the link carries (null: off). */
  readonly autoConverge: AutoConverge | null;
  /** How the image is verified, and why (--verify auto decides at Hello). */
  readonly verify: VerifyChoice;
  /** The downtime's fixed costs (freeze, scan, verification, handover), for the stop rule. */
  readonly forecast: DowntimeForecast;
  /** Where stop-and-copy's time went, ms, in order (see MigrationReport.stopCopyParts). */
  readonly stopCopyParts: Record<string, number>;
}

export function addToTotals(totals: Totals, sent: SendResult): void {
  totals.pagesSent += sent.pagesSent;
  totals.pagesResent += sent.pagesResent;
  totals.bytesSent += sent.bytesOnWire;
  totals.zeroPages += sent.zeroPages;
  totals.lz4Pages += sent.lz4Pages;
}
