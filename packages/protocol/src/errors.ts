import type { Message } from './messages.js';

/**
 * Every error of the protocol package, one class each with a stable `code`. The codes are
 * documented in PROTOCOL_ERROR_CODES (and in the README's reference). Decide on an error by its
 * class or its `code`, never by its message: messages are for people and may be reworded.
 *
 * Three families:
 * - ProtocolError and its subclasses: the bytes on the wire are wrong (the decoder's verdicts);
 * - the channel's errors: the connection closed, timed out, carried a message nobody expected,
 *   or the peer sent Abort;
 * - SecurityConfigError: the flags that set up TLS or the pre-shared key are unusable.
 */
export class ProtocolError extends Error {
  readonly code: string = 'E_PROTOCOL';
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}

export class FrameTooLargeError extends ProtocolError {
  override readonly code = 'E_FRAME_TOO_LARGE';
}
export class FrameTruncatedError extends ProtocolError {
  override readonly code = 'E_FRAME_TRUNCATED';
}
export class UnknownMessageTypeError extends ProtocolError {
  override readonly code = 'E_UNKNOWN_MESSAGE_TYPE';
}
export class InvalidMessageTypeError extends ProtocolError {
  override readonly code = 'E_INVALID_MESSAGE_TYPE';
}
export class BadHeaderError extends ProtocolError {
  override readonly code = 'E_BAD_HEADER';
}
export class BadMagicError extends ProtocolError {
  override readonly code = 'E_BAD_MAGIC';
}
export class UnsupportedVersionError extends ProtocolError {
  override readonly code = 'E_UNSUPPORTED_VERSION';
}
export class BadPayloadError extends ProtocolError {
  override readonly code = 'E_BAD_PAYLOAD';
}
export class LimitExceededError extends ProtocolError {
  override readonly code = 'E_LIMIT_EXCEEDED';
}

/**
 * The connection is gone: closed by either side, broken, or given up because the peer sent more
 * unanswered messages than the channel queues. `peerEnded` tells the one orderly case apart: the
 * peer ended its side of the stream (a FIN) between two frames, which is how a peer that is
 * done says goodbye.
 */
export class ChannelClosedError extends Error {
  readonly code = 'E_CHANNEL_CLOSED';
  readonly peerEnded: boolean;
  constructor(message: string, options?: { cause?: unknown; peerEnded?: boolean }) {
    super(message, options?.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = 'ChannelClosedError';
    this.peerEnded = options?.peerEnded ?? false;
  }
}

/** No message arrived in time, or the peer took no data for too long. */
export class ChannelTimeoutError extends Error {
  readonly code = 'E_CHANNEL_TIMEOUT';
  constructor(message: string) {
    super(message);
    this.name = 'ChannelTimeoutError';
  }
}

/** `expect` received a message of another type; the message is kept in `received`. */
export class UnexpectedMessageError extends Error {
  readonly code = 'E_UNEXPECTED_MESSAGE';
  constructor(
    message: string,
    readonly received: Message,
  ) {
    super(message);
    this.name = 'UnexpectedMessageError';
  }
}

/** The peer sent Abort: its own code and reason are `peerCode` and `reason`. */
export class PeerAbortError extends Error {
  readonly code = 'E_PEER_ABORT';
  constructor(
    readonly peerCode: string,
    readonly reason: string,
  ) {
    super(`peer aborted: ${reason} (${peerCode})`);
    this.name = 'PeerAbortError';
  }
}

/** The security flags (--psk-file, --tls-cert/--tls-key/--tls-ca) cannot be used as given. */
export class SecurityConfigError extends Error {
  readonly code = 'E_SECURITY_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'SecurityConfigError';
  }
}

export const PROTOCOL_ERROR_CODES: Readonly<Record<string, string>> = Object.freeze({
  E_PROTOCOL: 'the bytes on the wire break the protocol in a way no more specific code names',
  E_FRAME_TOO_LARGE: 'a frame announced more bytes than the receiver accepts; rejected before its body is read',
  E_FRAME_TRUNCATED: 'the stream ended inside a frame',
  E_UNKNOWN_MESSAGE_TYPE: 'a frame carried a message type this version does not know',
  E_INVALID_MESSAGE_TYPE: 'a frame carried message type 0, which is never valid',
  E_BAD_HEADER: 'a header is not a msgpack map, or a field is missing, of the wrong type or out of range',
  E_BAD_MAGIC: "a Hello did not start with the magic 'FCPY'",
  E_UNSUPPORTED_VERSION: 'a Hello named a protocol version this build does not speak',
  E_BAD_PAYLOAD: "a payload's length does not match what its header announces",
  E_LIMIT_EXCEEDED: 'a message exceeds a protocol limit (pages or ranges per batch, mappings, checksums)',
  E_CHANNEL_CLOSED: 'the connection closed or broke, or the peer sent more unanswered messages than the channel queues',
  E_CHANNEL_TIMEOUT: 'no message arrived from the peer in time, or the peer took no data for too long',
  E_UNEXPECTED_MESSAGE: 'a message of another type arrived than the one the protocol expects at that point',
  E_PEER_ABORT: 'the peer sent Abort; its own code and reason travel with the error',
  E_SECURITY_CONFIG:
    'the TLS or pre-shared key flags are incomplete or contradictory, or name a file that cannot be read or a key that is too short',
});
