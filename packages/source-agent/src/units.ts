import type { Argv } from 'yargs';
import { XEN_DEFAULT_STOP_RULES } from '@forecopy/filter';
import { InputError } from './errors.js';

/**
 * Parses a link rate as tc writes it: `500mbit`, `1gbit`, `800kbit`, `100mbps` (bits), or in
 * bytes per second: `60MB`, `1.5GB`, `512KB`; `0` or `unlimited` means unpaced. Returns bits per
 * second, or throws a one-sentence error naming the accepted forms.
 */
export function parseBandwidth(text: string): number {
  const s = String(text).trim().toLowerCase();
  if (s === '0' || s === 'unlimited' || s === 'none') return 0;
  const m = /^(\d+(?:\.\d+)?)\s*(k|m|g)?(bit|bps|b)?$/.exec(s);
  const orig = String(text).trim();
  if (!m || (m[3] === undefined && m[2] !== undefined)) {
    throw new InputError(`bandwidth '${text}' is not understood: write it like 500mbit, 1gbit or 60MB (bytes/s), or 0 for unpaced`);
  }
  const n = Number(m[1]);
  const mult = m[2] === 'k' ? 1e3 : m[2] === 'm' ? 1e6 : m[2] === 'g' ? 1e9 : 1;
  // tc's convention: 'bit' and 'bps' are bits; an upper-case B in the original is bytes.
  const bytes = m[3] === 'b' && /B$/.test(orig);
  if (m[3] === 'b' && !bytes) {
    throw new InputError(`bandwidth '${text}' is ambiguous: write 'bit' for bits (500mbit) or an upper-case B for bytes (60MB)`);
  }
  const bps = n * mult * (bytes ? 8 : 1);
  if (!(bps > 0) || !Number.isFinite(bps)) throw new InputError(`bandwidth '${text}' must be a positive rate`);
  return bps;
}

/** Parses HOST:PORT (IPv6 as [::1]:7070). */
export function parseHostPort(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m) throw new InputError(`--to '${text}' must be HOST:PORT, for example 127.0.0.1:7070 or [::1]:7070`);
  const port = Number(m[2]);
  if (!(port > 0 && port < 65536)) throw new InputError(`port ${m[2]} in --to '${text}' must be between 1 and 65535`);
  return { host: m[1], port };
}

/** Refuses `--flag`, a setting of auto-converge, given without it. */
export function requireAutoConverge(flag: string, autoConverge: boolean): void {
  if (!autoConverge) throw new InputError(`--${flag} is a setting of auto-converge: add --auto-converge on`);
}

/** Checks --throttle-period-ms (absent: 0, each round weighed); it means nothing without auto-converge. */
export function parseThrottlePeriod(ms: number | undefined, autoConverge: boolean): number {
  if (ms === undefined) return 0;
  requireAutoConverge('throttle-period-ms', autoConverge);
  if (!(Number.isFinite(ms) && ms >= 0)) throw new InputError(`--throttle-period-ms must be a number of ms, 0 or more, got ${ms}`);
  refuseOverTimer('throttle-period-ms', ms, MAX_TIMER_MS);
  return ms;
}

/** A yargs coerce: a whole number of at least `min`, or a one-line input error naming the option. */
export function wholeAtLeast(name: string, min: number): (v: number) => number {
  return (v) => {
    if (!Number.isInteger(v) || v < min) throw new InputError(`--${name} must be a whole number >= ${min}, got ${v}`);
    return v;
  };
}

/** A yargs coerce: a finite number over 0 (`open`) or of 0 and over, or a one-line input error naming the option. */
export function numberFrom(name: string, min: 0, open: boolean): (v: number) => number {
  return (v) => {
    if (!Number.isFinite(v) || v < min || (open && v === min))
      throw new InputError(`--${name} must be a number ${open ? '>' : '>='} ${min}, got ${v}`);
    return v;
  };
}

/** The longest a Node.js timer waits, ms: a longer one fires at once, with only a warning. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A yargs coerce for a time the agent waits (in seconds or ms): a number over 0 (or 0 and over,
 * with `zero`; whole, with `whole`) no longer than a timer can wait, 24.8 days; else a one-line
 * input error naming the option. A longer wait had fired at once.
 */
export function waitFor(name: string, unit: 's' | 'ms', o: { whole?: boolean; zero?: boolean } = {}): (v: number) => number {
  const max = unit === 's' ? Math.floor(MAX_TIMER_MS / 1000) : MAX_TIMER_MS;
  const atLeast = o.whole ? wholeAtLeast(name, o.zero ? 0 : 1) : numberFrom(name, 0, !o.zero);
  return (v) => {
    atLeast(v);
    refuseOverTimer(name, v, max);
    return v;
  };
}

/** A one-line input error when `v` (of --name) is over `max`, the longest a timer waits in its unit. */
function refuseOverTimer(name: string, v: number, max: number): void {
  if (v > max) throw new InputError(`--${name} must be at most ${max} (24.8 days, the longest a timer waits), got ${v}`);
}

/** The round cap and the pages-left floor, as migrate and forecopy-sim take them. */
export function roundOptions<T>(y: Argv<T>) {
  return y
    .option('max-rounds', {
      type: 'number',
      default: XEN_DEFAULT_STOP_RULES.maxRounds,
      coerce: wholeAtLeast('max-rounds', 1),
      describe: 'stop after this many rounds',
    })
    .option('min-remaining-pages', {
      type: 'number',
      default: XEN_DEFAULT_STOP_RULES.minRemainingPages,
      coerce: wholeAtLeast('min-remaining-pages', 0),
      describe: 'stop when fewer pages than this remain',
    });
}
