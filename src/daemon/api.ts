/**
 * nydusd's HTTP API server on a unix socket. A tiny router: exact method + path, handlers get the
 * parsed query and JSON body and return a value (sent as JSON with 200), `undefined` (204), or a
 * `RawAnswer` (e.g. Prometheus text). A thrown `ApiFault` becomes `{code, message}` with its
 * status; any other error is a 500 with the message (never a stack trace).
 *
 * Other modules add routes with `addRoute` (e.g. the mirror module's `PUT /api/v1/daemon/mirrors`).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import { logger } from '../util/log';

const log = logger('api');

export interface ApiRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
}

export interface RawAnswer {
  raw: string | Buffer;
  contentType: string;
  status?: number;
}

export type ApiHandler = (req: ApiRequest) => unknown | Promise<unknown>;

export class ApiFault extends Error {
  constructor(
    public readonly status: number,
    public readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

const MAX_BODY = 4 << 20;

/** True when something answers on the unix socket at `p`. */
export function socketAlive(p: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(p);
    const done = (v: boolean) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(timeoutMs, () => done(false));
    s.on('connect', () => done(true));
    s.on('error', () => done(false));
  });
}

export class ApiServer {
  private readonly routes = new Map<string, ApiHandler>();
  private server?: http.Server;

  addRoute(method: string, path: string, handler: ApiHandler): void {
    this.routes.set(`${method.toUpperCase()} ${path}`, handler);
  }

  /** Listens on `socketPath`; a stale socket file from a dead daemon is removed, a live one is an error. */
  async listen(socketPath: string): Promise<void> {
    if (fs.existsSync(socketPath)) {
      if (await socketAlive(socketPath)) throw new Error(`${socketPath}: another daemon is listening on this API socket`);
      fs.rmSync(socketPath, { force: true });
    }
    const server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => resolve());
    });
    this.server = server;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://nydusd');
    const method = (req.method ?? 'GET').toUpperCase();
    const send = (status: number, body: string | Buffer, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    try {
      const handler = this.routes.get(`${method} ${url.pathname}`);
      if (!handler) {
        const known = [...this.routes.keys()].some((k) => k.endsWith(` ${url.pathname}`));
        throw new ApiFault(known ? 405 : 404, known ? 'MethodNotAllowed' : 'NotFound', `${method} ${url.pathname}: ${known ? 'method not allowed' : 'no such endpoint'}`);
      }
      const body = await readBody(req);
      const out = await handler({ method, path: url.pathname, query: url.searchParams, body });
      if (out === undefined) {
        res.writeHead(204);
        res.end();
      } else if (typeof out === 'object' && out !== null && 'raw' in out && 'contentType' in out) {
        const r = out as RawAnswer;
        send(r.status ?? 200, r.raw, r.contentType);
      } else {
        send(200, JSON.stringify(out));
      }
    } catch (e) {
      const f = e instanceof ApiFault ? e : new ApiFault(500, 'InternalError', (e as Error).message);
      if (f.status >= 500) log.warn({ method, path: url.pathname, err: f.message }, 'API request failed');
      send(f.status, JSON.stringify({ code: f.code, message: f.message }));
    }
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

async function readBody(req: http.IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const d of req) {
    size += (d as Buffer).length;
    if (size > MAX_BODY) throw new ApiFault(413, 'PayloadTooLarge', `request body over ${MAX_BODY} bytes`);
    parts.push(d as Buffer);
  }
  if (size === 0) return undefined;
  const text = Buffer.concat(parts).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiFault(400, 'InvalidBody', `request body is not JSON: ${(e as Error).message}`);
  }
}
