// The filter package's errors: what a file made by forecopy (a model, a trace) can be wrong with,
// each with a stable code. The package is pure logic with no command line: forecopy-source maps
// these to its InputError (exit 2). Wrong arguments to its functions (a bitmap of the wrong size, a
// state count out of range) are programming errors and throw RangeError.

export const FILTER_ERROR_CODES: Readonly<Record<string, string>> = Object.freeze({
  E_MODEL_FORMAT: 'a model file (forecopy-source model) is not one, is of another format version, truncated, corrupt or inconsistent',
  E_TRACE_FORMAT: 'a trace file (forecopy-source record) is not one, is of another format version, truncated or inconsistent',
});

/** A model file that cannot be read (MarkovModel.fromBytes). */
export class ModelFormatError extends Error {
  readonly code = 'E_MODEL_FORMAT';
}

/** A trace file that cannot be read (decodeTrace), or one with nothing to replay. */
export class TraceFormatError extends Error {
  readonly code = 'E_TRACE_FORMAT';
}
