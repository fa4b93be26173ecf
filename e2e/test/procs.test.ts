import { afterEach, describe, expect, it } from 'vitest';
import { Cleanup, start } from '../src/procs.js';

// The helpers every end-to-end test and benchmark waits with.
describe('Proc.waitFor', () => {
  const c = new Cleanup();
  afterEach(() => c.run());

  it('a wait that matched leaves later waits alone when its timeout would have passed', async () => {
    // "a" at once, "b" after the first wait's timeout, then the process ends. The first wait's
    // timer used to fire after it had matched and remove the last waiter, the wait for "b": that
    // one then never resolved nor failed (the 8 GiB throughput bench hung so, session 8).
    const p = c.proc(start('sh', ['-c', 'echo a; sleep 0.4; echo b; sleep 0.2']));
    expect((await p.waitFor(/^a$/, 150))[0]).toBe('a');
    const b = p.waitFor(/^b$/, 10_000);
    await new Promise((r) => setTimeout(r, 300)); // past the first wait's 150 ms
    expect((await b)[0]).toBe('b');
  }, 15_000);

  it('still fails a wait whose process ends without printing its line, and one that times out', async () => {
    const p = c.proc(start('sh', ['-c', 'echo a; sleep 0.3']));
    await expect(p.waitFor(/^never$/, 10_000)).rejects.toThrow(/exited before printing/);
    const q = c.proc(start('sh', ['-c', 'sleep 5']));
    await expect(q.waitFor(/^never$/, 100)).rejects.toThrow(/timed out waiting/);
  }, 15_000);
});
