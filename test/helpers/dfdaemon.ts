/**
 * A small stand-in for Dragonfly's dfdaemon (which is not packaged here), following the parts of its
 * protocol nydusd relies on (see docs/mirrors.md, "What the dfdaemon stand-in covers"):
 *  - registry-mirror mode: an origin-form request (`GET /v2/...`) goes to the upstream named by the
 *    `X-Dragonfly-Registry` header, else the `ns=` query parameter, else `defaultRegistry`;
 *  - proxy mode: an absolute-form request (`GET http://registry/v2/...`) goes to that URL;
 *  - `Range`, `Authorization` and the other end-to-end headers pass through; `Host` is the upstream's;
 *  - a health server answering `GET /server/ping` (Go dfdaemon) and `GET /healthy` (Rust) with 200;
 *  - errors carry `X-Dragonfly-Error-Type`; CONNECT is refused (no MITM here).
 * Test controls: a request log, a failing ping, stop/start on the same port, and faults on blob
 * answers (truncated body, 5xx, corrupted bytes).
 */
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';

export type DfFault = 'none' | 'truncate' | '5xx' | 'corrupt';

export interface DfRequest {
  mode: 'mirror' | 'proxy';
  method: string;
  /** The upstream URL the request was sent to. */
  upstream: string;
  range?: string;
  /** The X-Dragonfly-Registry header, if sent. */
  registryHeader?: string;
  authorized: boolean;
  status: number;
}

export interface Dfdaemon {
  /** `http://127.0.0.1:PORT`: the mirror / proxy port (dfdaemon's 65001 or 4001). */
  url: string;
  port: number;
  /** Go-style health URL (`/server/ping` on the health port). */
  pingUrl: string;
  /** Rust-style health URL (`/healthy`). */
  healthyUrl: string;
  requests(): DfRequest[];
  /** Requests received so far, counted on arrival (before any hold). */
  arrivals(): number;
  clearRequests(): void;
  setPingHealthy(ok: boolean): void;
  setFault(f: DfFault): void;
  /** Hold blob answers this long before relaying them (to kill the daemon mid-transfer). */
  setDelayMs(ms: number): void;
  /** Close the proxy port (refusing connections), keeping the health port. */
  stop(): Promise<void>;
  /** Listen again on the same port. */
  start(): Promise<void>;
  close(): Promise<void>;
}

const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host']);

function listen(server: net.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) return resolve();
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

