import { PageBitmap } from './page-bitmap.js';
import {
  PrecopyDriver,
  finalRoundSummary,
  summarizeRound,
  type Policy,
  type RoundContext,
  type RoundSummary,
  type StopRules,
} from './policy.js';
import type { Trace } from './trace-format.js';
import { TraceFormatError } from './errors.js';
import { ThrottleSchedule, thinWrites, type ThrottleParams } from './auto-converge.js';

// Replays a recorded dirty trace through the very PrecopyDriver and policies the live agent
// runs, over a modelled link, deterministically: the same trace and options always give the
// same numbers.
//
// The model:
// - time is the trace's clock; the migration starts at `startMs` (after the modelling window,
//   for every policy alike, so they all meet the same writes);
// - before the start, a policy sees only the last sample (the state the process is in when the
//   migration starts), as the live agent's policy, made when the modelling ends, does: the
//   modelling window is not replayed through it (its fit test would run over the very samples
//   the model was built from). `warmupFromMs` shows it more;
// - the link carries `pageRate` pages a second, nothing else takes time;
// - a round of a policy that watches the samples (observeSample) and holds pages back lasts at
//   least until the next sample after its start, as the live agent runs it (runRound waits for a
//   whole sample; the writes of the wait are the next round's): the policy plans the next round
//   from a fresh sample, and a round that sends nothing still lets the process run for one
//   interval, instead of repeating the same forecast at no cost;
// - a sample stamped t holds the writes of the interval that ends at t (from the stamp before);
//   the policy is shown it whole at t, as the live agent's sampler takes it, but the rounds meet
//   each of its pages at an instant within the interval (WriteSlots: spread evenly, fixed by a
//   hash), as the live sender's dirty log meets a process that writes as it runs: a round that
//   ends within a sample's interval meets part of its writes, not all of them nor none.
//   `writeTimes: 'stamp'` counts them all at t, as earlier versions did;
// - the sender sends in batches of `batchPages`; with a policy's skipRedirtied, a batch skips the
//   pages written since the round began (Xen's to_skip);
// - stop-and-copy sends what remains at the measured rate: downtime = remaining / pageRate;
// - the process has the pages mapped at the time (TraceClock.liveAt): round 1 sends those mapped
//   at the start; a mapping that appears later counts as written when it appears (its sample
//   says so), and the pages of one that vanished are no longer sent or counted, as the live
//   agent's sender and dirty set drop them: each batch of a round leaves out what vanished by the
//   time it is sent (a version 1 trace does not say which vanished);
// - a migration longer than the trace wraps around to its start (reported as `wrapped`);
// - with `autoConverge`, the throttle the live agent would set (ThrottleSchedule) is in force
//   for the rounds after it is raised. `throttleModel` says how it meets the trace: 'thin' (the
//   default) thins the writes of every sample taken while it is in force (thinWrites), at the
//   trace's pace; 'slow' slows the process, as a CPU quota slows a program that computes: the
//   trace is the process's own time, which runs at the share the throttle leaves it
//   (SlowedClock), so a sample of 50 ms of the migration's clock holds the writes of less of the
//   trace's time, and a write the trace makes 50 ms after another is made later. (A program paced
//   by the clock may make up for a duty cycle's short stops and not be slowed at all; a trace
//   does not say which kind it is.)

export interface SimOptions {
  pageRate: number;
  stopRules: StopRules;
  startMs: number;
  batchPages?: number;
  /** QEMU's auto-converge, as the live agent runs it (--auto-converge on). */
  autoConverge?: ThrottleParams;
  /**
   * Before the start the policy sees the samples stamped after this (default: only the last
   * sample stamped at or before `startMs`).
   */
  warmupFromMs?: number;
  /** Where within its sample's interval a write is met (TraceClock; default 'spread'). */
  writeTimes?: WriteTimes;
  /** How auto-converge's throttle meets the trace (default 'thin'; see above). */
  throttleModel?: ThrottleModel;
}

/** How the simulator's throttle meets the trace: it thins its writes, or slows its clock. */
export type ThrottleModel = 'thin' | 'slow';

/** A sample as the policy is shown it: its stamp, its writes, the pages mapped then (valid until the clock is read again). */
export interface ShownSample {
  atMs: number;
  pages: PageBitmap;
  live: PageBitmap;
}

