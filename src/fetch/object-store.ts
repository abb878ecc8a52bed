/**
 * A bucket of S3 or Aliyun OSS, as nydusd's object-storage backends and nydusify's blob upload use
 * it: object `<object_prefix><blob id>`, ranged GETs, HEAD for existence and size, single PUT.
 *
 * Contract:
 *  - `getRange` resolves with exactly `length` bytes at `offset` of the object or rejects with an
 *    `ObjectStoreError` naming the bucket, the object and what was wrong (HTTP status and the
 *    service's error code, e.g. `403 SignatureDoesNotMatch`, `404 NoSuchBucket`, `416` for an object
 *    shorter than asked). 5xx, 429, resets and short bodies are retried `retryLimit` times with
 *    backoff; 4xx are not. Aborts via `signal` are never retried.
 *  - Credentials go only into the signature headers of requests to the configured endpoint; no
 *    error message, log line or URL carries them.
 */
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { Transport, withRetry, RETRY_CODES, RETRY_STATUSES, retryAfter, header, readRangeBody } from '../registry/transport';
import { logger } from '../util/log';
import { s3Dialect } from './s3';
import { ossDialect } from './oss';

const log = logger('object-store');

/** nydusd's `s3` / `oss` backend config (upstream's keys, api/src/config.rs S3Config / OssConfig). */
export interface ObjectStoreConfig {
  kind: 's3' | 'oss';
  scheme: 'http' | 'https';
  endpoint: string;
  /** S3 only (SigV4 scope). */
  region: string;
  bucketName: string;
  objectPrefix: string;
  /** Never logged. */
  accessKeyId?: string;
  accessKeySecret?: string;
  skipVerify: boolean;
  caCertFiles?: string[];
  /** Seconds. */
  timeout: number;
  connectTimeout: number;
  retryLimit: number;
}

/** Addressing and signing of one service. */
export interface BucketDialect {
  url(key: string): URL;
  /** The headers to send: `headers` plus the signature ones. `payloadSha256`: hex sha256 of the body. */
  sign(method: string, url: URL, headers: Record<string, string>, payloadSha256?: string): Record<string, string>;
}

export class ObjectStoreError extends Error {
  constructor(
    readonly where: string,
    readonly op: string,
    /** HTTP status, 0 for a transport failure. */
    readonly status: number,
    detail: string,
    readonly code?: string,
    readonly retryAfterMs?: number,
  ) {
    super(`${where}: ${op}: ${status ? `HTTP ${status}` : 'network error'}${detail ? `: ${detail}` : ''}`);
    this.name = 'ObjectStoreError';
  }
}

function retryable(e: unknown): boolean {
  if (e instanceof ObjectStoreError) return e.status === 0 ? RETRY_CODES.has(e.code ?? '') || e.code === undefined : RETRY_STATUSES.has(e.status);
  const code = (e as { code?: string })?.code;
  return code !== undefined && RETRY_CODES.has(code);
}

/** `<Code>` and `<Message>` of an S3/OSS XML error body. */
function describeXmlError(body: string): string {
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const msg = /<Message>([^<]*)<\/Message>/.exec(body)?.[1];
  return [code, msg].filter(Boolean).join(' ') || body.replace(/\s+/g, ' ').trim().slice(0, 160);
}

/** What the status means for a blob read, said once so every caller reports it the same way. */
function hint(status: number): string {
  if (status === 403) return ' (check access_key_id / access_key_secret and the bucket policy)';
  if (status === 416) return ' (the object is shorter than the blob table says)';
  return '';
}

export class ObjectStore {
  readonly dialect: BucketDialect;
  /** `s3 bucket NAME at ENDPOINT`: the prefix of every message. */
  readonly where: string;
  private readonly transport: Transport;

  constructor(readonly cfg: ObjectStoreConfig) {
    this.dialect = cfg.kind === 's3' ? s3Dialect(cfg) : ossDialect(cfg);
    this.where = `${cfg.kind} bucket ${cfg.bucketName} at ${this.dialect.url('').host}`;
    this.transport = new Transport({
      insecure: cfg.scheme === 'http',
      skipVerify: cfg.skipVerify,
      ca: cfg.caCertFiles?.length ? cfg.caCertFiles.map((f) => fs.readFileSync(f, 'utf8')).join('\n') : undefined,
      timeoutMs: Math.max(cfg.timeout, cfg.connectTimeout, 1) * 1000,
      retryLimit: cfg.retryLimit,
    });
  }

