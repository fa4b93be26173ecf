import fs from 'node:fs';
import type { Logger } from 'pino';
import { encodeTraceHeader, encodeTraceSample } from '@forecopy/filter';
import { PAGE_SIZE } from '@forecopy/protocol';
import type { TrackerChoice } from '@forecopy/linux';
import { requireProcess } from './process-checks.js';
import type { Progress } from './progress.js';
import { openTracking } from './tracking.js';
import { helloEvent, sampleEvent, type UiEvent } from './ui-events.js';

export interface RecordOptions {
  pid: number;
  seconds: number;
  intervalMs: number;
  out: string;
  tracker: TrackerChoice;
  log: Logger;
  onProgress?: (p: Progress) => void;
  /** Live events for the dashboard (--ui). */
  onEvent?: (e: UiEvent) => void;
}

/**
 * `forecopy-source record`: the pages a process writes in each interval, into a trace file
 * (format: packages/filter/src/trace-format.ts) for `forecopy-sim`. Tracking is removed from the
 * process when it ends, whatever the outcome. Returns a summary line.
 */
export async function recordTrace(o: RecordOptions): Promise<string> {
  requireProcess(o.pid);
  const { sampler, space, close } = openTracking(o.pid, o.tracker, o.intervalMs);
  let fd = -1;
  try {
    fd = fs.openSync(o.out, 'w');
    const header = encodeTraceHeader({
      intervalMs: o.intervalMs,
      pageSize: PAGE_SIZE,
      meta: { pid: o.pid, startedAt: new Date().toISOString(), layout: space.layout() },
    });
    fs.writeSync(fd, header);
    let bytes = header.length;
    let samples = 0;
    const t0 = sampler.now();
    o.onEvent?.(helloEvent(o.pid, 'recording', space.livePages));
    // The live indices as of the last sample, and the layout they are of: a mapping gone since has
    // died. Only a new layout (a mapping came or went) can have any.
    let live = space.live.clone();
    let layout = space.layoutVersion;
    sampler.onSample((s) => {
      o.onEvent?.(sampleEvent(s.pages, s.atMs, null));
      let died: Array<[number, number]> = [];
      if (space.layoutVersion !== layout) {
        const now = space.live;
        died = live
          .resized(s.pages.size) // the sample's space: the indices it can name
          .andNot(now.size === s.pages.size ? now : now.resized(s.pages.size))
          .runs();
        live = now.clone();
        layout = space.layoutVersion;
      }
      const b = encodeTraceSample(s.atMs - t0, s.pages, died);
      fs.writeSync(fd, b);
      bytes += b.length;
      samples++;
      o.onProgress?.({ phase: 'modelling', doneMs: s.atMs - t0, totalMs: o.seconds * 1000, samples });
    });
    sampler.start();
    await new Promise((r) => setTimeout(r, o.seconds * 1000));
    return `trace of pid ${o.pid}: ${samples} samples of ${o.intervalMs} ms, ${space.livePages} pages, ${(bytes / 1024).toFixed(1)} KiB, written to ${o.out}`;
  } finally {
    close();
    if (fd >= 0) fs.closeSync(fd);
  }
}