/**
 * The trace as the migration's clock meets it (TraceClock, or SlowedClock under a throttle that
 * slows the process). Every time is on the migration's clock.
 */
export interface SimClock {
  readonly wrapped: boolean;
  /** Union of the writes in (from, to], sized `size` (a thinning clock thins them by `throttle`%). */
  written(from: number, to: number, size: number, throttle?: number): PageBitmap;
  /** The pages mapped at `t`: the clock's own bitmap, valid until the next call. */
  liveView(t: number, size: number): PageBitmap;
  liveAt(t: number, size: number): PageBitmap;
  /** The stamp of the first sample after `t`, or null. */
  nextAfter(t: number): number | null;
  /** The stamp of the last sample at or before `t`, or null. */
  lastAtOrBefore(t: number): number | null;
  /** The samples stamped in (from, to], as a process throttled by `throttle`% wrote them. */
  shown(from: number, to: number, size: number, throttle: number): IterableIterator<ShownSample>;
  /** From `t` on, the throttle is `percent` (a thinning clock is told the throttle by each read instead). */
  throttle(t: number, percent: number): void;
}

/** The clock a simulation of `trace` with `opts` runs on (a fresh one for each simulation: a slowed clock keeps its throttle). */
export function simClock(trace: Trace, opts: Pick<SimOptions, 'writeTimes' | 'throttleModel'>): SimClock {
  const clock = new TraceClock(trace, opts.writeTimes);
  return opts.throttleModel === 'slow' ? new SlowedClock(clock) : clock;
}

export interface SimReport {
  policy: string;
  downtimeMs: number;
  totalMs: number;
  pagesSent: number;
  memoryPages: number;
  stopReason: string;
  rounds: SimRound[];
  /**
   * Pages sent that an earlier round had already sent (the stop-and-copy round included): what
   * the policy's rounds sent more than once. pagesSent less this is the pages sent at all.
   */
  pagesResent: number;
  wrapped: boolean;
  /** The throttle in force during each iterative round, in percent (all 0 without auto-converge). */
  throttles: number[];
  /**
   * The time auto-converge's throttle took from the process, ms: each round's time (with any
   * wait for a sample after it) times the throttle in force. What the process paid for the
   * downtime the throttle saved (0 without auto-converge).
   */
  throttledMs: number;
}

/** A round of the simulation: as the live agent reports it, and how many of its pages an earlier round had sent. */
export interface SimRound extends RoundSummary {
  /** Pages sent in this round that an earlier round had sent too (written again since, or held and sent again). */
  pagesResent: number;
}

/** Where within its sample's interval a write is counted (TraceClock). */
export type WriteTimes = 'spread' | 'stamp';

/** The trace as a clock: what was written in (from, to]. A throttle thins its writes. */
export class TraceClock implements SimClock {
  readonly durationMs: number;
  wrapped = false;

  /**
   * `writeTimes`: 'spread' (the default) places each page's write within its sample's interval
   * (WriteSlots); 'stamp' counts all of a sample's writes at its stamp, as earlier versions of
   * the simulator did (a round shorter than a sample then met all of them or none).
   */
  constructor(
    readonly trace: Trace,
    readonly writeTimes: WriteTimes = 'spread',
  ) {
    if (trace.samples.length === 0) throw new TraceFormatError('the trace has no samples');
    this.durationMs = trace.samples[trace.samples.length - 1].atMs;
  }

  /**
   * Samples stamped in (from, to], in order, with their times on the unwrapped clock. At the
   * wrap (the trace's last stamp) the process is back where the trace began: a mapping it had
   * then and not at the trace's end appears again, and counts as written, as any mapping that
   * appears (the last sample carries its pages; liveAt says it is mapped from that stamp on).
   */
  *between(from: number, to: number): IterableIterator<{ atMs: number; pages: PageBitmap }> {
    for (const s of this.stamps(from, to)) {
      this.noteWrap(s);
      yield { atMs: s.atMs, pages: this.pagesOf(s.i) };
    }
  }

  *shown(from: number, to: number, size: number, throttle: number): IterableIterator<ShownSample> {
    for (const s of this.between(from, to))
      yield { atMs: s.atMs, pages: asWritten(s.pages, size, throttle, s.atMs), live: this.liveView(s.atMs, size) };
  }

