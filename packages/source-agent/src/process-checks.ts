import fs from 'node:fs';
import { InputError, ProcessError } from './errors.js';

/** Throws ProcessError unless process `pid` exists. */
export function requireProcess(pid: number): void {
  if (!fs.existsSync(`/proc/${pid}`)) throw new ProcessError(`no process with pid ${pid}`);
}

/** Throws InputError for a pid that is not one, ProcessError unless it names a process this agent may migrate: another one, alive. */
export function requireMigratable(pid: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new InputError(`--pid must be a positive whole number, got ${pid}`);
  if (pid === process.pid) throw new ProcessError(`pid ${pid} is this agent itself; migrate another process`);
  requireProcess(pid);
}
