import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { UiEvent } from './ui-events.js';

// The live dashboard (`migrate --ui PORT`, `record --ui PORT`): one page on 127.0.0.1 that
// streams the migration over a WebSocket: a heat map of the write regions per sample, the
// current and forecast Markov states, each round's pages sent / filtered / written, throughput,
// and the downtime at the end. Late visitors get the history replayed (bounded). The events are
// declared in ui-events.ts.

const MAX_HISTORY = 5000;

export interface UiServer {
  url: string;
  publish(e: UiEvent): void;
  close(): Promise<void>;
}

export function startUi(port: number): Promise<UiServer> {
  const history: UiEvent[] = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(PAGE);
    } else {
      res.writeHead(404).end('not found');
    }
  });
  const wss = new WebSocketServer({ server, path: '/events' });
  // The server's own errors (a port in use) are the server's to report (below); ws passes them on too.
  wss.on('error', () => {});
  wss.on('connection', (ws: WebSocket) => {
    for (const e of history) ws.send(JSON.stringify(e));
  });
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === 'EADDRINUSE' ? `--ui port ${port} is already in use` : `cannot serve the dashboard on port ${port}: ${e.message}`,
        ),
      ),
    );
    // Loopback only: the dashboard shows a process's write pattern, nothing for other hosts.
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${addr.port}/`,
        publish(e) {
          history.push(e);
          if (history.length > MAX_HISTORY) history.splice(1, history.length - MAX_HISTORY); // keep the hello
          const text = JSON.stringify(e);
          for (const c of wss.clients) if (c.readyState === 1) c.send(text);
        },
        close() {
          return new Promise<void>((r) => {
            for (const c of wss.clients) c.terminate();
            wss.close(() => server.close(() => r()));
          });
        },
      });
    });
  });
}

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>forecopy live</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
#heatmap{display:flex;gap:1px;height:192px;overflow:hidden;border:1px solid #ccc;background:#fafafa;width:900px}
#heatmap .col{display:flex;flex-direction:column-reverse;width:6px;flex:none}
#heatmap .cell{flex:1}
table{border-collapse:collapse;margin-top:1em}th,td{border:1px solid #ccc;padding:3px 9px;text-align:right}
#status span{margin-right:2em}
</style></head><body>
<h1>forecopy: live migration</h1>
<p id="status"><span id="proc">waiting for the source...</span><span id="state"></span><span id="rate"></span><span id="downtime"></span></p>
<h2>Writes per region (one column per sample, newest right; darker = more pages written)</h2>
<div id="heatmap"></div>
<h2>Rounds</h2>
<table id="rounds"><thead><tr><th>round</th><th>sent</th><th>filtered</th><th>written</th><th>ms</th><th>MiB/s</th><th>written/s</th><th>throttle %</th><th>downtime if stopped, ms</th></tr></thead><tbody></tbody></table>
<script>
const $ = (id) => document.getElementById(id);
const heat = $('heatmap');
const fmt = (n) => n.toLocaleString('en-US');
function onEvent(e) {
  if (e.type === 'hello') $('proc').textContent = 'pid ' + e.pid + ', ' + fmt(e.pages) + ' pages, policy ' + e.policy;
  if (e.type === 'sample') {
    const col = document.createElement('div');
    col.className = 'col';
    const max = Math.max(1, ...e.hist);
    for (const v of e.hist) {
      const c = document.createElement('div');
      c.className = 'cell';
      const a = v ? 0.15 + 0.85 * (v / max) : 0;
      c.style.background = 'rgba(200,60,20,' + a.toFixed(2) + ')';
      col.appendChild(c);
    }
    heat.appendChild(col);
    while (heat.children.length > 150) heat.removeChild(heat.firstChild);
    $('state').textContent = e.state === null ? '' : 'state ' + e.state + (e.forecast.length ? ', forecast ' + e.forecast.join(' > ') : '');
  }
  if (e.type === 'round') {
    const tr = document.createElement('tr');
    const mibs = e.durationMs > 0 ? (e.bytesSent / 1048576) / (e.durationMs / 1000) : 0;
    const opt = (v, f) => (v === undefined ? '' : f(v));
    for (const v of [e.final ? e.round + ' (stop)' : e.round, fmt(e.pagesSent), fmt(e.pagesFiltered), fmt(e.pagesDirtied), e.durationMs.toFixed(1), mibs.toFixed(1),
      opt(e.dirtyRate, (x) => fmt(Math.round(x))), opt(e.throttlePercent, String), opt(e.expectedDowntimeMs, (x) => x.toFixed(0))]) {
      const td = document.createElement('td');
      td.textContent = v;
      tr.appendChild(td);
    }
    $('rounds').tBodies[0].appendChild(tr);
    $('rate').textContent = mibs.toFixed(1) + ' MiB/s in the last round';
  }
  if (e.type === 'done') $('downtime').textContent = (e.verified ? 'VERIFIED' : 'NOT VERIFIED') + ', downtime ' + e.downtimeMs.toFixed(1) + ' ms, total ' + (e.totalMs / 1000).toFixed(2) + ' s' + (e.error ? ': ' + e.error : '');
}
const ws = new WebSocket('ws://' + location.host + '/events');
ws.onmessage = (m) => onEvent(JSON.parse(m.data));
</script></body></html>
`;