export async function startDfdaemon(opts: { defaultRegistry?: string } = {}): Promise<Dfdaemon> {
  const records: DfRequest[] = [];
  let fault: DfFault = 'none';
  let pingOk = true;
  let delayMs = 0;
  let arrived = 0;
  const agent = new http.Agent({ keepAlive: true });

  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    arrived++;
    if (delayMs > 0 && /\/blobs\/sha256:/.test(req.url ?? '')) {
      const ms = delayMs;
      // a request cut while held (stop()) is not relayed
      setTimeout(() => !req.socket.destroyed && relay(req, res), ms);
      return;
    }
    relay(req, res);
  };

  const relay = (req: http.IncomingMessage, res: http.ServerResponse) => {
    const raw = req.url ?? '/';
    const isProxy = /^https?:\/\//i.test(raw);
    let upstream: URL;
    if (isProxy) upstream = new URL(raw);
    else {
      const origin = new URL(raw, 'http://placeholder');
      const reg = (req.headers['x-dragonfly-registry'] as string | undefined) ?? origin.searchParams.get('ns') ?? opts.defaultRegistry;
      if (!reg) {
        res.writeHead(400, { 'x-dragonfly-error-type': 'proxy' });
        res.end('no upstream registry: send X-Dragonfly-Registry or ns=');
        return;
      }
      const base = /^https?:\/\//.test(reg) ? reg : `https://${reg}`;
      upstream = new URL(origin.pathname + origin.search, base);
    }
    const rec: DfRequest = {
      mode: isProxy ? 'proxy' : 'mirror',
      method: req.method ?? '',
      upstream: upstream.toString(),
      range: req.headers.range,
      registryHeader: req.headers['x-dragonfly-registry'] as string | undefined,
      authorized: req.headers.authorization !== undefined,
      status: 0,
    };
    records.push(rec);
    const isBlob = /\/blobs\/sha256:/.test(upstream.pathname) && req.method === 'GET';
    if (isBlob && fault === '5xx') {
      rec.status = 500;
      res.writeHead(500, { 'x-dragonfly-error-type': 'backend' });
      res.end('injected failure');
      return;
    }
    const headers: http.OutgoingHttpHeaders = {};
    for (const [k, v] of Object.entries(req.headers)) if (!HOP.has(k) && !k.startsWith('x-dragonfly-')) headers[k] = v;
    headers.host = upstream.host;
    const mod = upstream.protocol === 'https:' ? https : http;
    const up = mod.request(upstream, { method: req.method, headers, agent: upstream.protocol === 'https:' ? undefined : agent }, (upRes) => {
      rec.status = upRes.statusCode ?? 0;
      const out: http.OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(upRes.headers)) if (!HOP.has(k)) out[k] = v;
      const ok = isBlob && (rec.status === 200 || rec.status === 206);
      if (ok && fault === 'truncate') {
        // Promise the full length, send half, then cut the connection.
        const chunks: Buffer[] = [];
        upRes.on('data', (c: Buffer) => chunks.push(c));
        upRes.on('end', () => {
          const body = Buffer.concat(chunks);
          res.writeHead(rec.status, { ...out, 'content-length': String(body.length) });
          res.write(body.subarray(0, Math.floor(body.length / 2)));
          setImmediate(() => res.socket?.destroy());
        });
        return;
      }
      if (ok && fault === 'corrupt') {
        const chunks: Buffer[] = [];
        upRes.on('data', (c: Buffer) => chunks.push(c));
        upRes.on('end', () => {
          const body = Buffer.concat(chunks);
          for (let i = 0; i < body.length; i += 97) body[i] ^= 0xff;
          res.writeHead(rec.status, { ...out, 'content-length': String(body.length) });
          res.end(body);
        });
        return;
      }
      res.writeHead(rec.status, out);
      upRes.pipe(res);
    });
    up.on('error', (e) => {
      rec.status = 502;
      if (!res.headersSent) res.writeHead(502, { 'x-dragonfly-error-type': 'backend' });
      res.end(String(e));
    });
    req.pipe(up);
  };

  const proxyServer = http.createServer(handler);
  // A forward proxy sees only CONNECT for https unless it MITMs; the stand-in does not.
  proxyServer.on('connect', (req: http.IncomingMessage, socket: net.Socket) => {
    socket.end('HTTP/1.1 405 Method Not Allowed\r\nX-Dragonfly-Error-Type: proxy\r\n\r\n');
  });
  const port = await listen(proxyServer, 0);

  const healthServer = http.createServer((req, res) => {
    const p = (req.url ?? '').split('?')[0];
    if ((p === '/server/ping' || p === '/healthy') && req.method === 'GET') {
      res.writeHead(pingOk ? 200 : 503);
      res.end();
      return;
    }
    res.writeHead(404);
    res.end();
  });
  const healthPort = await listen(healthServer, 0);

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    pingUrl: `http://127.0.0.1:${healthPort}/server/ping`,
    healthyUrl: `http://127.0.0.1:${healthPort}/healthy`,
    requests: () => records.slice(),
    arrivals: () => arrived,
    clearRequests: () => {
      records.length = 0;
    },
    setPingHealthy: (ok) => {
      pingOk = ok;
    },
    setFault: (f) => {
      fault = f;
    },
    setDelayMs: (ms) => {
      delayMs = ms;
    },
    stop: () => closeServer(proxyServer),
    start: async () => {
      if (!proxyServer.listening) await listen(proxyServer, port);
    },
    close: async () => {
      await closeServer(proxyServer);
      await closeServer(healthServer);
      agent.destroy();
    },
  };
}
