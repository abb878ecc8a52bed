/**
 * An OCI distribution client for one registry: manifests (OCI, Docker schema 2, indexes with a
 * platform choice), blob existence / streaming / ranges with redirects, uploads (upload.ts),
 * cross-repository mounts, and the Authorization header for a scope (reused by the mirror source).
 *
 * Every call is retried on 429, 5xx and connection resets (transport.ts) and re-authenticated once
 * on 401. Errors are RegistryError: they name the registry, the repository, the operation and the
 * HTTP status; credentials never appear in them. Whole blobs and manifests asked for by digest are
 * checked against that digest (content-digest.ts): wrong bytes are an error, never data.
 */
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { Authenticator, repositoryScope } from './auth';
import { DigestCheck, contentDigest } from './content-digest';
import { Credentials, ResolvedCredentials, dockerConfigCredentials, resolveCredentials } from './credentials';
import { RegistryError, describeErrorBody } from './errors';
import { Descriptor, ImageIndex, MANIFEST_ACCEPT, isIndex } from './media';
import { DEFAULT_PLATFORM, choosePlatform, formatPlatform, parsePlatform } from './platform';
import { apiHost } from './reference';
import { Transport, TransportOptions, header, isRetryable, readRangeBody, retryAfter, withRetry } from './transport';
import { pushBlob, PushSource, PushOptions } from './upload';
import { logger } from '../util/log';

const log = logger('registry');

export interface RegistryClientOptions extends TransportOptions {
  /** host[:port]; docker.io means Docker Hub. */
  registry: string;
  /** Explicit credentials; when absent, ~/.docker/config.json is consulted. */
  credentials?: Credentials;
  /** Do not read the docker config file (explicit or no credentials only). */
  noDockerConfig?: boolean;
  /**
   * false: no GET /v2/ before the first request to learn the registry's challenge; the first 401
   * teaches it (auth.ts). For a client whose first request goes alone (ctr-remote's manifest).
   */
  probeChallenge?: boolean;
}

export interface Manifest {
  mediaType: string;
  /** sha256 of `body`, as the registry addresses it. */
  digest: string;
  body: Buffer;
  json: any;
}

/** One request as the client sends it. `body` is a factory so a retry gets a fresh stream. */
export interface CallSpec {
  repo: string;
  actions: string[];
  /** Extra scopes (e.g. pull on the source repository of a mount). */
  extraScopes?: string[];
  op: string;
  method: Dispatcher.HttpMethod;
  /** Path under the registry (`/v2/...`) or an absolute URL (upload locations). */
  path: string;
  headers?: Record<string, string>;
  body?: () => Dispatcher.DispatchOptions['body'];
  /** Statuses that count as success; others become RegistryError. */
  ok: number[];
  signal?: AbortSignal;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
const MAX_MANIFEST = 8 << 20;

/** A network failure as a RegistryError; aborts stay what they are (they are never retried). */
function netError(registry: string, repo: string | undefined, op: string, e: unknown): Error {
  if (e instanceof RegistryError) return e;
  const err = e as { message?: string; code?: string; name?: string };
  if (err.name === 'AbortError') return e as Error;
  return new RegistryError(registry, repo, op, 0, err.message ?? String(e), err.code);
}

export class RegistryClient {
  readonly registry: string;
  readonly baseUrl: string;
  readonly transport: Transport;
  private readonly auth: Authenticator;
  private creds?: ResolvedCredentials;
  private closed = false;

  constructor(opts: RegistryClientOptions) {
    this.registry = opts.registry;
    this.transport = new Transport(opts);
    this.baseUrl = `${this.transport.scheme}://${apiHost(opts.registry)}`;
    const creds = opts.credentials ?? (opts.noDockerConfig ? undefined : dockerConfigCredentials(opts.registry));
    this.creds = resolveCredentials(creds);
    this.auth = new Authenticator(this.registry, this.baseUrl, this.transport, this.creds, opts.probeChallenge ?? true);
  }

  /** Replaces the credentials (a rotated password); cached tokens are dropped. */
  setCredentials(c: Credentials | undefined): void {
    this.creds = resolveCredentials(c);
    this.auth.setCredentials(this.creds);
  }

  /**
   * The Authorization header value for `actions` on `repo` (Bearer token from the challenge, cached
   * until it expires, or Basic), or undefined for an open registry.
   */
  authorization(repo: string, actions: string[]): Promise<string | undefined> {
    return this.auth.header([repositoryScope(repo, actions)], repo);
  }

