import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * Two hosts on one machine: network namespaces joined by a veth pair, with addresses of their own
 * and no route out (no default route, nothing bridged to the outside). An optional tbf qdisc caps
 * the link rate in both directions, as the paper capped its migration daemon at 500 Mbit/s.
 *
 *   forecopy-<id>-src                    forecopy-<id>-dst
 *   ┌──────────────────┐  veth pair     ┌──────────────────┐
 *   │ fs<id> 10.R.S.1  ├────────────────┤ fd<id> 10.R.S.2  │
 *   └──────────────────┘                └──────────────────┘
 *
 * Names carry a random id, so two runs cannot collide; `destroy()` removes both namespaces (and
 * with them the veth pair) and is safe to call twice.
 */
export interface TwoHosts {
  source: string;
  dest: string;
  sourceAddr: string;
  destAddr: string;
  /** Wraps a command to run it inside a namespace. */
  exec(ns: string): string[];
  /** Takes the link down (a cut cable) or up again. */
  link(up: boolean): void;
  destroy(): void;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tc(...args: string[]): string {
  return execFileSync('tc', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export function makeTwoHosts(opts: { rate?: string } = {}): TwoHosts {
  const id = randomBytes(3).toString('hex');
  const source = `forecopy-${id}-src`;
  const dest = `forecopy-${id}-dst`;
  const vs = `fs${id}`;
  const vd = `fd${id}`;
  // 10.200-254.x.0/30 from the id: a private subnet that exists only between these namespaces.
  const b = randomBytes(2);
  const net = `10.${200 + (b[0] % 55)}.${b[1]}`;
  const sourceAddr = `${net}.1`;
  const destAddr = `${net}.2`;
  const created: string[] = [];
  const destroy = () => {
    for (const ns of created.splice(0)) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // already gone
      }
    }
  };
  try {
    ip('netns', 'add', source);
    created.push(source);
    ip('netns', 'add', dest);
    created.push(dest);
    ip('link', 'add', vs, 'netns', source, 'type', 'veth', 'peer', 'name', vd, 'netns', dest);
    for (const [ns, dev, addr] of [
      [source, vs, sourceAddr],
      [dest, vd, destAddr],
    ]) {
      ip('-n', ns, 'addr', 'add', `${addr}/30`, 'dev', dev);
      ip('-n', ns, 'link', 'set', dev, 'up');
      ip('-n', ns, 'link', 'set', 'lo', 'up');
      if (opts.rate) tc('-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', opts.rate, 'burst', '256kb', 'latency', '50ms');
    }
  } catch (e) {
    destroy();
    throw e;
  }
  return {
    source,
    dest,
    sourceAddr,
    destAddr,
    exec: (ns) => ['ip', 'netns', 'exec', ns],
    link: (up) => ip('-n', source, 'link', 'set', vs, up ? 'up' : 'down'),
    destroy,
  };
}

/** Whether this machine can make network namespaces (root and iproute2). */
export function netnsSupported(): string | null {
  if (process.getuid?.() !== 0) return 'not root: network namespaces need root';
  try {
    ip('netns', 'list');
    return null;
  } catch (e) {
    return `ip netns does not work here (${(e as Error).message.split('\n')[0]}): install iproute2`;
  }
}
