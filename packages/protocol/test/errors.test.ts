import { describe, expect, it } from 'vitest';
import * as protocol from '../src/index.js';
import { PROTOCOL_ERROR_CODES, MessageType, verified } from '../src/index.js';

/**
 * The protocol's error codes are a public contract: agents decide on them (the source agent
 * treats every `E_` code of the channel as a connection failure) and logs and reports carry them.
 */
const instances: Array<Error & { code: string }> = [
  new protocol.ProtocolError('x'),
  new protocol.FrameTooLargeError('x'),
  new protocol.FrameTruncatedError('x'),
  new protocol.UnknownMessageTypeError('x'),
  new protocol.InvalidMessageTypeError('x'),
  new protocol.BadHeaderError('x'),
  new protocol.BadMagicError('x'),
  new protocol.UnsupportedVersionError('x'),
  new protocol.BadPayloadError('x'),
  new protocol.LimitExceededError('x'),
  new protocol.ChannelClosedError('x'),
  new protocol.ChannelTimeoutError('x'),
  new protocol.UnexpectedMessageError('x', verified({ pages: 1 })),
  new protocol.PeerAbortError('E_ORDER', 'x'),
  new protocol.SecurityConfigError('x'),
];

describe('protocol error codes', () => {
  it('every error class has its own documented code, and its class name as name', () => {
    const codes = instances.map((e) => e.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const e of instances) {
      expect(e.code).toMatch(/^E_[A-Z_]+$/);
      expect(PROTOCOL_ERROR_CODES[e.code], e.code).toMatch(/\S/);
      expect(e.name).toBe(e.constructor.name);
    }
    expect(Object.keys(PROTOCOL_ERROR_CODES).sort()).toEqual([...codes].sort());
  });

  it('keeps the codes other packages already rely on', () => {
    expect(instances.map((e) => `${e.constructor.name}=${e.code}`)).toEqual([
      'ProtocolError=E_PROTOCOL',
      'FrameTooLargeError=E_FRAME_TOO_LARGE',
      'FrameTruncatedError=E_FRAME_TRUNCATED',
      'UnknownMessageTypeError=E_UNKNOWN_MESSAGE_TYPE',
      'InvalidMessageTypeError=E_INVALID_MESSAGE_TYPE',
      'BadHeaderError=E_BAD_HEADER',
      'BadMagicError=E_BAD_MAGIC',
      'UnsupportedVersionError=E_UNSUPPORTED_VERSION',
      'BadPayloadError=E_BAD_PAYLOAD',
      'LimitExceededError=E_LIMIT_EXCEEDED',
      'ChannelClosedError=E_CHANNEL_CLOSED',
      'ChannelTimeoutError=E_CHANNEL_TIMEOUT',
      'UnexpectedMessageError=E_UNEXPECTED_MESSAGE',
      'PeerAbortError=E_PEER_ABORT',
      'SecurityConfigError=E_SECURITY_CONFIG',
    ]);
  });

  it("a PeerAbortError keeps the peer's code and reason apart from its own code", () => {
    const e = new protocol.PeerAbortError('E_DISK_FULL', "the destination's disk is full");
    expect(e).toMatchObject({ code: 'E_PEER_ABORT', peerCode: 'E_DISK_FULL', reason: "the destination's disk is full" });
    expect(e.message).toBe("peer aborted: the destination's disk is full (E_DISK_FULL)");
  });

  it('an UnexpectedMessageError carries the message received', () => {
    const e = new protocol.UnexpectedMessageError('expected RoundAck, received Verified', verified({ pages: 3 }));
    expect(e.received.type).toBe(MessageType.Verified);
  });

  it('unusable security flags are a SecurityConfigError', () => {
    expect(() => protocol.loadSecurity({ tlsCert: 'a.pem' })).toThrow(protocol.SecurityConfigError);
    expect(() => protocol.loadSecurity({ pskFile: '/nonexistent/forecopy.key' })).toThrow(
      expect.objectContaining({ code: 'E_SECURITY_CONFIG' }),
    );
  });
});