  /** One attempt: authenticate, send, re-authenticate once on 401, map failures to RegistryError. */
  async attempt(c: CallSpec): Promise<Dispatcher.ResponseData> {
    const scopes = [repositoryScope(c.repo, c.actions), ...(c.extraScopes ?? [])];
    const url = c.path.startsWith('http') ? c.path : `${this.baseUrl}${c.path}`;
    const send = async (authz: string | undefined) => {
      const headers = { ...c.headers };
      if (authz) headers.authorization = authz;
      try {
        return await this.transport.send({ method: c.method, url, headers, body: c.body?.(), signal: c.signal });
      } catch (e) {
        throw netError(this.registry, c.repo, c.op, e);
      }
    };
    let res = await send(await this.auth.header(scopes, c.repo));
    if (res.statusCode === 401) {
      await res.body.dump();
      this.auth.reset(scopes, header(res.headers, 'www-authenticate'));
      res = await send(await this.auth.header(scopes, c.repo));
    }
    if (c.ok.includes(res.statusCode)) return res;
    const text = await res.body.text().catch(() => '');
    let detail = describeErrorBody(text);
    if (res.statusCode === 401) detail = `${this.creds ? 'credentials rejected' : 'authentication required (no credentials given)'}${detail ? ` (${detail})` : ''}`;
    if (res.statusCode === 403) detail = `access denied${detail ? ` (${detail})` : ''}`;
    const err = new RegistryError(this.registry, c.repo, c.op, res.statusCode, detail) as RegistryError & { retryAfterMs?: number };
    if (res.statusCode === 429) err.retryAfterMs = retryAfter(res.headers['retry-after']);
    throw err;
  }

  /** `attempt` with retries on 429, 5xx and connection failures. */
  call(c: CallSpec): Promise<Dispatcher.ResponseData> {
    return this.retrying(() => this.attempt(c), c, c.signal);
  }

  /**
   * `fn` with this registry's retry policy, each retry logged. After close() a request still in
   * flight fails because we closed it: that is neither retried nor warned about.
   */
  private retrying<T>(fn: () => Promise<T>, c: { op: string; repo: string }, signal?: AbortSignal): Promise<T> {
    return withRetry(fn, {
      retryLimit: this.transport.retryLimit,
      signal,
      retryable: (e) => !this.closed && isRetryable(e),
      onRetry: (e, n) => this.logRetry(c, e, n),
    });
  }

  logRetry(c: { op: string; repo: string }, e: unknown, n: number): void {
    log.warn({ registry: this.registry, repository: c.repo, op: c.op, attempt: n + 1, err: (e as Error).message }, 'registry request failed, retrying');
  }

  /**
   * The manifest `ref` (tag or digest) of `repo`. An index is resolved to the entry for `platform`
   * (default linux/amd64). A digest reference is verified against the bytes received.
   */
  async getManifest(repo: string, ref: string, opts: { platform?: string } = {}): Promise<Manifest> {
    const m = await this.getManifestRaw(repo, ref);
    if (!isIndex(m.mediaType)) return m;
    const want = parsePlatform(opts.platform ?? DEFAULT_PLATFORM);
    const entry = choosePlatform((m.json as ImageIndex).manifests ?? [], want);
    if (!entry) {
      const have = ((m.json as ImageIndex).manifests ?? []).filter((d) => d.platform).map((d) => formatPlatform(d.platform!));
      throw new RegistryError(this.registry, repo, `GET manifest ${ref}`, 200, `no manifest for platform ${formatPlatform(want)} (index has ${have.join(', ') || 'none'})`);
    }
    const child = await this.getManifestRaw(repo, entry.digest);
    if (isIndex(child.mediaType)) throw new RegistryError(this.registry, repo, `GET manifest ${entry.digest}`, 200, 'nested index is not supported');
    return child;
  }