  key(blobId: string): string {
    return this.cfg.objectPrefix + blobId;
  }

  private async send(method: 'GET' | 'HEAD' | 'PUT', key: string, op: string, headers: Record<string, string>, signal?: AbortSignal, body?: Readable, payloadSha256?: string) {
    const url = this.dialect.url(key);
    try {
      return await this.transport.send({ method, url: url.href, headers: this.dialect.sign(method, url, headers, payloadSha256), body, signal });
    } catch (e) {
      const err = e as { name?: string; code?: string; message?: string };
      if (err.name === 'AbortError' || signal?.aborted) throw e;
      throw new ObjectStoreError(this.where, op, 0, err.message ?? String(e), err.code);
    }
  }

  private async fail(res: { statusCode: number; headers: Record<string, string | string[] | undefined>; body: { text(): Promise<string> } }, op: string): Promise<never> {
    const text = await res.body.text().catch(() => '');
    throw new ObjectStoreError(this.where, op, res.statusCode, describeXmlError(text) + hint(res.statusCode), undefined, retryAfter(header(res.headers, 'retry-after')));
  }

  /** Exactly `length` bytes at `offset` of the object of `blobId`. */
  getRange(blobId: string, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    const key = this.key(blobId);
    const op = `GET ${key} bytes ${offset}-${offset + length - 1}`;
    if (length === 0) return Promise.resolve(Buffer.alloc(0));
    return withRetry(
      async () => {
        const res = await this.send('GET', key, op, { range: `bytes=${offset}-${offset + length - 1}` }, signal);
        if (res.statusCode !== 206 && res.statusCode !== 200) return this.fail(res, op);
        // A 200 is the whole object (the server ignored Range): skip to the offset.
        let r: { out: Buffer; got: number };
        try {
          r = await readRangeBody(res.body, res.statusCode === 200 ? offset : 0, length);
        } catch (e) {
          if (signal?.aborted) throw e;
          const err = e as { code?: string; message?: string };
          throw new ObjectStoreError(this.where, op, 0, err.message ?? String(e), err.code ?? 'ECONNRESET');
        }
        const { out, got: pos } = r;
        if (pos !== length) throw new ObjectStoreError(this.where, op, 0, `short body: ${pos} of ${length} bytes`, 'ERR_SHORT_READ');
        return out;
      },
      { retryLimit: this.cfg.retryLimit, signal, retryable, onRetry: (e, n) => log.warn({ bucket: this.cfg.bucketName, op, attempt: n + 1, err: (e as Error).message }, 'object read failed; retrying') },
    );
  }

  /** The object's size, or undefined when it does not exist. */
  async size(blobId: string): Promise<number | undefined> {
    const key = this.key(blobId);
    const op = `HEAD ${key}`;
    return withRetry(
      async () => {
        const res = await this.send('HEAD', key, op, {});
        await res.body.dump();
        if (res.statusCode === 404) return undefined;
        if (res.statusCode !== 200) throw new ObjectStoreError(this.where, op, res.statusCode, hint(res.statusCode).trim());
        return Number(header(res.headers, 'content-length'));
      },
      { retryLimit: this.cfg.retryLimit, retryable },
    );
  }

  /** Uploads `file` as the object of `blobId` (one PUT; the blob id is the file's sha256, signed as the payload hash). */
  async put(blobId: string, file: string, size: number): Promise<void> {
    const key = this.key(blobId);
    const op = `PUT ${key}`;
    await withRetry(
      async () => {
        const res = await this.send('PUT', key, op, { 'content-length': String(size), 'content-type': 'application/octet-stream' }, undefined, fs.createReadStream(file), this.cfg.kind === 's3' ? blobId : undefined);
        if (res.statusCode !== 200) return this.fail(res, op);
        await res.body.dump();
      },
      { retryLimit: this.cfg.retryLimit, retryable },
    );
  }

  close(): Promise<void> {
    return this.transport.close();
  }
}