  throttle(): void {}

  /** The stamps in (from, to], each with the stamp before it (see stamps), without reading the samples. */
  *stampTimes(from: number, to: number): IterableIterator<{ atMs: number; fromMs: number }> {
    for (const s of this.stamps(from, to)) yield { atMs: s.atMs, fromMs: s.fromMs };
  }

  /**
   * The samples stamped in (from, to] (by index in the trace, in order), each with its stamp and
   * the stamp before it (where the interval it holds the writes of begins) on the unwrapped clock.
   */
  private *stamps(from: number, to: number): IterableIterator<Stamp> {
    const d = this.durationMs;
    if (!(d > 0)) return;
    const { samples } = this.trace;
    // The trace's clock starts at 0: no lap before the first (its last sample is not a write
    // before the trace began).
    for (let lap = Math.max(0, Math.floor(from / d)); lap * d < to; lap++) {
      for (let i = 0; i < samples.length; i++) {
        const s = samples[i];
        const t = lap * d + s.atMs;
        if (!(t > from && t <= to) || (lap > 0 && s.atMs === 0)) continue;
        const before = i > 0 ? lap * d + samples[i - 1].atMs : lap > 0 ? lap * d : t - Math.max(1, this.trace.intervalMs);
        yield { i, lap, atMs: t, fromMs: before };
      }
    }
  }

  private noteWrap(s: Stamp): void {
    if (s.lap > 0 || s.i === this.trace.samples.length - 1) this.wrapped = true;
  }

  /** The pages of the trace's i-th sample (the last one's with what appears again at the wrap). */
  private pagesOf(i: number): PageBitmap {
    return i === this.trace.samples.length - 1 ? this.atWrap() : this.trace.samples[i].pages;
  }

  /** The trace's last sample, and the pages of the mappings that appear again at the wrap. */
  private atWrap(): PageBitmap {
    const pages = this.trace.samples[this.trace.samples.length - 1].pages;
    if (this.wrapPages === undefined) {
      const reborn = this.reborn();
      this.wrapPages = reborn.isEmpty() ? pages : reborn.clone().or(pages.resized(this.trace.totalPages));
    }
    return this.wrapPages;
  }

  /** The pages of the mappings the trace began with and not at its end: they appear again at the wrap. */
  private reborn(): PageBitmap {
    if (this.rebornPages === undefined) {
      const N = this.trace.totalPages;
      const atEnd = this.liveAfter(this.trace.samples.length, N).clone();
      this.rebornPages = this.liveAfter(0, N).clone().andNot(atEnd);
    }
    return this.rebornPages;
  }

  private rebornPages: PageBitmap | undefined;
  private wrapPages: PageBitmap | undefined;

  /**
   * The page indices mapped at `t` (on the unwrapped clock), sized `size`: the page space of the
   * last sample stamped at or before `t` in its lap (the first sample's before it), less the
   * indices that died by then. A space that never grew nor lost a mapping is all of `size`.
   */
  liveAt(t: number, size: number): PageBitmap {
    return this.liveView(t, size).clone();
  }

  /** As liveAt, but the clock's own bitmap, valid until the next call: read it, do not keep or change it. */
  liveView(t: number, size: number): PageBitmap {
    const { samples } = this.trace;
    this.constant ??= samples.every((s) => s.pages.size === size && !s.died?.length);
    if (this.constant) {
      if (this.full?.size !== size) this.full = PageBitmap.full(size);
      return this.full;
    }
    const d = this.durationMs;
    const at = d > 0 ? t - Math.floor(t / d) * d : t;
    let n = 0; // samples stamped at or before `at` in its lap
    while (n < samples.length && samples[n].atMs <= at) n++;
    return this.liveAfter(n, size);
  }

  /** The live indices after the trace's first `n` samples (the clock's own bitmap, as liveView). */
  private liveAfter(n: number, size: number): PageBitmap {
    const { samples } = this.trace;
    // A simulation asks in time order but for wraps: carry on from the last answer where it can.
    let c = this.live;
    if (!c || c.samples > n || c.bits.size !== size) {
      c = { samples: 0, space: Math.min(samples[0].pages.size, size), bits: new PageBitmap(size) };
      c.bits.setRange(0, c.space);
    }
    for (; c.samples < n; c.samples++) {
      const s = samples[c.samples];
      const space = Math.min(s.pages.size, size);
      if (space > c.space) c.bits.setRange(c.space, space);
      c.space = Math.max(c.space, space);
      for (const [a, b] of s.died ?? []) if (a < size) c.bits.clearRange(a, Math.min(b, size));
    }
    this.live = c;
    return c.bits;
  }

