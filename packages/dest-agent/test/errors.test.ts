import { describe, expect, it } from 'vitest';
import {
  DEST_ERROR_CODES,
  DestError,
  DiskFullError,
  EXIT,
  LayoutError,
  ListenError,
  SessionProtocolError,
  UserError,
  failureCode,
  type SessionProtocolCode,
} from '../src/index.js';

/** The destination's error codes and exit codes are a contract with the source, logs and scripts. */
const protocolCodes: SessionProtocolCode[] = [
  'E_ORDER',
  'E_UNEXPECTED',
  'E_PAGE_SIZE',
  'E_BUSY',
  'E_COUNT',
  'E_RANGE',
  'E_BAD_PAGE',
  'E_NO_COMMIT',
];

describe('destination errors', () => {
  it('every error has a documented code and the exit code of its kind', () => {
    const errors: DestError[] = [
      new DestError('x'),
      new LayoutError('x'),
      new DiskFullError('/images'),
      new UserError('x'),
      new ListenError('x'),
      ...protocolCodes.map((c) => new SessionProtocolError(c, 'x')),
    ];
    for (const e of errors) {
      expect(DEST_ERROR_CODES[e.code], e.code).toMatch(/\S/);
      expect(e.name).toBe(e.constructor.name);
    }
    expect(errors.map((e) => [e.code, e.exitCode])).toEqual([
      ['E_DEST', 1],
      ['E_LAYOUT', 1],
      ['E_DISK_FULL', 1],
      ['E_USAGE', 2],
      ['E_LISTEN', 3],
      ...protocolCodes.map((c) => [c, 1]),
    ]);
    expect(EXIT).toEqual({ ok: 0, failed: 1, usage: 2, listen: 3 });
  });

  it('the Abort codes a source may receive are all documented', () => {
    for (const c of [...protocolCodes, 'E_LAYOUT', 'E_DISK_FULL', 'E_DEST', 'E_NOT_COMMITTED']) expect(DEST_ERROR_CODES).toHaveProperty(c);
  });

  it('a full disk is told by the system error code, not by the message', () => {
    expect(DiskFullError.isDiskFull(Object.assign(new Error('whatever'), { code: 'ENOSPC' }))).toBe(true);
    expect(DiskFullError.isDiskFull(Object.assign(new Error('whatever'), { code: 'EDQUOT' }))).toBe(true);
    expect(DiskFullError.isDiskFull(new Error('ENOSPC: no space left on device'))).toBe(false);
    expect(DiskFullError.isDiskFull(null)).toBe(false);
    expect(new DiskFullError('/images').message).toBe("the destination's disk is full (writing the image under /images)");
  });

  it("a failed session reports its error's code, E_DEST when it has none", () => {
    expect(failureCode(new LayoutError('x'))).toBe('E_LAYOUT');
    expect(failureCode(Object.assign(new Error('x'), { code: 'E_CHANNEL_TIMEOUT' }))).toBe('E_CHANNEL_TIMEOUT');
    expect(failureCode(Object.assign(new Error('x'), { code: 'EIO' }))).toBe('EIO');
    expect(failureCode(new Error('x'))).toBe('E_DEST');
  });
});
