/**
 * HTTP for the registry client: one undici Agent per client (connection reuse, a bound on
 * connections per origin), TLS options, a timeout on every request, and a retry loop with
 * exponential backoff.
 *
 * Retry defaults (compare undici's interceptor/retry.js):
 *   statuses   429, 500, 502, 503, 504 (429 honours Retry-After up to 10 s)
 *   errors     ECONNRESET, ECONNREFUSED, EPIPE, ETIMEDOUT, ENOTFOUND-free socket and timeout errors of undici
 *   backoff    250 ms * 2^attempt, capped at 4 s, plus up to 25 % jitter
 *   attempts   1 + retryLimit (default retryLimit 5); aborts are never retried
 */
import * as fs from 'node:fs';
import { rootCertificates } from 'node:tls';
import type { Dispatcher } from 'undici';
import { Agent, request } from '../util/http-agent';
import { RegistryError } from './errors';

export interface TransportOptions {
  /** Plain HTTP (insecure registries). */
  insecure?: boolean;
  /** Accept any TLS certificate. */
  skipVerify?: boolean;
  /** PEM text or a file path: extra CA, client certificate and key. */
  ca?: string;
  cert?: string;
  key?: string;
  /** Per request: connect, headers and body-inactivity timeout. Default 30 s. */
  timeoutMs?: number;
  retryLimit?: number;
  userAgent?: string;
  /** Connections per origin (bounds concurrency). Default 8. */
  maxConnections?: number;
}

export const RETRY_STATUSES = new Set([429, 500, 502, 503, 504]);
export const RETRY_CODES = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED', 'ERR_SHORT_READ',
]);

function pem(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  return v.includes('-----BEGIN') ? v : fs.readFileSync(v, 'utf8');
}

export interface SendOptions {
  method: Dispatcher.HttpMethod;
  url: string;
  headers?: Record<string, string>;
  body?: Dispatcher.DispatchOptions['body'];
  signal?: AbortSignal;
}

export class Transport {
  readonly scheme: 'http' | 'https';
  readonly timeoutMs: number;
  readonly retryLimit: number;
  private readonly agent: Agent;
  private readonly userAgent: string;

  constructor(opts: TransportOptions = {}) {
    this.scheme = opts.insecure ? 'http' : 'https';
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.retryLimit = opts.retryLimit ?? 5;
    this.userAgent = opts.userAgent ?? 'nydus-ts/0.1';
    const ca = pem(opts.ca);
    this.agent = new Agent({
      connections: opts.maxConnections ?? 8,
      keepAliveTimeout: 30_000,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
      connect: {
        timeout: this.timeoutMs,
        rejectUnauthorized: !opts.skipVerify,
        // An extra CA adds to the system roots rather than replacing them.
        ca: ca ? [...rootCertificates, ca] : undefined,
        cert: pem(opts.cert),
        key: pem(opts.key),
      },
    });
  }

  /** One attempt, no redirects followed, no retry. */
  send(o: SendOptions): Promise<Dispatcher.ResponseData> {
    return request(o.url, {
      dispatcher: this.agent,
      method: o.method,
      headers: { 'user-agent': this.userAgent, ...o.headers },
      body: o.body,
      signal: o.signal,
      headersTimeout: this.timeoutMs,
      bodyTimeout: this.timeoutMs,
    });
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

/** Whether a failed attempt is worth another one. */
export function isRetryable(e: unknown): boolean {
  if (e instanceof RegistryError) return e.status === 0 ? RETRY_CODES.has(e.code ?? '') : RETRY_STATUSES.has(e.status);
  const code = (e as { code?: string })?.code;
  return code !== undefined && RETRY_CODES.has(code);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(t); reject(signal!.reason); };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export function backoffMs(attempt: number, retryAfterMs?: number): number {
  if (retryAfterMs !== undefined) return Math.min(retryAfterMs, 10_000);
  const base = Math.min(250 * 2 ** attempt, 4000);
  return base + Math.floor(Math.random() * base * 0.25);
}

/** Runs `op` until it succeeds, fails for good, or `retryLimit` retries are spent. */
export async function withRetry<T>(
  op: (attempt: number) => Promise<T>,
  opts: { retryLimit: number; signal?: AbortSignal; onRetry?: (e: unknown, attempt: number) => void; retryable?: (e: unknown) => boolean },
): Promise<T> {
  const retryable = opts.retryable ?? isRetryable;
  for (let attempt = 0; ; attempt++) {
    try {
      return await op(attempt);
    } catch (e) {
      if (opts.signal?.aborted || attempt >= opts.retryLimit || !retryable(e)) throw e;
      opts.onRetry?.(e, attempt);
      await sleep(backoffMs(attempt, (e as { retryAfterMs?: number }).retryAfterMs), opts.signal);
    }
  }
}

/** Retry-After in ms (seconds or an HTTP date), or undefined. */
export function retryAfter(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (!v) return undefined;
  const s = Number(v);
  if (Number.isFinite(s)) return Math.max(0, s * 1000);
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - Date.now());
}

export function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * Copies bytes [skip, skip + length) of a response body into a new buffer and destroys the body.
 * `skip` is 0 for a 206 and the range's offset for a 200 (a server that ignored Range sends the
 * whole object). Resolves with the buffer and how many bytes arrived (fewer than `length` when
 * the body ended early); rejects with the body's own error when the stream fails.
 */
export async function readRangeBody(body: AsyncIterable<Buffer> & { destroy(): void }, skip: number, length: number): Promise<{ out: Buffer; got: number }> {
  const out = Buffer.allocUnsafe(length);
  let got = 0;
  let seen = 0;
  try {
    for await (const c of body) {
      const start = Math.max(0, skip - seen);
      seen += c.length;
      if (start >= c.length) continue;
      const n = Math.min(c.length - start, length - got);
      c.copy(out, got, start, start + n);
      got += n;
      if (got === length) break;
    }
  } finally {
    body.destroy();
  }
  return { out, got };
}