  private constant: boolean | undefined;
  private full: PageBitmap | undefined;
  /** The last liveAt answer: after how many samples, the page space then, the live indices. */
  private live: { samples: number; space: number; bits: PageBitmap } | null = null;

  /** The stamp of the first sample after `t` (within one lap of the trace), or null. */
  nextAfter(t: number): number | null {
    const step = Math.max(1, this.trace.intervalMs);
    for (let to = t + step; to <= t + this.durationMs + step; to += step) for (const s of this.between(to - step, to)) return s.atMs;
    return null;
  }

  /** The stamp of the last sample at or before `t`, or null. */
  lastAtOrBefore(t: number): number | null {
    let last: number | null = null;
    for (const s of this.between(-1, t)) last = s.atMs;
    return last;
  }

  /** Union of the writes in (from, to], sized `size`, as a process throttled by `throttle`% wrote them. */
  written(from: number, to: number, size: number, throttle = 0): PageBitmap {
    const out = new PageBitmap(size);
    if (this.writeTimes === 'stamp') {
      for (const s of this.between(from, to)) out.or(asWritten(s.pages, size, throttle, s.atMs));
      return out;
    }
    // Every sample whose interval overlaps (from, to]: those stamped in (from, to + the longest interval].
    for (const s of this.stamps(from, to + this.longestInterval())) {
      if (s.fromMs >= to) continue;
      // The slots whose instant lies in (from, to]: slot k < WRITE_SLOTS at fromMs + (k + 1/2)
      // of a slot's width, slot WRITE_SLOTS at the stamp.
      const slot = (s.atMs - s.fromMs) / WRITE_SLOTS;
      const lo = Math.max(0, Math.floor((from - s.fromMs) / slot - 0.5) + 1);
      const hi = s.atMs <= to ? WRITE_SLOTS : Math.min(WRITE_SLOTS - 1, Math.floor((to - s.fromMs) / slot - 0.5));
      if (lo > hi) continue;
      if (hi === WRITE_SLOTS) this.noteWrap(s);
      const pages = lo === 0 && hi === WRITE_SLOTS ? this.pagesOf(s.i) : this.slotsOf(s.i).pages(lo, hi, size);
      out.or(asWritten(pages, size, throttle, s.atMs));
    }
    return out;
  }

  /** The longest time between two stamps (and the trace's interval), ms. */
  private longestInterval(): number {
    if (this.longest === undefined) {
      const { samples } = this.trace;
      let m = Math.max(1, this.trace.intervalMs);
      for (let i = 1; i < samples.length; i++) m = Math.max(m, samples[i].atMs - samples[i - 1].atMs);
      this.longest = m;
    }
    return this.longest;
  }

  private longest: number | undefined;

  /** The i-th sample's pages by write slot (the last few asked for are kept: the clock is read in time order). */
  private slotsOf(i: number): WriteSlots {
    let w = this.slots.get(i);
    if (w === undefined) {
      // A mapping that appears is mapped from its sample's stamp (liveAt): its pages are written then.
      const { samples } = this.trace;
      let before = samples[0].pages.size;
      for (let j = 0; j < i; j++) before = Math.max(before, samples[j].pages.size);
      const reborn = i === samples.length - 1 ? this.reborn() : null;
      w = new WriteSlots(this.pagesOf(i), (p) => p >= before || reborn?.has(p) === true);
      if (this.slots.size >= 8) this.slots.delete(this.slots.keys().next().value as number);
      this.slots.set(i, w);
    }
    return w;
  }

  private readonly slots = new Map<number, WriteSlots>();
}

/** Pages of the sample stamped `atMs`, sized `size`, as a process throttled by `throttle`% wrote them (thinWrites). */
function asWritten(pages: PageBitmap, size: number, throttle: number, atMs: number): PageBitmap {
  return thinWrites(pages.size === size ? pages : pages.resized(size), throttle, atMs);
}