  /** The manifest or index exactly as stored, without platform resolution. */
  async getManifestRaw(repo: string, ref: string): Promise<Manifest> {
    const op = `GET manifest ${ref}`;
    return this.retrying(async () => {
      const res = await this.attempt({ repo, actions: ['pull'], op, method: 'GET', path: `/v2/${repo}/manifests/${ref}`, headers: { accept: MANIFEST_ACCEPT.join(', ') }, ok: [200] });
      const body = Buffer.from(await res.body.arrayBuffer());
      if (body.length > MAX_MANIFEST) throw new RegistryError(this.registry, repo, op, 200, `manifest larger than ${MAX_MANIFEST} bytes`);
      const bad = ref.includes(':') ? new DigestCheck(ref).update(body).mismatch() : undefined;
      if (bad) throw new RegistryError(this.registry, repo, op, 200, bad);
      const digest = contentDigest(body);
      let json: any;
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        throw new RegistryError(this.registry, repo, op, 200, 'manifest is not JSON');
      }
      const ct = (header(res.headers, 'content-type') ?? '').split(';')[0].trim();
      const mediaType: string = json.mediaType ?? (json.manifests ? 'application/vnd.oci.image.index.v1+json' : ct || 'application/vnd.oci.image.manifest.v1+json');
      return { mediaType, digest, body, json };
    }, { op, repo });
  }

  /** Stores a manifest under `ref` (tag or digest); returns its digest. */
  async putManifest(repo: string, ref: string, mediaType: string, body: Buffer): Promise<string> {
    const res = await this.call({
      repo, actions: ['pull', 'push'], op: `PUT manifest ${ref}`, method: 'PUT', path: `/v2/${repo}/manifests/${ref}`,
      headers: { 'content-type': mediaType }, body: () => body, ok: [200, 201],
    });
    await res.body.dump();
    return contentDigest(body);
  }

  /** Whether `repo` has blob `digest` (HEAD). */
  async hasBlob(repo: string, digest: string): Promise<boolean> {
    return (await this.blobSize(repo, digest)) !== undefined;
  }

  /** The blob's size from a HEAD request, or undefined when `repo` does not have it. */
  async blobSize(repo: string, digest: string): Promise<number | undefined> {
    const res = await this.call({ repo, actions: ['pull'], op: `HEAD blob ${digest}`, method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, ok: [200, 404] });
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    const len = Number(header(res.headers, 'content-length'));
    return Number.isFinite(len) ? len : -1;
  }

  /**
   * GET a blob (optionally from a byte offset), following redirects by hand: the Location is fetched
   * with only the Range header, so credentials never reach object storage.
   */
  private async openBlob(repo: string, digest: string, from: number, length: number | undefined, signal?: AbortSignal): Promise<Dispatcher.ResponseData> {
    const op = `GET blob ${digest}`;
    const range = from > 0 || length !== undefined ? `bytes=${from}-${length !== undefined ? from + length - 1 : ''}` : undefined;
    const headers: Record<string, string> = range ? { range } : {};
    let res = await this.attempt({ repo, actions: ['pull'], op, method: 'GET', path: `/v2/${repo}/blobs/${digest}`, headers, ok: [200, 206, ...REDIRECTS], signal });
    let url = `${this.baseUrl}/v2/${repo}/blobs/${digest}`;
    for (let hop = 0; REDIRECTS.has(res.statusCode); hop++) {
      const loc = header(res.headers, 'location');
      await res.body.dump();
      if (!loc || hop >= MAX_REDIRECTS) throw new RegistryError(this.registry, repo, op, res.statusCode, loc ? 'too many redirects' : 'redirect without Location');
      url = new URL(loc, url).toString();
      try {
        res = await this.transport.send({ method: 'GET', url, headers, signal });
      } catch (e) {
        throw netError(this.registry, repo, `${op} (redirected to ${new URL(url).host})`, e);
      }
      if (!REDIRECTS.has(res.statusCode) && res.statusCode !== 200 && res.statusCode !== 206) {
        const text = await res.body.text().catch(() => '');
        throw new RegistryError(this.registry, repo, `${op} (redirected to ${new URL(url).host})`, res.statusCode, describeErrorBody(text));
      }
    }
    return res;
  }

