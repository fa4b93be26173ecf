import { TraceFormatError } from './errors.js';
import { PageBitmap } from './page-bitmap.js';

// The dirty-trace file (`forecopy-source record`), version 2. Little-endian throughout.
//
//   header   "FCTR" | u32 version | f64 intervalMs | u32 pageSize | u32 json length | json
//            (json: { pid, startedAt, layout: [{ start, pages, indexBase, prot, name }] })
//   samples  repeated until the end of the file:
//            f64 atMs | varint totalPages | varint runs | runs x (varint gap, varint length)
//            | varint died runs | died runs x (varint gap, varint length)      (version 2 only)
//
// A sample is the set of pages written since the previous one, as runs of page indices in the
// session's linear page space: `gap` is the distance from the end of the previous run (from 0
// for the first), `length` the run's pages. Runs keep a trace small: a 1 GiB process written at
// 20,000 pages a second records about 60 KB a second (see BENCHMARKS.md).
//
// The page space only grows: a mapping that appears gets new indices past the old end
// (`totalPages` grows, and the sample counts its pages as written), one that vanishes leaves its
// indices dead for good. Version 2 says which: `died` are the indices whose mapping vanished
// since the previous sample. Version 1 traces (recorded before) do not; they are still read, and
// their dead indices count as mapped to the end.

export const TRACE_MAGIC = 'FCTR';
export const TRACE_VERSION = 2;

export interface TraceHeader {
  intervalMs: number;
  pageSize: number;
  meta: { pid?: number; startedAt?: string; layout?: unknown[]; [k: string]: unknown };
}

export interface TraceSample {
  atMs: number;
  pages: PageBitmap;
  /** Indices whose mapping vanished since the previous sample, as [start, end) runs (absent: none, or a version 1 trace). */
  died?: Array<[number, number]>;
}

export interface Trace extends TraceHeader {
  /** The file's format version (1: no record of the mappings that vanished); absent for a trace built in memory. */
  version?: number;
  samples: TraceSample[];
  /** The largest page space any sample covers. */
  totalPages: number;
}

/** Appends encoded parts to an array of chunks; the caller writes them. */
export function encodeTraceHeader(h: TraceHeader): Buffer {
  const json = Buffer.from(JSON.stringify(h.meta));
  const b = Buffer.alloc(4 + 4 + 8 + 4 + 4 + json.length);
  b.write(TRACE_MAGIC, 0, 'latin1');
  b.writeUInt32LE(TRACE_VERSION, 4);
  b.writeDoubleLE(h.intervalMs, 8);
  b.writeUInt32LE(h.pageSize, 16);
  b.writeUInt32LE(json.length, 20);
  json.copy(b, 24);
  return b;
}

/** One sample: the pages written since the last, and the indices whose mapping vanished meanwhile (sorted runs). */
export function encodeTraceSample(atMs: number, pages: PageBitmap, died: ReadonlyArray<readonly [number, number]> = []): Buffer {
  const out: number[] = [];
  const runs: Array<[number, number]> = [];
  pages.forEachRun((s, e) => runs.push([s, e]));
  varint(out, pages.size);
  putRuns(out, runs);
  putRuns(out, died);
  const b = Buffer.alloc(8 + out.length);
  b.writeDoubleLE(atMs, 0);
  Buffer.from(out).copy(b, 8);
  return b;
}

export function decodeTrace(buf: Uint8Array): Trace {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 24 || b.toString('latin1', 0, 4) !== TRACE_MAGIC) throw new TraceFormatError('not a forecopy trace (bad magic)');
  const version = b.readUInt32LE(4);
  if (version !== 1 && version !== TRACE_VERSION)
    throw new TraceFormatError(`trace format version ${version} is not supported (this build reads 1 and ${TRACE_VERSION})`);
  const intervalMs = b.readDoubleLE(8);
  const pageSize = b.readUInt32LE(16);
  const jlen = b.readUInt32LE(20);
  if (24 + jlen > b.length) throw new TraceFormatError('the trace is truncated in its header');
  let meta: TraceHeader['meta'];
  try {
    meta = JSON.parse(b.toString('utf8', 24, 24 + jlen));
  } catch {
    throw new TraceFormatError('the trace header is not valid JSON');
  }
  const pos = { o: 24 + jlen };
  const samples: TraceSample[] = [];
  let totalPages = 0;
  while (pos.o < b.length) {
    if (pos.o + 8 > b.length) throw new TraceFormatError('the trace is truncated in a sample');
    const atMs = b.readDoubleLE(pos.o);
    pos.o += 8;
    const size = readVarint(b, pos);
    if (size > 1 << 28) throw new TraceFormatError(`a sample covers ${size} pages, more than a trace may`);
    const pages = new PageBitmap(size);
    for (const [s, e] of readRuns(b, pos, size)) pages.setRange(s, e);
    const died = version >= 2 ? readRuns(b, pos, size) : [];
    totalPages = Math.max(totalPages, size);
    samples.push(died.length > 0 ? { atMs, pages, died } : { atMs, pages });
  }
  return { version, intervalMs, pageSize, meta, samples, totalPages };
}

/** A count, then each run as (gap from the end of the previous run, length). */
function putRuns(out: number[], runs: ReadonlyArray<readonly [number, number]>): void {
  varint(out, runs.length);
  let prevEnd = 0;
  for (const [s, e] of runs) {
    varint(out, s - prevEnd);
    varint(out, e - s);
    prevEnd = e;
  }
}

function readRuns(b: Buffer, pos: { o: number }, size: number): Array<[number, number]> {
  const n = readVarint(b, pos);
  const runs: Array<[number, number]> = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const s = at + readVarint(b, pos);
    const e = s + readVarint(b, pos);
    if (e > size || e <= s) throw new TraceFormatError('a sample has a run outside its page space');
    runs.push([s, e]);
    at = e;
  }
  return runs;
}

function varint(out: number[], n: number): void {
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

function readVarint(b: Buffer, pos: { o: number }): number {
  let n = 0;
  let mul = 1;
  for (let i = 0; i < 8; i++) {
    if (pos.o >= b.length) throw new TraceFormatError('the trace is truncated in a number');
    const x = b[pos.o++];
    n += (x & 0x7f) * mul;
    if (!(x & 0x80)) return n;
    mul *= 128;
  }
  throw new TraceFormatError('a number in the trace is too long');
}