/**
 * The trace as the migration's clock meets a process that a throttle slows: the trace is the
 * process's own time, which runs at the share of the clock the throttle leaves it (a CPU quota of
 * 100 - percent of what it used). Samples are taken on the migration's clock, at
 * the trace's stamps, as the live sampler takes them every interval whatever the throttle: each
 * holds the writes of the process's time between its stamp and the one before. A write is not
 * dropped, it is made later. With no throttle the two clocks are one, and a simulation is as on
 * the TraceClock.
 */
export class SlowedClock implements SimClock {
  /** From `wall` on (the migration's clock), the process's time runs from `proc` at `rate`. */
  private readonly marks: Array<{ wall: number; proc: number; rate: number }> = [];

  constructor(readonly trace: TraceClock) {}

  get wrapped(): boolean {
    return this.trace.wrapped;
  }

  /** The process's time at the migration's time `t`. */
  processTime(t: number): number {
    for (let i = this.marks.length - 1; i >= 0; i--) {
      const m = this.marks[i];
      if (m.wall <= t) return m.rate === 1 && m.proc === m.wall ? t : m.proc + (t - m.wall) * m.rate;
    }
    return t;
  }

  throttle(t: number, percent: number): void {
    const rate = 1 - percent / 100;
    if (!(rate > 0)) throw new RangeError(`a throttle of ${percent}% stops the process`);
    const last = this.marks[this.marks.length - 1];
    if ((last?.rate ?? 1) === rate) return;
    if (last && !(t >= last.wall)) throw new RangeError(`the throttle went back in time: ${t} ms after ${last.wall} ms`);
    this.marks.push({ wall: t, proc: this.processTime(t), rate });
  }

  written(from: number, to: number, size: number): PageBitmap {
    return this.trace.written(this.processTime(from), this.processTime(to), size);
  }

  liveView(t: number, size: number): PageBitmap {
    return this.trace.liveView(this.processTime(t), size);
  }

  liveAt(t: number, size: number): PageBitmap {
    return this.trace.liveAt(this.processTime(t), size);
  }

  nextAfter(t: number): number | null {
    return this.trace.nextAfter(t);
  }

  lastAtOrBefore(t: number): number | null {
    return this.trace.lastAtOrBefore(t);
  }

  *shown(from: number, to: number, size: number): IterableIterator<ShownSample> {
    for (const s of this.trace.stampTimes(from, to)) {
      const pages = this.written(s.fromMs, s.atMs, size);
      yield { atMs: s.atMs, pages, live: this.liveView(s.atMs, size) };
    }
  }
}

/** A sample as the clock's time meets it: its index in the trace, its lap, its stamp and the stamp before. */
interface Stamp {
  i: number;
  lap: number;
  atMs: number;
  fromMs: number;
}

/** The instants within a sample's interval its pages are spread over (see WriteSlots). */
const WRITE_SLOTS = 1024;

/**
 * When, within its sample's interval, each page was written. A sample says only that a page was
 * written in the interval; the process wrote it at some time in it, and a round that ends within
 * the interval meets the writes made before then, not all of them nor none. Each page has its own
 * instant in every interval, one of WRITE_SLOTS evenly spread over it, chosen by a hash of the
 * page (independent of the throttle's): a part of the interval holds about its share of the
 * sample's pages, consecutive parts share them out exactly, and a page written in successive
 * samples is written one interval apart, so that a round as long as an interval meets it (as a
 * stamp did). The pages of a mapping that appears in the sample are written at its stamp (slot
 * WRITE_SLOTS), when it is mapped.
 */
class WriteSlots {
  private readonly order: Int32Array;
  private readonly starts = new Int32Array(WRITE_SLOTS + 2);

  constructor(pages: PageBitmap, atStamp: (p: number) => boolean) {
    const n = pages.count();
    const slotOf = new Uint16Array(n);
    const list = new Int32Array(n);
    let k = 0;
    for (const p of pages) {
      let slot = WRITE_SLOTS;
      if (!atStamp(p)) {
        let h = Math.imul(p ^ 0x5bd1e995, 0xcc9e2d51);
        h ^= h >>> 15;
        h = Math.imul(h, 0x2c1b3c6d);
        h ^= h >>> 12;
        h = Math.imul(h, 0x297a2d39);
        h ^= h >>> 15;
        slot = (h >>> 0) % WRITE_SLOTS;
      }
      slotOf[k] = slot;
      list[k++] = p;
      this.starts[slot + 1]++;
    }
    for (let s = 0; s <= WRITE_SLOTS; s++) this.starts[s + 1] += this.starts[s];
    this.order = new Int32Array(n);
    const at = this.starts.slice(0, WRITE_SLOTS + 1);
    for (let j = 0; j < n; j++) this.order[at[slotOf[j]]++] = list[j];
  }

