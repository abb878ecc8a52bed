/**
 * A loopback HTTP pass-through that misbehaves on every Nth request, to show the registry client
 * survives the failures real networks produce:
 *   reset     the connection is reset (TCP RST) before the request reaches the registry
 *   500       the proxy answers 500 itself; the registry never sees the request
 *   truncate  the request goes through; the answer's headers and exactly the first
 *             floor(length / 2) bytes of its body are passed on unchanged, then the connection is
 *             reset (GET answers with a body of at least 2 bytes; when the Nth request is not one,
 *             the next one that is gets cut instead). What the client receives is always a true
 *             prefix of the body: a fault here is a lost tail, never a changed byte.
 * Faults rotate through `faults` in order. The Host header is passed on unchanged so the
 * registry builds upload Locations that point back at this proxy.
 */
import * as http from 'node:http';
import * as net from 'node:net';

export type Fault = 'reset' | '500' | 'truncate';

export interface FaultProxy {
  url: string;
  host: string;
  /** How many faults of each kind were injected. */
  injected: Record<Fault, number>;
  /** Requests seen in total. */
  total(): number;
  close(): Promise<void>;
}

export async function startFaultProxy(targetUrl: string, opts: { every: number; faults: Fault[] }): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const injected: Record<Fault, number> = { reset: 0, '500': 0, truncate: 0 };
  let count = 0;
  let faultIndex = 0;
  let truncatePending = false;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const server = http.createServer((req, res) => {
    count++;
    const fault = count % opts.every === 0 ? opts.faults[faultIndex++ % opts.faults.length] : undefined;
    if (fault === 'reset') {
      injected.reset++;
      req.socket.resetAndDestroy();
      return;
    }
    if (fault === '500') {
      injected['500']++;
      req.resume();
      res.writeHead(500, { 'content-type': 'application/json', connection: 'close' });
      res.end('{"errors":[{"code":"UNKNOWN","message":"injected by the fault proxy"}]}');
      return;
    }
    const up = http.request({
      host: target.hostname, port: Number(target.port), method: req.method, path: req.url, headers: req.headers, agent,
    }, (upRes) => {
      const len = Number(upRes.headers['content-length'] ?? 0);
      if (fault === 'truncate') truncatePending = true;
      if (truncatePending && req.method === 'GET' && len >= 2) {
        truncatePending = false;
        injected.truncate++;
        res.writeHead(upRes.statusCode ?? 502, upRes.rawHeaders);
        const cut = Math.floor(len / 2);
        let sent = 0;
        upRes.on('data', (c: Buffer) => {
          if (sent >= cut) return;
          // The chunk that crosses the cut gives only its head; nothing after the cut is sent.
          const part = c.subarray(0, cut - sent);
          sent += part.length;
          res.write(part);
          if (sent === cut) {
            upRes.destroy();
            // Let the written half leave before the reset.
            setTimeout(() => res.socket?.resetAndDestroy(), 20);
          }
        });
        return;
      }
      res.writeHead(upRes.statusCode ?? 502, upRes.rawHeaders);
      upRes.pipe(res);
    });
    up.on('error', () => {
      // After the headers a proxy cannot finish the body honestly: reset rather than end it short.
      if (res.headersSent) res.socket?.resetAndDestroy();
      else res.writeHead(502).end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    injected,
    total: () => count,
    close: () => new Promise((resolve) => { server.closeAllConnections(); agent.destroy(); server.close(() => resolve()); }),
  };
}