  /**
   * The whole blob as a stream, verified: its bytes are hashed as they pass, and when they do not
   * match `digest` (or `opts.size`) the stream errors with a RegistryError naming the blob, the
   * expected and the actual digest, instead of ending. The last chunk is held back until the check
   * passes, so no reader ever has the complete blob unverified. A connection that breaks mid-body
   * is resumed with a Range request from the bytes already received (up to retryLimit times).
   */
  async getBlob(repo: string, digest: string, opts: { size?: number } = {}): Promise<Readable> {
    const op = `GET blob ${digest}`;
    const check = new DigestCheck(digest, opts.size);
    const open = (from: number) => this.retrying(() => this.openBlob(repo, digest, from, undefined), { op, repo });
    const first = await open(0);
    const registry = this.registry;
    const client = this;
    async function* chunks(): AsyncGenerator<Buffer> {
      let res = first;
      let received = 0;
      let resumes = 0;
      let held: Buffer | undefined;
      // A server that ignores Range answers 200 from byte 0: skip what was already received.
      let skip = 0;
      let body = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
      try {
        for (;;) {
          // Only the body read is retried; a throw into a yield (the reader gave up) ends the read.
          let step: IteratorResult<Buffer>;
          try {
            step = await body.next();
          } catch (e) {
            res.body.destroy();
            const err = netError(registry, repo, op, e);
            if (!isRetryable(err) || resumes >= client.transport.retryLimit) throw err;
            client.logRetry({ op, repo }, err, resumes++);
            res = await open(received);
            skip = res.statusCode === 200 ? received : 0;
            body = (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
            continue;
          }
          if (step.done) break;
          let chunk = step.value;
          if (skip > 0) {
            const n = Math.min(skip, chunk.length);
            skip -= n;
            chunk = chunk.subarray(n);
            if (!chunk.length) continue;
          }
          received += chunk.length;
          check.update(chunk);
          if (held) yield held;
          held = chunk;
        }
        const bad = check.mismatch();
        if (bad) throw new RegistryError(registry, repo, op, res.statusCode, bad);
        if (held) yield held;
      } finally {
        if (!res.body.readableEnded) res.body.destroy();
      }
    }
    return Readable.from(chunks(), { objectMode: false });
  }

  /** Exactly `length` bytes of the blob from `offset` (Range GET), or an error. */
  async getBlobRange(repo: string, digest: string, offset: number, length: number, opts: { signal?: AbortSignal } = {}): Promise<Buffer> {
    const op = `GET blob ${digest} range ${offset}+${length}`;
    if (length === 0) return Buffer.alloc(0);
    return this.retrying(async () => {
      const res = await this.openBlob(repo, digest, offset, length, opts.signal);
      let r: { out: Buffer; got: number };
      try {
        r = await readRangeBody(res.body, res.statusCode === 200 ? offset : 0, length);
      } catch (e) {
        throw netError(this.registry, repo, op, e);
      }
      const { out, got: pos } = r;
      if (pos !== length) {
        const e = new RegistryError(this.registry, repo, op, 0, `short body: ${pos} of ${length} bytes`, 'ERR_SHORT_READ');
        throw e;
      }
      return out;
    }, { op, repo }, opts.signal);
  }

  /** Uploads a blob (monolithic, or chunked above `opts.chunkSize`); see upload.ts. */
  pushBlob(repo: string, digest: string, source: PushSource, size: number, opts: PushOptions = {}): Promise<void> {
    return pushBlob(this, repo, digest, source, size, opts);
  }

  /** Mounts `digest` from `fromRepo` into `repo` without copying; false when the registry declined. */
  async mountBlob(repo: string, digest: string, fromRepo: string): Promise<boolean> {
    const q = new URLSearchParams({ mount: digest, from: fromRepo });
    const res = await this.call({
      repo, actions: ['pull', 'push'], extraScopes: [repositoryScope(fromRepo, ['pull'])], op: `mount blob ${digest} from ${fromRepo}`,
      method: 'POST', path: `/v2/${repo}/blobs/uploads/?${q}`, ok: [201, 202],
    });
    await res.body.dump();
    if (res.statusCode === 201) return true;
    // 202: the registry opened an upload session instead; cancel it.
    const loc = header(res.headers, 'location');
    if (loc) {
      const url = new URL(loc, this.baseUrl).toString();
      await this.call({ repo, actions: ['pull', 'push'], op: 'cancel upload', method: 'DELETE', path: url, ok: [204, 404] }).then((r) => r.body.dump()).catch(() => undefined);
    }
    return false;
  }

  /** Reads a small blob (a config) fully; verified as getBlob verifies. */
  async getBlobBuffer(repo: string, digest: string, maxBytes = 64 << 20): Promise<Buffer> {
    const stream = await this.getBlob(repo, digest);
    const parts: Buffer[] = [];
    let n = 0;
    for await (const c of stream as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > maxBytes) {
        stream.destroy();
        throw new RegistryError(this.registry, repo, `GET blob ${digest}`, 200, `larger than ${maxBytes} bytes`);
      }
      parts.push(c);
    }
    return Buffer.concat(parts);
  }

  close(): Promise<void> {
    this.closed = true;
    return this.transport.close();
  }
}

export type { Descriptor };