  /** The pages written in slots lo..hi, sized `size`. */
  pages(lo: number, hi: number, size: number): PageBitmap {
    const out = new PageBitmap(size);
    for (let j = this.starts[lo]; j < this.starts[hi + 1]; j++) {
      const p = this.order[j];
      if (p < size) out.set(p);
    }
    return out;
  }
}

/** What sendBatches needs of the simulation. */
interface Sending {
  clock: SimClock;
  size: number;
  batch: number;
  msPerPage: number;
  /** Xen's per-batch skip of the pages written since the last take. */
  skip: boolean;
  throttle: () => number | undefined;
  /** Shows the policy the samples of (from, to]. */
  feed: (from: number, to: number) => void;
  /** Every page sent so far (sendBatches adds the pages it sends). */
  everSent: PageBitmap;
}

/**
 * Sends a round's pages in batches from `startMs` over the modelled link; when it ends, and what
 * it sent and skipped. As the live sender, each batch leaves out the pages whose mapping has
 * vanished by the time it is read (the sampler retires them between batches; a read of one comes
 * back short): a long round of a process that maps and unmaps as it runs does not send them.
 */
function sendBatches(
  pages: number[],
  startMs: number,
  lastTakeMs: number,
  o: Sending,
): { sent: number; skipped: number; resent: number; endMs: number } {
  let now = startMs;
  let sent = 0;
  let skipped = 0;
  let resent = 0;
  const re = new PageBitmap(o.size); // written since the last take, for the skip (the sampler's peek)
  let seen = lastTakeMs;
  for (let i = 0; i < pages.length; i += o.batch) {
    const live = o.clock.liveView(now, o.size);
    let chunk = pages.slice(i, i + o.batch).filter((p) => live.has(p));
    if (o.skip) {
      re.or(o.clock.written(seen, now, o.size, o.throttle()));
      seen = now;
      const before = chunk.length;
      chunk = chunk.filter((p) => !re.has(p));
      skipped += before - chunk.length;
    }
    const t0 = now;
    now += chunk.length * o.msPerPage;
    sent += chunk.length;
    resent += o.everSent.setEach(chunk);
    o.feed(t0, now);
  }
  return { sent, skipped, resent, endMs: now };
}

/**
 * As runRound: a policy that holds pages back plans the next round from a whole sample of the
 * round's time, and waits for it if the round was shorter; what is written meanwhile is the next
 * round's. (Not after the last round the round cap allows: no round follows to be planned, and
 * what the process wrote while it waited would be downtime.) Returns the time after the wait.
 */
function waitForSample(clock: SimClock, start: number, now: number, feed: (from: number, to: number) => void): number {
  const next = clock.nextAfter(start);
  if (next === null || next <= now) return now;
  feed(now, next);
  return next;
}

/**
 * As runRound: under a throttle weighed over periods, a round may last until it can be weighed
 * (ThrottleSchedule.paceMs). What the process writes meanwhile is the round's. Returns the
 * round's end.
 */
function paced(
  schedule: ThrottleSchedule | null,
  round: number,
  maxRounds: number,
  now: number,
  feed: (from: number, to: number) => void,
): number {
  const wait = schedule ? schedule.paceMs(now, maxRounds - round) : 0;
  if (wait <= 0) return now;
  feed(now, now + wait);
  return now + wait;
}

/** The stop-and-copy round: it sends `rest`; those of its pages an earlier round had sent are sent again. */
function finalRound(round: number, rest: PageBitmap, msPerPage: number, everSent: PageBitmap): SimRound {
  const n = rest.count();
  return { ...finalRoundSummary(round, n, n * msPerPage), pagesResent: rest.intersectCount(everSent) };
}

