import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { SlidingModelBuilder, type MarkovModel } from '@forecopy/filter';
import type { TrackerChoice } from '@forecopy/linux';
import { InputError } from './errors.js';
import { requireProcess } from './process-checks.js';
import { openTracking } from './tracking.js';

// `forecopy-source model --watch`: the paper builds its model while the process runs normally,
// so that a migration starts with a mature one. This keeps sampling the process every interval,
// keeps the model of a sliding window of the last `windowMinutes` (SlidingModelBuilder: between
// half the window and all of it), and rewrites the model file every `everySeconds`, atomically
// (a temporary file in the same directory, then rename), until SIGINT or SIGTERM. A migration
// loads the latest file with `migrate --policy markov --model FILE`.

export interface WatchModelOptions {
  pid: number;
  out: string;
  states: number;
  intervalMs: number;
  lwwsThreshold?: number;
  /** The window the model covers, minutes (default 10). */
  windowMinutes: number;
  /** How often the model file is rewritten, seconds (default 5). */
  everySeconds: number;
  tracker: TrackerChoice;
  log: Logger;
  /** One line per rewrite of the file (the CLI prints it on stderr). */
  print?: (line: string) => void;
  /** Ends the watch when it resolves (default: the first SIGINT or SIGTERM). */
  until?: Promise<unknown>;
}

/** Writes `bytes` to `file` atomically: a reader sees the old file or the new one, never a part. */
export function writeFileAtomic(file: string, bytes: Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw new InputError(`cannot write the model file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** Resolves on the first SIGINT or SIGTERM, and stops listening for them. */
function untilSignal(): Promise<string> {
  return new Promise((resolve) => {
    const on = (sig: string) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

/** Runs the watch; returns a summary line once it ends. Tracking is removed from the process whatever the outcome. */
export async function watchModel(o: WatchModelOptions): Promise<string> {
  if (!(o.windowMinutes > 0)) throw new InputError(`--window-minutes must be > 0, got ${o.windowMinutes}`);
  if (!(o.everySeconds > 0)) throw new InputError(`--every-seconds must be > 0, got ${o.everySeconds}`);
  requireProcess(o.pid);
  const until = o.until ?? untilSignal();
  const { sampler, space, close } = openTracking(o.pid, o.tracker, o.intervalMs);
  const epochSamples = Math.max(1, Math.round((o.windowMinutes * 60_000) / 2 / o.intervalMs));
  const opts = { states: o.states, ...(o.lwwsThreshold !== undefined ? { lwwsThreshold: o.lwwsThreshold } : {}) };
  let builder = new SlidingModelBuilder(space.totalPages, opts, epochSamples);
  let writes = 0;
  let model: MarkovModel | null = null;
  const save = () => {
    if (builder.samples === 0) return;
    model = builder.build();
    writeFileAtomic(o.out, model.toBytes());
    writes++;
    o.print?.(
      `model of pid ${o.pid}: ${builder.windowSamples} samples (${((builder.windowSamples * o.intervalMs) / 1000).toFixed(0)} s), ${model.observedStates} states, ${model.byteSize()} bytes, written to ${o.out}`,
    );
  };
  try {
    sampler.onSample((s) => {
      // A space that changed by more than an eighth is another process as far as the regions go.
      const size = s.pages.size;
      if (Math.abs(size - builder.totalPages) > builder.totalPages / 8) {
        o.log.info({ from: builder.totalPages, to: size }, 'the page space changed size: the model starts again');
        builder = new SlidingModelBuilder(size, opts, epochSamples);
      }
      builder.observe(s.pages);
    });
    sampler.start();
    let ended = false;
    void until.then(() => {
      ended = true;
    });
    while (!ended) {
      await Promise.race([until, new Promise((r) => setTimeout(r, o.everySeconds * 1000))]);
      if (sampler.error) throw sampler.error;
      save();
    }
    const m = model as MarkovModel | null;
    return `model of pid ${o.pid}: watched until stopped, ${writes} writes; ${m ? `${m.samples} samples with writes, ${m.byteSize()} bytes` : 'no samples with writes, no model written'}; ${o.out}`;
  } finally {
    close();
  }
}
