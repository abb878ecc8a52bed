/**
 * A small client for nydusd's HTTP API on its unix socket. Used by nydusctl, the snapshotter's
 * daemon manager and the tests.
 *
 * Contract: `request` resolves with the status and the parsed JSON body (or the raw text when the
 * body is not JSON, e.g. `/metrics`); it rejects only on transport errors (no daemon, socket gone).
 * `call` additionally turns a non-2xx answer into an Error carrying the daemon's `{code, message}`.
 */
import * as http from 'node:http';

export interface ApiAnswer {
  status: number;
  body: unknown;
  text: string;
}

export class ApiError extends Error {
  constructor(
    public readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export class NydusdClient {
  constructor(
    public readonly socketPath: string,
    private readonly timeoutMs = 30_000,
  ) {}

  request(method: string, path: string, body?: unknown): Promise<ApiAnswer> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socketPath,
          // A fresh connection per request: a kept-alive socket the daemon closed while this
          // process was busy fails the next request with EPIPE, and unix connects are cheap.
          agent: false,
          method,
          path,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
          timeout: this.timeoutMs,
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(parts).toString('utf8');
            let parsed: unknown = text;
            if (text.length > 0 && /json/.test(String(res.headers['content-type'] ?? ''))) {
              try {
                parsed = JSON.parse(text);
              } catch {
                parsed = text;
              }
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, text });
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${this.socketPath}: ${method} ${path} timed out`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const a = await this.request(method, path, body);
    if (a.status < 200 || a.status >= 300) {
      const b = a.body as { code?: string; message?: string } | string;
      const msg = typeof b === 'object' && b && b.message ? `${b.code ?? 'Error'}: ${b.message}` : String(a.text || a.status);
      throw new ApiError(a.status, `${method} ${path}: ${msg}`);
    }
    return a.body as T;
  }

  daemonInfo(): Promise<DaemonInfo> {
    return this.call<DaemonInfo>('GET', '/api/v1/daemon');
  }

  mount(mountpoint: string, source: string, config: unknown, prefetchFiles?: string[]): Promise<unknown> {
    const body: Record<string, unknown> = {
      source,
      fs_type: 'rafs',
      config: typeof config === 'string' ? config : JSON.stringify(config),
    };
    if (prefetchFiles) body.prefetch_files = prefetchFiles;
    return this.call('POST', `/api/v1/mount?mountpoint=${encodeURIComponent(mountpoint)}`, body);
  }

  umount(mountpoint: string): Promise<unknown> {
    return this.call('DELETE', `/api/v1/mount?mountpoint=${encodeURIComponent(mountpoint)}`);
  }
}

/** The shape of `GET /api/v1/daemon`. */
export interface DaemonInfo {
  id: string;
  version: { package_ver: string; git_commit: string; build_time: string; profile: string; rustc: string };
  state: 'INIT' | 'READY' | 'RUNNING' | 'STOPPED';
  supervisor?: string;
  backend_collection: Record<string, { mountpoint: string; fs_type: string; mounted_time: string; bootstrap: string; prefetch: boolean; fs_driver?: 'fusedev' | 'erofs' }>;
  /** Present once an instance runs in kernel EROFS mode. */
  blob_view?: { dir: string; blobs: string[]; reads: number; read_bytes: number; read_errors: number };
}
