import { Duplex } from 'node:stream';

/**
 * Two in-memory streams joined end to end, as a socket pair is: what one writes the other reads,
 * and ending one ends the other's input. A MessageChannel on either end talks to the other end.
 */
export function pipePair(): [Duplex, Duplex] {
  let a: Duplex;
  let b: Duplex;
  const mk = (peer: () => Duplex) =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  a = mk(() => b);
  b = mk(() => a);
  return [a, b];
}
