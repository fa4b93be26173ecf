import fs from 'node:fs';

/** The fields of /proc/PID/stat that forecopy reads. */
export interface ProcStat {
  /** Field 3: R running, S sleeping, D disk sleep, T stopped, t traced, Z zombie, X dead, ... */
  state: string;
  /** Field 9: the kernel's PF_* flags. */
  flags: number;
  /** Field `n` (numbered from 1 as in proc(5); 3 or more) as a number. */
  field(n: number): number;
}

/** PF_EXITING in the flags: the process is in exit, tearing down its memory. */
export const PF_EXITING = 0x4;

/** Parses /proc/PID/stat. The command name (field 2) may hold spaces and parentheses: it ends at the last ')'. */
export function parseProcStat(text: string): ProcStat {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' '); // from field 3, the state
  const field = (n: number) => Number(fields[n - 3]);
  return { state: fields[0], flags: field(9), field };
}

/** Reads /proc/PID/stat; throws (ENOENT) when there is no such process. */
export function readProcStat(pid: number): ProcStat {
  return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** A zombie its parent has not reaped yet, dead, or already exiting: either way it has exited. */
export function hasExited(stat: ProcStat): boolean {
  return stat.state === 'Z' || stat.state === 'X' || (stat.flags & PF_EXITING) !== 0;
}

/**
 * Whether the process `pid` that started at `startTime` (field 22, in clock ticks since boot)
 * still runs: the pid exists, has not been reused by another process, and has not exited.
 */
export function sameProcessRuns(pid: number, startTime: number): boolean {
  try {
    const stat = readProcStat(pid);
    return stat.field(22) === startTime && !hasExited(stat);
  } catch {
    return false;
  }
}
