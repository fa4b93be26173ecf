import fs from 'node:fs';
import path from 'node:path';

// Paths a command will write to, checked before it starts the work (a migration, a recording, a
// listener), so that a path it cannot write fails at once, in one line, and not after the
// process was frozen, or killed, or the migration ran.

function codeOf(e: unknown): string {
  return (e as { code?: string }).code ?? (e as Error).message;
}

/**
 * Makes `dir` if it is missing, a level at a time (Node's recursive mkdir does not return under
 * /proc), and checks that a file can be made in it. Returns why it cannot be used, or null.
 */
export function prepareDir(dir: string): string | null {
  if (dir === '') return 'the path is empty';
  const abs = path.resolve(dir);
  const missing: string[] = [];
  for (let p = abs; ; ) {
    try {
      if (!fs.statSync(p).isDirectory()) return `${p} is not a directory`;
      break;
    } catch (e) {
      if (codeOf(e) !== 'ENOENT') return `cannot use ${p}: ${codeOf(e)}`;
      missing.push(p);
      const up = path.dirname(p);
      if (up === p) return `cannot use ${abs}: ENOENT`;
      p = up;
    }
  }
  for (const m of missing.reverse()) {
    try {
      fs.mkdirSync(m);
    } catch (e) {
      return `cannot make the directory ${m}: ${codeOf(e)}`;
    }
  }
  return probeWrite(abs);
}

/**
 * Whether `file` can be written: not a directory, in a directory that exists and takes new files,
 * and writable if it exists. Returns why not, or null. Nothing is made or changed.
 */
export function checkWritableFile(file: string): string | null {
  if (file === '') return 'the path is empty';
  const abs = path.resolve(file);
  try {
    if (fs.statSync(abs).isDirectory()) return `${abs} is a directory`;
    fs.accessSync(abs, fs.constants.W_OK);
    return null;
  } catch (e) {
    if (codeOf(e) !== 'ENOENT') return `cannot write ${abs}: ${codeOf(e)}`;
  }
  const dir = path.dirname(abs);
  try {
    if (!fs.statSync(dir).isDirectory()) return `${dir} is not a directory`;
  } catch (e) {
    return `cannot write ${abs}: ${dir} ${codeOf(e) === 'ENOENT' ? 'does not exist' : codeOf(e)}`;
  }
  return probeWrite(dir);
}

/** Whether a new file can be made in `dir` (made and removed at once); why not, or null. */
function probeWrite(dir: string): string | null {
  const probe = path.join(dir, `.forecopy-probe-${process.pid}`);
  try {
    fs.writeFileSync(probe, '');
    fs.unlinkSync(probe);
  } catch (e) {
    return `cannot write in ${dir}: ${codeOf(e)}`;
  }
  return null;
}
