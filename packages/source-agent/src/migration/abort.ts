import { abort, type MessageChannel } from '@forecopy/protocol';
import { SourceError } from '../errors.js';
import { asChannelError, asSourceError } from '../errno-map.js';
import type { MigrateOptions } from './options.js';

/**
 * The failure path: turns `e` into the error the user sees, tells the dashboard, and tells the
 * destination (Abort) unless the handover was already confirmed, then closes the channel.
 * Returns the error to throw.
 */
export async function abortMigration(
  e: unknown,
  opts: MigrateOptions,
  channel: MessageChannel,
  handedOver: boolean,
  t0: number,
): Promise<Error> {
  const err = asChannelError(asSourceError(e, opts.pid));
  opts.onEvent?.({ type: 'done', verified: false, downtimeMs: 0, totalMs: performance.now() - t0, pagesSent: 0, error: err.message });
  if (!handedOver && !channel.closed) {
    // The code of the agent's error, else the system's (errno) if the error has one.
    const code = (err as { code?: string }).code ?? SourceError.errorCode;
    const reason = err instanceof Error ? err.message : String(err);
    await channel.send(abort({ code, reason })).catch(() => {});
  }
  channel.destroy();
  return err;
}
