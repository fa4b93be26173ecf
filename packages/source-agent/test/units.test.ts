import { describe, expect, it } from 'vitest';
import { parseBandwidth, parseHostPort } from '../src/units.js';

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
