// A workloads file, as PAPER_WORKLOADS (bench/paper.test.ts) and bench/record.mjs take it: a JSON
// array of {"name", "cmd"}; cmd is a shell command that prints `pid=N`, N being the process to
// migrate or record, and keeps running. Names are unique (each names a trace and a results file).
import fs from 'node:fs';

/** The programs of `file`, checked; throws an Error whose message names the file and the fault. */
export function readWorkloadsFile(file) {
  let list;
  try {
    list = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${file} as JSON: ${e.message}`);
  }
  if (!Array.isArray(list)) throw new Error(`${file} must hold a JSON array of {"name", "cmd"}`);
  const names = new Set();
  return list.map((x, i) => {
    const { name, cmd } = x ?? {};
    if (typeof name !== 'string' || !/^[a-z0-9][a-z0-9_.-]*$/i.test(name) || typeof cmd !== 'string' || cmd.trim() === '') {
      throw new Error(`entry ${i + 1} of ${file} needs a "name" (letters, digits, - _ .) and a "cmd" (a shell command that prints pid=N)`);
    }
    if (names.has(name)) throw new Error(`"${name}" appears twice in ${file}`);
    names.add(name);
    return { name, cmd };
  });
}
