import fs from 'node:fs';
import type { FdState, FileIdentity } from './process-state.js';

// A process's file descriptors as a migration sees them: what can be reopened at the
// destination (regular files, directories, a few devices; standard streams bound to files there)
// and what cannot (sockets, pipes, event and notification descriptors...), named one by one.

/** Character devices that hold no state a process could depend on: reopened by path. */
const STATELESS_DEVICES = new Set(['/dev/null', '/dev/zero', '/dev/random', '/dev/urandom', '/dev/full']);
const O_CLOEXEC = 0o2000000;

export type FdClass = { ok: true; state: FdState } | { ok: false; fd: number; what: string };

/** The identity a file must keep at the destination: path, size and modification time. */
export function fileIdentity(path: string, st: fs.BigIntStats): FileIdentity {
  return { path, size: Number(st.size), mtimeNs: st.mtimeNs.toString() };
}

/** Every descriptor of `pid`, classified. `ignore`: descriptors the caller installed itself. */
export function readFdTable(pid: number, ignore: ReadonlySet<number> = new Set()): FdClass[] {
  let names: string[];
  try {
    names = fs.readdirSync(`/proc/${pid}/fd`);
  } catch {
    return [];
  }
  const out: FdClass[] = [];
  for (const n of names.map(Number).sort((a, b) => a - b)) {
    if (ignore.has(n)) continue;
    const c = classifyFd(pid, n);
    if (c) out.push(c);
  }
  return out;
}

function classifyFd(pid: number, fd: number): FdClass | null {
  let link: string;
  let st: fs.BigIntStats;
  let info: { flags: number; pos: number };
  try {
    link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
    info = readFdInfo(pid, fd);
    st = fs.statSync(`/proc/${pid}/fd/${fd}`, { bigint: true });
  } catch {
    return null; // closed meanwhile
  }
  const stdio = fd <= 2;
  const bad = (what: string): FdClass => ({ ok: false, fd, what });
  const ok = (kind: FdState['kind'], extra: Partial<FdState> = {}): FdClass => ({
    ok: true,
    state: { fd, kind, path: link, flags: info.flags, pos: info.pos, ...extra },
  });
  // Standard streams that are pipes, terminals or sockets (a service's log socket, a parent's
  // socketpair) are bound to files at the destination.
  if (link.startsWith('socket:')) return stdio ? ok('stdio') : bad(socketKind(pid, st.ino));
  if (link.startsWith('pipe:')) return stdio ? ok('stdio') : bad('a pipe');
  if (link.startsWith('anon_inode:')) return bad(anonInodeKind(link));
  // A memfd is carried by its mapping (blockers.ts refuses one that is not mapped).
  if (link.startsWith('/memfd:')) return ok('memfd', { inode: Number(st.ino) });
  if (link.endsWith(' (deleted)')) return bad(`a deleted file (${link})`);
  if (st.isFIFO()) return stdio ? ok('stdio') : bad(`a FIFO (${link})`);
  if (st.isDirectory()) return ok('dir');
  if (st.isFile()) return ok('file', { file: fileIdentity(link, st) });
  if (st.isCharacterDevice()) {
    if (STATELESS_DEVICES.has(link)) return ok('dev');
    if (stdio && (link.startsWith('/dev/pts/') || link.startsWith('/dev/tty') || link === '/dev/console')) return ok('stdio');
    return bad(`the character device ${link}`);
  }
  return bad(`${link} (neither a file, a directory nor a known device)`);
}

/** flags (octal) and pos from /proc/PID/fdinfo/FD. */
export function readFdInfo(pid: number, fd: number): { flags: number; pos: number } {
  const text = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  const pos = /^pos:\s+(\d+)/m.exec(text);
  const flags = /^flags:\s+([0-7]+)/m.exec(text);
  return { pos: pos ? Number(pos[1]) : 0, flags: flags ? parseInt(flags[1], 8) : 0 };
}

export function isCloexec(flags: number): boolean {
  return (flags & O_CLOEXEC) !== 0;
}

function anonInodeKind(link: string): string {
  const name = link.slice('anon_inode:'.length).replace(/^\[|\]$/g, '');
  const known: Record<string, string> = {
    eventfd: 'an eventfd',
    signalfd: 'a signalfd',
    timerfd: 'a timerfd',
    eventpoll: 'an epoll instance',
    inotify: 'an inotify instance',
    fanotify: 'a fanotify instance',
    io_uring: 'an io_uring',
    perf_event: 'a perf event',
    userfaultfd: 'a userfaultfd',
    pidfd: 'a pidfd',
  };
  return known[name] ?? `an anonymous inode (${name})`;
}

/** A socket's family and protocol, from the process's /proc/PID/net tables. */
function socketKind(pid: number, inode: bigint): string {
  const tables: Array<[string, string]> = [
    ['tcp', 'a TCP socket'],
    ['tcp6', 'a TCP socket (IPv6)'],
    ['udp', 'a UDP socket'],
    ['udp6', 'a UDP socket (IPv6)'],
    ['raw', 'a raw socket'],
    ['raw6', 'a raw socket (IPv6)'],
    ['unix', 'a Unix socket'],
    ['netlink', 'a netlink socket'],
    ['packet', 'a packet socket'],
  ];
  const ino = ` ${inode} `;
  for (const [table, what] of tables) {
    try {
      const text = fs.readFileSync(`/proc/${pid}/net/${table}`, 'utf8');
      if (text.split('\n').some((line) => `${line} `.includes(ino))) return what;
    } catch {
      // table absent in this kernel
    }
  }
  return 'a socket';
}
