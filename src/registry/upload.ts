/**
 * Blob uploads (distribution spec "pushing blobs"):
 *  - monolithic: POST a session, PUT the whole body with ?digest=. From a file path the whole
 *    upload is retried; from a stream only the session start is (a stream cannot be replayed);
 *  - chunked (size above `chunkSize`): PATCH chunks with Content-Range, then PUT ?digest=. A failed
 *    PATCH asks the session how far it got (GET → Range: 0-N) and resends or moves on, so one reset
 *    does not restart the whole blob.
 */
import * as fs from 'node:fs';
import { Readable } from 'node:stream';
import type { RegistryClient } from './client';
import { RegistryError } from './errors';
import { backoffMs, header, isRetryable, withRetry } from './transport';

export type PushSource = string | Readable;

export interface PushOptions {
  /** Upload in chunks of this size when the blob is larger. Default 32 MiB. */
  chunkSize?: number;
}

const DEFAULT_CHUNK = 32 << 20;

/** Reads a Readable in exact-size pieces. */
class ExactReader {
  private readonly it: AsyncIterator<Buffer>;
  private rest: Buffer = Buffer.alloc(0);
  constructor(stream: Readable) {
    this.it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }
  async read(n: number): Promise<Buffer> {
    const parts = [this.rest];
    let have = this.rest.length;
    while (have < n) {
      const r = await this.it.next();
      if (r.done) throw new Error(`source ended after ${have} of ${n} bytes of a chunk`);
      parts.push(r.value);
      have += r.value.length;
    }
    const all = Buffer.concat(parts);
    this.rest = all.subarray(n);
    return all.subarray(0, n);
  }
}

async function readFileRange(fh: fs.promises.FileHandle, offset: number, n: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await fh.read(buf, got, n - got, offset + got);
    if (bytesRead <= 0) throw new Error(`file ended at ${offset + got} while reading a ${n}-byte chunk`);
    got += bytesRead;
  }
  return buf;
}

function withDigest(location: string, digest: string): string {
  const u = new URL(location);
  u.searchParams.set('digest', digest);
  return u.toString();
}

async function startUpload(client: RegistryClient, repo: string, digest: string, retry: boolean): Promise<string> {
  const spec = { repo, actions: ['pull', 'push'], op: `start upload of ${digest}`, method: 'POST' as const, path: `/v2/${repo}/blobs/uploads/`, ok: [202] };
  const res = retry ? await client.call(spec) : await client.attempt(spec);
  await res.body.dump();
  const loc = header(res.headers, 'location');
  if (!loc) throw new RegistryError(client.registry, repo, spec.op, 202, 'no Location for the upload session');
  return new URL(loc, client.baseUrl).toString();
}

export async function pushBlob(client: RegistryClient, repo: string, digest: string, source: PushSource, size: number, opts: PushOptions = {}): Promise<void> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK;
  if (size <= chunkSize) return pushMonolithic(client, repo, digest, source, size);
  return pushChunked(client, repo, digest, source, size, chunkSize);
}

async function pushMonolithic(client: RegistryClient, repo: string, digest: string, source: PushSource, size: number): Promise<void> {
  const op = `PUT blob ${digest}`;
  const once = async (retryStart: boolean) => {
    const loc = await startUpload(client, repo, digest, retryStart);
    const res = await client.attempt({
      repo, actions: ['pull', 'push'], op, method: 'PUT', path: withDigest(loc, digest),
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
      body: () => (typeof source === 'string' ? fs.createReadStream(source) : source), ok: [201, 204],
    });
    await res.body.dump();
  };
  if (typeof source !== 'string') return once(true);
  await withRetry(() => once(false), { retryLimit: client.transport.retryLimit, onRetry: (e, n) => client.logRetry({ op, repo }, e, n) });
}

/**
 * How many bytes the upload session holds (Range: 0-N), and its current location. distribution
 * answers "0-0" both for an empty session and for one byte; `expect` (what we believe it holds)
 * breaks the tie toward the empty session when we expect nothing.
 */
async function uploadStatus(client: RegistryClient, repo: string, loc: string, expect: number): Promise<{ received: number; location: string }> {
  const res = await client.call({ repo, actions: ['pull', 'push'], op: 'upload status', method: 'GET', path: loc, ok: [204] });
  await res.body.dump();
  const range = header(res.headers, 'range');
  const m = range ? /^(?:bytes=)?0-(-?\d+)$/.exec(range) : null;
  const end = m ? Number(m[1]) : -1;
  const received = end < 0 || (end === 0 && expect === 0) ? 0 : end + 1;
  const next = header(res.headers, 'location');
  return { received, location: next ? new URL(next, client.baseUrl).toString() : loc };
}

async function pushChunked(client: RegistryClient, repo: string, digest: string, source: PushSource, size: number, chunkSize: number): Promise<void> {
  let loc = await startUpload(client, repo, digest, true);
  const fd = typeof source === 'string' ? await fs.promises.open(source, 'r') : undefined;
  const reader = typeof source === 'string' ? undefined : new ExactReader(source);
  try {
    for (let offset = 0; offset < size; ) {
      const n = Math.min(chunkSize, size - offset);
      const chunk = fd ? await readFileRange(fd, offset, n) : await reader!.read(n);
      // `at` is how much of this chunk the session holds; a failed PATCH may have stored a part.
      for (let at = 0, attempt = 0; at < n; attempt++) {
        const from = offset + at;
        const op = `PATCH blob ${digest} bytes ${from}-${offset + n - 1}`;
        try {
          const part = chunk.subarray(at);
          const res = await client.attempt({
            repo, actions: ['pull', 'push'], op, method: 'PATCH', path: loc,
            headers: { 'content-type': 'application/octet-stream', 'content-range': `${from}-${offset + n - 1}`, 'content-length': String(part.length) },
            body: () => part, ok: [202],
          });
          await res.body.dump();
          const next = header(res.headers, 'location');
          if (next) loc = new URL(next, client.baseUrl).toString();
          at = n;
        } catch (e) {
          if (!isRetryable(e) || attempt >= client.transport.retryLimit) throw e;
          client.logRetry({ op, repo }, e, attempt);
          await new Promise((r) => setTimeout(r, backoffMs(attempt)));
          const st = await uploadStatus(client, repo, loc, from);
          loc = st.location;
          if (st.received < offset || st.received > offset + n) throw new RegistryError(client.registry, repo, op, 0, `upload session holds ${st.received} bytes, expected ${offset} to ${offset + n}`);
          at = st.received - offset;
        }
      }
      offset += n;
    }
  } finally {
    await fd?.close();
  }
  const op = `PUT blob ${digest}`;
  await withRetry(async () => {
    try {
      const res = await client.attempt({ repo, actions: ['pull', 'push'], op, method: 'PUT', path: withDigest(loc, digest), headers: { 'content-length': '0' }, ok: [201, 204] });
      await res.body.dump();
    } catch (e) {
      // The commit may have landed with its answer lost: then the blob exists and we are done.
      if (isRetryable(e) && (await client.hasBlob(repo, digest).catch(() => false))) return;
      throw e;
    }
  }, { retryLimit: client.transport.retryLimit, onRetry: (e, n) => client.logRetry({ op, repo }, e, n) });
}
