/** The programs of a workloads file, checked (scripts/lib/workloads.mjs). */
export function readWorkloadsFile(file: string): Array<{ name: string; cmd: string }>;