/** `clock`: the clock to run on (default simClock's; a policy that reads the trace, as the oracle, reads the same one). */
export function simulate(trace: Trace, policy: Policy, opts: SimOptions, clock = simClock(trace, opts)): SimReport {
  const N = trace.totalPages;
  const batch = opts.batchPages ?? 256;
  const msPerPage = 1000 / opts.pageRate;
  let now = opts.startMs;
  const schedule = opts.autoConverge ? new ThrottleSchedule(opts.autoConverge, now) : null;
  const throttles: number[] = [];
  let throttledMs = 0;
  const feed = (from: number, to: number) => {
    for (const s of clock.shown(from, to, N, schedule?.percent ?? 0)) policy.observeSample?.(s.pages, s.atMs, s.live);
  };
  // Before the start: the state the process is in (not the modelling window: see above).
  const last = clock.lastAtOrBefore(now);
  feed(opts.warmupFromMs ?? (last === null ? now : last - 1e-6), now);
  const driver = new PrecopyDriver(N, opts.stopRules, policy);
  const ctx = (): Omit<RoundContext, 'round'> => ({
    pageRate: opts.pageRate,
    nowMs: now,
    throttlePercent: schedule?.percent ?? 0,
    ...(schedule ? { throttleMaxPercent: schedule.params.max } : {}),
    ...(schedule?.roundsToMax !== undefined ? { throttleRoundsToMax: schedule.roundsToMax } : {}),
  });
  const firstLive = clock.liveAt(now, N);
  let plan = driver.firstRound(ctx(), firstLive);
  const rounds: SimRound[] = [];
  let dirtFrom = now; // the sampler's last take: the writes since then are the next round's
  const throttle = () => schedule?.percent;
  const sending: Sending = { clock, size: N, batch, msPerPage, skip: !!policy.skipRedirtied, throttle, feed, everSent: new PageBitmap(N) };
  for (;;) {
    const start = now;
    const live = clock.liveView(start, N); // the sender skips the pages whose mapping vanished
    const pages = [...plan.send].filter((p) => live.has(p));
    const { sent, skipped, resent, endMs } = sendBatches(pages, start, dirtFrom, sending);
    now = paced(schedule, plan.round, opts.stopRules.maxRounds, endMs, feed);
    const mapped = clock.liveAt(now, N);
    const dirtied = clock.written(dirtFrom, now, N, schedule?.percent).and(mapped);
    dirtFrom = now;
    const durationMs = now - start;
    if (policy.observeSample && !plan.held.isEmpty() && plan.round < opts.stopRules.maxRounds) now = waitForSample(clock, start, now, feed);
    throttles.push(schedule?.percent ?? 0);
    throttledMs += ((now - start) * (schedule?.percent ?? 0)) / 100;
    const outcome = { pagesSent: sent, pagesSkipped: skipped, dirtied, durationMs, pageRate: opts.pageRate, live: mapped };
    // Auto-converge weighs the round before the next is planned (QEMU raises the throttle at the
    // bitmap sync that ends an iteration): the policy plans for the throttle the round runs at.
    const ranAt = schedule?.percent; // the throttle the round (and any wait after it) ran at
    if (schedule) clock.throttle(now, schedule.afterRound(sent, dirtied.count(), now));
    const decision = driver.endRound(outcome, ctx());
    const rec = driver.records[driver.records.length - 1];
    rounds.push({ ...summarizeRound(rec), pagesResent: resent });
    if (decision.kind === 'stop') {
      // The last take, after the freeze, also has what was written while the policy waited.
      const rest = decision.remaining
        .clone()
        .or(clock.written(dirtFrom, now, N, ranAt))
        .and(clock.liveAt(now, N));
      const final = finalRound(rec.round + 1, rest, msPerPage, sending.everSent);
      rounds.push(final);
      const downtimeMs = final.durationMs;
      return {
        policy: policy.name,
        downtimeMs,
        totalMs: now + downtimeMs - opts.startMs,
        pagesSent: driver.pagesSent + final.pagesSent,
        memoryPages: firstLive.count(),
        stopReason: decision.reason,
        rounds,
        pagesResent: rounds.reduce((n, x) => n + x.pagesResent, 0),
        wrapped: clock.wrapped,
        throttles,
        throttledMs,
      };
    }
    plan = decision.plan;
  }
}
