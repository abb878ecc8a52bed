/**
 * A loopback HTTP pass-through that misbehaves on every Nth request, to show the registry client
 * survives the failures real networks produce, and refuses the bytes a broken server produces:
 *   reset     the connection is reset (TCP RST) before the request reaches the registry
 *   500       the proxy answers 500 itself; the registry never sees the request
 *   truncate  the request goes through; the answer's headers and exactly the first
 *             floor(length / 2) bytes of its body are passed on unchanged, then the connection is
 *             reset. What the client receives is always a true prefix of the body: a lost tail,
 *             never a changed byte.
 *   corrupt   the answer goes through whole, with the byte at floor(length / 2) of its body
 *             inverted (a server or cache that serves bad content).
 * truncate and corrupt act on GET answers with a body of at least 2 bytes; when the Nth request is
 * not one, the next one that is gets the fault instead. Faults rotate through `faults` in order.
 * With `match`, only the requests it accepts are counted and faulted; the rest pass untouched.
 * The Host header is passed on unchanged so the registry builds upload Locations that point back
 * at this proxy.
 */
import * as http from 'node:http';
import * as net from 'node:net';

export type Fault = 'reset' | '500' | 'truncate' | 'corrupt';

export interface FaultProxyOptions {
  every: number;
  faults: Fault[];
  /** Which requests count and may be faulted (default all). */
  match?: (method: string, path: string) => boolean;
}

export interface FaultProxy {
  url: string;
  host: string;
  /** How many faults of each kind were injected. */
  injected: Record<Fault, number>;
  /** Requests seen in total. */
  total(): number;
  close(): Promise<void>;
}

export async function startFaultProxy(targetUrl: string, opts: FaultProxyOptions): Promise<FaultProxy> {
  const target = new URL(targetUrl);
  const injected: Record<Fault, number> = { reset: 0, '500': 0, truncate: 0, corrupt: 0 };
  let count = 0;
  let matched = 0;
  let faultIndex = 0;
  let bodyFaultPending: 'truncate' | 'corrupt' | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

  const server = http.createServer((req, res) => {
    count++;
    const eligible = opts.match?.(req.method ?? '', req.url ?? '') ?? true;
    if (eligible) matched++;
    const fault = eligible && matched % opts.every === 0 ? opts.faults[faultIndex++ % opts.faults.length] : undefined;
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
      if (fault === 'truncate' || fault === 'corrupt') bodyFaultPending = fault;
      const bodyFault = eligible && req.method === 'GET' && len >= 2 ? bodyFaultPending : undefined;
      res.writeHead(upRes.statusCode ?? 502, upRes.rawHeaders);
      if (!bodyFault) {
        upRes.pipe(res);
        return;
      }
      bodyFaultPending = undefined;
      injected[bodyFault]++;
      const at = Math.floor(len / 2);
      let seen = 0;
      if (bodyFault === 'truncate') {
        upRes.on('data', (c: Buffer) => {
          if (seen >= at) return;
          // The chunk that crosses the cut gives only its head; nothing after the cut is sent.
          const part = c.subarray(0, at - seen);
          seen += part.length;
          res.write(part);
          if (seen === at) {
            upRes.destroy();
            // Let the written half leave before the reset.
            setTimeout(() => res.socket?.resetAndDestroy(), 20);
          }
        });
        return;
      }
      upRes.on('data', (c: Buffer) => {
        let out = c;
        if (at >= seen && at < seen + c.length) {
          out = Buffer.from(c);
          out[at - seen] ^= 0xff;
        }
        seen += c.length;
        res.write(out);
      });
      upRes.on('end', () => res.end());
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
