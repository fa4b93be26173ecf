import fs from 'node:fs';
import type { Logger } from 'pino';
import { encodeTraceHeader, encodeTraceSample } from '@forecopy/filter';
import { PAGE_SIZE } from '@forecopy/protocol';
import { createTracker, isMigratable, readMaps } from '@forecopy/linux';
import { PageSpace } from './page-space.js';
import { Sampler } from './sampler.js';
import { ProcessError } from './errors.js';
import { sampleEvent, type Progress } from './migrate.js';
import type { UiEvent } from './ui-server.js';

export interface RecordOptions {
  pid: number;
  seconds: number;
  intervalMs: number;
  out: string;
  tracker: 'auto' | 'uffd-wp' | 'soft-dirty';
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
  if (!fs.existsSync(`/proc/${o.pid}`)) throw new ProcessError(`no process with pid ${o.pid}`);
  const mappings = readMaps(o.pid).filter(isMigratable);
  const tracker = createTracker(o.pid, o.tracker);
  const fd = fs.openSync(o.out, 'w');
  let bytes = 0;
  let samples = 0;
  try {
    tracker.start(mappings);
    const space = new PageSpace(PAGE_SIZE);
    space.reconcile(mappings);
    const header = encodeTraceHeader({
      intervalMs: o.intervalMs,
      pageSize: PAGE_SIZE,
      meta: { pid: o.pid, startedAt: new Date().toISOString(), layout: space.layout() },
    });
    fs.writeSync(fd, header);
    bytes += header.length;
    const sampler = new Sampler(o.pid, tracker, space, o.intervalMs);
    const t0 = sampler.now();
    o.onEvent?.({ type: 'hello', pid: o.pid, policy: 'recording', pages: space.livePages, buckets: 64 });
    sampler.onSample((s) => {
      if (o.onEvent) o.onEvent(sampleEvent(s.pages, s.atMs, null));
      const b = encodeTraceSample(s.atMs - t0, s.pages);
      fs.writeSync(fd, b);
      bytes += b.length;
      samples++;
      o.onProgress?.({ phase: 'modelling', doneMs: s.atMs - t0, totalMs: o.seconds * 1000, samples });
    });
    sampler.start();
    try {
      await new Promise((r) => setTimeout(r, o.seconds * 1000));
    } finally {
      sampler.stop();
    }
    return `trace of pid ${o.pid}: ${samples} samples of ${o.intervalMs} ms, ${space.livePages} pages, ${(bytes / 1024).toFixed(1)} KiB, written to ${o.out}`;
  } finally {
    fs.closeSync(fd);
    tracker.stop();
  }
}
