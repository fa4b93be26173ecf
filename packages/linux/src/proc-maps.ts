import fs from 'node:fs';
import { KernelError } from './errors.js';

/** One line of /proc/PID/maps. Addresses are below 2^47, so they fit JavaScript numbers. */
export interface ProcMapping {
  start: number;
  end: number;
  perms: string;
  offset: number;
  dev: string;
  inode: number;
  path: string;
}

export function parseMaps(text: string): ProcMapping[] {
  const out: ProcMapping[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) ([0-9a-f]+) (\S+) (\d+)\s*(.*)$/.exec(line);
    if (!m) continue;
    out.push({
      start: parseInt(m[1], 16),
      end: parseInt(m[2], 16),
      perms: m[3],
      offset: parseInt(m[4], 16),
      dev: m[5],
      inode: Number(m[6]),
      path: m[7],
    });
  }
  return out;
}

export function readMaps(pid: number): ProcMapping[] {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/maps`, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') throw new KernelError('read /proc/PID/maps', 3 /* ESRCH */, `no process ${pid}`);
    if (code === 'EACCES' || code === 'EPERM') throw new KernelError('read /proc/PID/maps', 1 /* EPERM */, `pid ${pid}`);
    throw e;
  }
  return parseMaps(text);
}

const SPECIAL = new Set(['[vvar]', '[vdso]', '[vsyscall]', '[vvar_vclock]', '[uprobes]']);

/** Private, readable, writable memory: what a migration must carry. */
export function isMigratable(m: ProcMapping): boolean {
  return m.perms[0] === 'r' && m.perms[1] === 'w' && m.perms[3] === 'p' && !SPECIAL.has(m.path) && m.end > m.start;
}
