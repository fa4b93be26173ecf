import { Writable } from 'node:stream';

/**
 * A stream for pino on a terminal: one short line per record (`level msg key=value ...`) instead
 * of JSON. Off a terminal the agents log JSON, one object a line, for machines.
 */
const LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
const SKIP = new Set(['level', 'time', 'pid', 'hostname', 'msg', 'name']);

export function terminalLogStream(out: NodeJS.WritableStream = process.stderr): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          const fields = Object.entries(rec)
            .filter(([k]) => !SKIP.has(k))
            .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`)
            .join(' ');
          out.write(`${LEVELS[rec.level as number] ?? rec.level} ${rec.msg ?? ''}${fields ? `  ${fields}` : ''}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      cb();
    },
  });
}
