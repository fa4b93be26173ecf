import os from 'node:os';

// Every error of the linux package, each with a stable `code`. This package is a library with no
// command line of its own: the agents map these errors to their exit codes (the source agent in
// packages/source-agent/src/errno-map.ts; a RestoreError ends a migration with exit 10).
//   KernelError              a failed system call; `code` is its errno name (EPERM, ESRCH, ...)
//   TrackerUnsupportedError  this kernel cannot track dirty pages (E_TRACKER_UNSUPPORTED)
//   AlreadyTrackedError      another forecopy tracker is open in the process (E_ALREADY_TRACKED)
//   StateFormatError         a process state received from a peer is malformed (E_BAD_STATE)
//   RestoreError             a process could not be rebuilt (RESTORE_ERROR_CODES)

/** A failed system call, with its errno name (EPERM, ESRCH, ...). */
export class KernelError extends Error {
  readonly code: string;
  constructor(
    readonly syscall: string,
    readonly errno: number,
    detail = '',
  ) {
    const name = errnoName(errno);
    super(`${syscall} failed: ${name} (${os.constants.errno ? describe(errno) : errno})${detail ? `: ${detail}` : ''}`);
    this.name = 'KernelError';
    this.code = name;
  }
}

function errnoName(n: number): string {
  for (const [k, v] of Object.entries(os.constants.errno)) if (v === n) return k;
  return `errno ${n}`;
}
function describe(n: number): string {
  const texts: Record<string, string> = {
    EPERM: 'operation not permitted',
    ESRCH: 'no such process',
    EINVAL: 'invalid argument',
    EFAULT: 'bad address',
    EBUSY: 'busy',
    ENOMEM: 'out of memory',
    EACCES: 'permission denied',
    ENOSYS: 'not implemented by this kernel',
    ENOTTY: 'not supported by this kernel',
  };
  return texts[errnoName(n)] ?? `errno ${n}`;
}

export const RESTORE_ERROR_CODES: Readonly<Record<string, string>> = Object.freeze({
  E_RESTORE_HUSK: 'the husk process a restore runs in could not be started or controlled',
  E_RESTORE_LAYOUT: "the process's mappings cannot be placed at their addresses here",
  E_RESTORE_KERNEL: 'this kernel or CPU differs from the source in a way the process would notice (vDSO, FPU state)',
  E_RESTORE_FILE: 'a file the process has open or mapped is missing here, or differs from the source',
  E_RESTORE_MEMORY: "the husk's memory could not be read or written",
  E_RESTORE_STATE: 'a part of the process state (threads, signals, descriptors, limits) could not be set',
  E_RESTORE_TEST: 'the restore failed on purpose (a hidden test flag)',
});

export type RestoreErrorCode = keyof typeof RESTORE_ERROR_CODES;

export class RestoreError extends Error {
  constructor(
    readonly code: string,
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'RestoreError';
  }
}

export class TrackerUnsupportedError extends Error {
  readonly code = 'E_TRACKER_UNSUPPORTED';
  constructor(message: string) {
    super(message);
    this.name = 'TrackerUnsupportedError';
  }
}

/** Another forecopy tracker (an agent's, or one a killed agent left) is open in the process. */
export class AlreadyTrackedError extends Error {
  readonly code = 'E_ALREADY_TRACKED';
  constructor(
    readonly pid: number,
    readonly fds: number[],
  ) {
    super(`process ${pid} is already tracked by forecopy (a userfaultfd of another agent, fd ${fds.join(', ')})`);
    this.name = 'AlreadyTrackedError';
  }
}

/** A ProcessState or RestorePreview that came over the network and is not what it must be. */
export class StateFormatError extends Error {
  readonly code = 'E_BAD_STATE';
}
