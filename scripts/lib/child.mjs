// A child process whose stdout is collected line by line, for the demo and benchmark scripts
// (the tests have their own, typed, in e2e/src/procs.ts).
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const DEST_BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../packages/dest-agent/bin/forecopy-dest.mjs');

/** Starts `cmd args`; stderr goes to ours unless `capture`. Every child is also added to `kids`. */
export function startChild(cmd, args, { capture = false, kids } = {}) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', capture ? 'pipe' : 'inherit'] });
  kids?.add(child);
  const lines = [];
  let buf = '';
  child.stdout.on('data', (d) => {
    buf += d;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const exited = new Promise((r) =>
    child.on('exit', (code) => {
      kids?.delete(child);
      r(code);
    }),
  );
  /** Resolves with the first stdout line matching `re`; rejects when the child exits or after `ms`. */
  const waitFor = async (re, ms = 60_000) => {
    const t0 = Date.now();
    for (;;) {
      const m = lines.map((l) => l.match(re)).find(Boolean);
      if (m) return m;
      if (child.exitCode !== null || Date.now() - t0 > ms) throw new Error(`${path.basename(cmd)} did not print ${re}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return { child, lines, exited, waitFor };
}

/** Kills every child still running, by pid. */
export function killAll(kids) {
  for (const k of kids) {
    try {
      process.kill(k.pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/**
 * `cmd args` run with nothing open but its standard streams, as a process to be restored elsewhere
 * must be (pnpm and test runners leak descriptors into their children). The tests' twin is
 * withOnlyStdio in e2e/src/procs.ts.
 */
export function withOnlyStdio(cmd, args) {
  // biome-ignore lint/suspicious/noTemplateCurlyInString: ${f##*/} is a shell parameter expansion, not a JS template
  const closeOthers = 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@"';
  return ['/bin/bash', ['-c', closeOthers, 'bash', cmd, ...args]];
}

/**
 * Starts `forecopy-dest listen` on a free port of 127.0.0.1 with `start` (a startChild bound to a
 * set of kids), images under `imageDir`, and `extra` options; returns the child and its port.
 */
export async function startDestination(start, imageDir, extra = []) {
  const dest = start(process.execPath, [DEST_BIN, 'listen', '--port', '0', '--image-dir', imageDir, '--log-level', 'warn', ...extra]);
  const port = (await dest.waitFor(/listening on .*:(\d+)$/))[1];
  return { dest, port };
}
