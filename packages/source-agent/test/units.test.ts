import { describe, expect, it } from 'vitest';
import { parseBandwidth, parseHostPort, waitFor } from '../src/units.js';
import { shareText } from '../src/report-html.js';

describe('parseBandwidth', () => {
  it('reads rates as tc writes them', () => {
    expect(parseBandwidth('500mbit')).toBe(500e6);
    expect(parseBandwidth('1gbit')).toBe(1e9);
    expect(parseBandwidth('800kbit')).toBe(800e3);
    expect(parseBandwidth('100mbps')).toBe(100e6);
    expect(parseBandwidth('60MB')).toBe(480e6);
    expect(parseBandwidth('0')).toBe(0);
    expect(parseBandwidth('unlimited')).toBe(0);
  });
  it('refuses what it cannot read, with the accepted forms', () => {
    expect(() => parseBandwidth('fast')).toThrow(/write it like 500mbit/);
    expect(() => parseBandwidth('500m')).toThrow(/not understood/);
    expect(() => parseBandwidth('60mb')).toThrow(/ambiguous/);
  });
});

describe('parseHostPort', () => {
  it('reads HOST:PORT and [v6]:PORT', () => {
    expect(parseHostPort('127.0.0.1:7070')).toEqual({ host: '127.0.0.1', port: 7070 });
    expect(parseHostPort('[::1]:9')).toEqual({ host: '::1', port: 9 });
    expect(() => parseHostPort('localhost')).toThrow(/must be HOST:PORT/);
    expect(() => parseHostPort('h:70000')).toThrow(/between 1 and 65535/);
  });
});

describe('waitFor', () => {
  it('takes a wait a timer can make, and refuses a longer one rather than fire it at once', () => {
    expect(waitFor('timeout', 's', { whole: true })(30)).toBe(30);
    expect(waitFor('timeout', 's', { whole: true })(2_147_483)).toBe(2_147_483);
    expect(() => waitFor('timeout', 's', { whole: true })(2_147_484)).toThrow(/^--timeout must be at most 2147483 \(24.8 days/);
    expect(() => waitFor('interval-ms', 'ms', { whole: true })(2 ** 31)).toThrow(/^--interval-ms must be at most 2147483647/);
    expect(() => waitFor('seconds', 's')(0)).toThrow('--seconds must be a number > 0, got 0');
    expect(waitFor('model-seconds', 's', { zero: true })(0)).toBe(0);
    expect(() => waitFor('timeout', 's', { whole: true })(1.5)).toThrow('--timeout must be a whole number >= 1, got 1.5');
  });
});

describe('shareText', () => {
  it("prints a share of the bound's saving, and says when a row beat the bound only with more downtime", () => {
    expect(shareText(null)).toBe('');
    expect(shareText(0.634)).toBe('63%');
    expect(shareText(1)).toBe('100%');
    expect(shareText(598.7)).toBe('>100%, more downtime');
  });
});
