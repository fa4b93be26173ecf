import fs from 'node:fs';
import { readFdTable } from './fd-table.js';
import { readMaps, type ProcMapping } from './proc-maps.js';

// What stops a process from being restored elsewhere: state outside its memory that forecopy
// cannot carry (connections, pipes to other processes, kernel objects, children, a tracer, System
// V IPC). `forecopy-source check` prints these; `migrate` refuses before the first page moves.

export interface Blocker {
  /** 'fd', 'child', 'tracer' or 'mapping'. */
  kind: 'fd' | 'child' | 'tracer' | 'mapping';
  /** The descriptor number, child pid, tracer pid or mapping start address. */
  id: number;
  /** One line a user reads, e.g. "fd 3: a TCP socket". */
  message: string;
}

export interface BlockerOptions {
  /** Descriptors the caller installed itself (the dirty tracker's userfaultfd). */
  ignoreFds?: ReadonlySet<number>;
  /** A tracer that is the caller itself (the agent freezing the process). */
  ourPid?: number;
}

export function findBlockers(pid: number, opts: BlockerOptions = {}): Blocker[] {
  const out: Blocker[] = [];
  const maps = readMaps(pid);
  for (const c of readFdTable(pid, opts.ignoreFds)) {
    if (!c.ok) out.push({ kind: 'fd', id: c.fd, message: `fd ${c.fd}: ${c.what}` });
    else if (c.state.kind === 'memfd' && !memfdMapped(maps, c.state.inode)) {
      out.push({
        kind: 'fd',
        id: c.state.fd,
        message: `fd ${c.state.fd}: a memfd the process does not map (its content cannot be carried)`,
      });
    }
  }
  for (const child of childrenOf(pid)) {
    out.push({ kind: 'child', id: child, message: `child process ${child} (${commOf(child)})` });
  }
  const tracer = tracerOf(pid);
  if (tracer !== 0 && tracer !== opts.ourPid) {
    out.push({ kind: 'tracer', id: tracer, message: `traced by process ${tracer} (${commOf(tracer)})` });
  }
  for (const m of maps) {
    const what = mappingBlocker(m.path);
    if (what) out.push({ kind: 'mapping', id: m.start, message: `mapping at 0x${m.start.toString(16)}: ${what}` });
  }
  return out;
}

/** Whether a memfd (by inode) is mapped by the process: its mapping carries its content. */
export function memfdMapped(maps: readonly ProcMapping[], inode: number | undefined): boolean {
  return maps.some((m) => m.path.startsWith('/memfd:') && m.inode === inode);
}

function mappingBlocker(path: string): string | null {
  if (path.startsWith('/SYSV')) return 'a System V shared memory segment';
  if (!path.startsWith('/') || path.startsWith('/memfd:')) return null;
  if (path === '/dev/zero (deleted)' || path === '/dev/zero') return null;
  if (path.endsWith(' (deleted)')) return `a deleted file (${path})`;
  try {
    const st = fs.statSync(path);
    if (!st.isFile()) return `${path}, which is not a regular file`;
  } catch {
    return `${path}, which cannot be found by that path`;
  }
  return null;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const t of tids) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim();
      if (text) out.push(...text.split(/\s+/).map(Number));
    } catch {
      // thread gone
    }
  }
  return out;
}

function tracerOf(pid: number): number {
  try {
    const m = /^TracerPid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

function commOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}
