/**
 * Every error of the protocol package, one class each with a stable `code`. The codes are
 * documented in PROTOCOL_ERROR_CODES (and in the README's reference).
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

export const PROTOCOL_ERROR_CODES: Readonly<Record<string, string>> = Object.freeze({
  E_FRAME_TOO_LARGE: 'a frame announced more bytes than the receiver accepts; rejected before its body is read',
  E_FRAME_TRUNCATED: 'the stream ended inside a frame',
  E_UNKNOWN_MESSAGE_TYPE: 'a frame carried a message type this version does not know',
  E_INVALID_MESSAGE_TYPE: 'a frame carried message type 0, which is never valid',
  E_BAD_HEADER: 'a header is not a msgpack map, or a field is missing, of the wrong type or out of range',
  E_BAD_MAGIC: "a Hello did not start with the magic 'FCPY'",
  E_UNSUPPORTED_VERSION: 'a Hello named a protocol version this build does not speak',
  E_BAD_PAYLOAD: "a payload's length does not match what its header announces",
  E_LIMIT_EXCEEDED: 'a message exceeds a protocol limit (pages or ranges per batch, mappings, checksums)',
});
