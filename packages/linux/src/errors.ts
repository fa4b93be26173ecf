// The linux package's own errors. KernelError (libc.ts) carries a failed system call's errno;
// TrackerUnsupportedError (uffd-tracker.ts) says the kernel cannot track dirty pages; RestoreError
// says why a process could not be rebuilt, with a stable code.

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
