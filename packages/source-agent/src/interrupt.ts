// What an interrupted agent (SIGINT, SIGTERM) undoes in the process before it exits: its tracking
// (the userfaultfd registered in the process) and auto-converge's throttle (a cgroup, a duty
// cycle). Each registers an undo when it starts and drops it once it has undone itself. A freeze
// needs none: the kernel detaches a dead tracer's tracees and they run on. A handover under way is
// left to `forecopy-source resolve`, as when the agent dies (its record says what to do).
//
// A command that ends on a signal by design (model --watch) listens for it itself; the agent then
// leaves the signal to it.

interface Undo {
  what: string;
  fn: () => void;
}

const undos = new Set<Undo>();

/** Registers `fn` to run if the agent is interrupted; returns what drops it again. */
export function undoOnInterrupt(what: string, fn: () => void): () => void {
  const u = { what, fn };
  undos.add(u);
  return () => void undos.delete(u);
}

let installed = false;

/** On SIGINT or SIGTERM: runs the undos (the newest first), says what it did, exits 130 or 143. Once per process. */
export function installInterruptHandlers(name: string): void {
  if (installed) return;
  installed = true;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.on(sig, () => {
      if (process.listenerCount(sig) > 1) return; // a command that ends on it handles it
      const done: string[] = [];
      for (const u of [...undos].reverse()) {
        try {
          u.fn();
          done.push(u.what);
        } catch {
          // The process may be gone: nothing left to undo in it.
        }
      }
      undos.clear();
      process.stderr.write(`\n${name}: interrupted (${sig})${done.length ? `; ${done.join('; ')}` : ''}\n`);
      process.exit(sig === 'SIGINT' ? 130 : 143);
    });
  }
}
