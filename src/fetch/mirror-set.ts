/**
 * Registry mirrors as chunk sources (pre-v2.3.5 nydusd mirror semantics, Dragonfly mirror mode).
 *
 * Each mirror is its own `ChunkSource` (`mirror:<host>`), so the pipeline tries them in list order
 * before the origin and keeps per-mirror metrics. A read is the origin's blob URL with scheme, host
 * and port swapped for the mirror's (`<mirror>/v2/<repo>/blobs/sha256:<id>`), the mirror's headers
 * (e.g. `X-Dragonfly-Registry`) and `Range`. Rules, as nydusd had them:
 *  - transport error, short body or bytes that fail verification: one failure; `failureLimit` in a
 *    row marks the mirror down (then `SourceUnavailableError` until its ping answers < 500);
 *  - status >= 500: next source, not counted as a failure;
 *  - credentials (docs/registry.md, "Where credentials go"): `authThrough: false` sends no
 *    Authorization at all (a mirror that needs one answers 401 and the read moves on);
 *    `authThrough: true` forwards the origin's Authorization (its Bearer token, or Basic when the
 *    mirror is https or on the registry's own host) and answers the mirror's own 401 challenge
 *    with the origin's credentials only at a realm `mayCarryCredentials` allows;
 *  - redirects are followed with `Range` only.
 * `MirrorSet` holds the live list and swaps it on a config push, keeping the health of unchanged
 * mirrors.
 */
import type { Dispatcher } from 'undici';
import { Agent, request, requestOn } from '../util/http-agent';
import * as fs from 'node:fs';
import type { MirrorConfig } from '../mirrors/types';
import { describeRealm, mayCarryCredentials } from '../registry/auth';
import { logger } from '../util/log';
import { Health, HealthSnapshot, pingStatus } from './health';
import { BlobRange, ChunkSource, ReadContext, SourceUnavailableError } from './source';

const log = logger('mirror');

/** Defaults: per-request deadlines and redirect hops. */
export const MIRROR_HTTP_DEFAULTS = { connectTimeoutMs: 5000, headersTimeoutMs: 10_000, bodyTimeoutMs: 30_000, maxRedirects: 3 };

/** What a mirror (or the proxy) needs to know about the origin registry. */
export interface OriginInfo {
  /** `scheme://host[:port]` of the origin registry. */
  url: string;
  /** Repository, e.g. `library/python`. */
  repo: string;
  /** The Authorization value for pulling `repo` from the origin (token fetched from the origin), if any. */
  authorization(): Promise<string | undefined>;
  /** Base64 `user:pass` of the origin (it may be replaced while running), if configured. */
  basicAuth?: () => string | undefined;
}

/** A failed HTTP exchange; `status` 0 means transport-level (refused, reset, timeout, short body). */
export class HttpRangeError extends Error {
  constructor(
    readonly source: string,
    readonly status: number,
    reason: string,
  ) {
    super(`${source}: ${reason}`);
    this.name = 'HttpRangeError';
  }
}

/** The undici dispatcher for a host with its TLS options (ca, client cert, skip_verify). */
export function makeDispatcher(tls: { skipVerify?: boolean; ca?: string[]; client?: { cert: string; key: string } } = {}): Agent {
  return new Agent({
    connect: {
      timeout: MIRROR_HTTP_DEFAULTS.connectTimeoutMs,
      rejectUnauthorized: !tls.skipVerify,
      ca: tls.ca?.length ? tls.ca.map((f) => fs.readFileSync(f)) : undefined,
      cert: tls.client ? fs.readFileSync(tls.client.cert) : undefined,
      key: tls.client ? fs.readFileSync(tls.client.key) : undefined,
    },
    headersTimeout: MIRROR_HTTP_DEFAULTS.headersTimeoutMs,
    bodyTimeout: MIRROR_HTTP_DEFAULTS.bodyTimeoutMs,
  });
}

/** Collect exactly `range.length` bytes of the answer (206 at `offset`, or 200 of the whole blob). */
async function takeRange(source: string, res: Dispatcher.ResponseData, range: BlobRange): Promise<Buffer> {
  let skip = 0;
  if (res.statusCode === 206) {
    const cr = /^bytes (\d+)-(\d+)\//.exec(String(res.headers['content-range'] ?? ''));
    if (!cr || Number(cr[1]) !== range.offset) {
      await res.body.dump();
      throw new HttpRangeError(source, 0, `answered Content-Range ${JSON.stringify(res.headers['content-range'])} for offset ${range.offset}`);
    }
  } else skip = range.offset; // a mirror that ignored Range sends the whole blob
  const out = Buffer.allocUnsafe(range.length);
  let got = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    let c = chunk;
    if (skip > 0) {
      const s = Math.min(skip, c.length);
      skip -= s;
      c = c.subarray(s);
    }
    const n = Math.min(c.length, range.length - got);
    c.copy(out, got, 0, n);
    got += n;
    if (got === range.length) break;
  }
  res.body.destroy();
  if (got !== range.length) throw new HttpRangeError(source, 0, `short body: ${got} of ${range.length} bytes at offset ${range.offset}`);
  return out;
}

/**
 * GET a byte range and return the bytes, following up to 3 redirects (sending only `Range` to the
 * redirect target, so no credential leaves for object storage). Throws HttpRangeError.
 */
export async function getRange(
  source: string,
  url: string,
  range: BlobRange,
  headers: Record<string, string>,
  dispatcher: Dispatcher,
  signal?: AbortSignal,
  requestPath?: string,
): Promise<Buffer> {
  const rangeHeader = `bytes=${range.offset}-${range.offset + range.length - 1}`;
  let target = url;
  let hdrs: Record<string, string> = { ...headers, range: rangeHeader };
  let path = requestPath;
  for (let hop = 0; hop <= MIRROR_HTTP_DEFAULTS.maxRedirects; hop++) {
    let res: Dispatcher.ResponseData;
    try {
      res = path
        ? await requestOn(dispatcher, { origin: target, path, method: 'GET', headers: hdrs, signal })
        : await request(target, { method: 'GET', headers: hdrs, signal, dispatcher });
    } catch (e) {
      if (signal?.aborted) throw e;
      const err = e as NodeJS.ErrnoException;
      throw new HttpRangeError(source, 0, `${err.code ?? err.name}: ${err.message}`);
    }
    const st = res.statusCode;
    if (st === 200 || st === 206) {
      try {
        return await takeRange(source, res, range);
      } catch (e) {
        if (e instanceof HttpRangeError || signal?.aborted) throw e;
        throw new HttpRangeError(source, 0, `body: ${(e as Error).message}`);
      }
    }
    await res.body.dump().catch(() => undefined);
    const loc = res.headers.location;
    if (st >= 300 && st < 400 && typeof loc === 'string') {
      target = new URL(loc, path ?? target).toString();
      path = undefined;
      hdrs = { range: rangeHeader };
      continue;
    }
    throw new HttpRangeError(source, st, `HTTP ${st} for ${range.blobId.slice(0, 12)} [${range.offset}+${range.length}]`);
  }
  throw new HttpRangeError(source, 0, 'too many redirects');
}

function rangeKey(r: BlobRange): string {
  return `${r.blobId}:${r.offset}:${r.length}`;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`). */
function parseChallenge(h: string): { scheme: string; params: Record<string, string> } | undefined {
  const m = /^\s*(\w+)\s+(.*)$/.exec(h);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2].matchAll(/(\w+)="([^"]*)"/g)) params[p[1]] = p[2];
  return { scheme: m[1].toLowerCase(), params };
}

export class MirrorSource implements ChunkSource {
  readonly name: string;
  readonly health: Health;
  private readonly dispatcher: Agent;
  /** auth_through mirrors only: Authorization obtained from the mirror's own challenge. */
  private mirrorAuth?: string;
  /**
   * The last answer that arrived whole but is not yet known to be right. It resets the failure
   * count only once the next read starts without `rejected()` having named it, so a mirror that
   * always sends wrong bytes still reaches `failureLimit`.
   */
  private unconfirmed?: string;

  constructor(
    readonly config: MirrorConfig,
    private readonly origin: OriginInfo,
  ) {
    this.name = `mirror:${new URL(config.host).host}`;
    this.dispatcher = makeDispatcher(config);
    this.health = new Health({
      name: this.name,
      failureLimit: config.failureLimit,
      intervalMs: config.healthCheckInterval * 1000,
      pauseAfterIdleMs: config.healthCheckPauseElapsed * 1000,
      // nydusd: any answer below 500 means the mirror is back.
      probe: async () => {
        const st = await pingStatus(config.pingUrl, MIRROR_HTTP_DEFAULTS.connectTimeoutMs, this.dispatcher);
        return st > 0 && st < 500;
      },
    });
  }

  /** The blob URL on this mirror: the origin path with the mirror's scheme, host and port. */
  blobUrl(blobId: string): string {
    const root = this.config.overridePath ? '' : '/v2';
    return `${this.config.host}${root}/${this.origin.repo}/blobs/sha256:${blobId}`;
  }

  read(range: BlobRange, ctx: ReadContext = {}): Promise<Buffer> {
    return this.attempt(range, ctx, true);
  }

  private async attempt(range: BlobRange, ctx: ReadContext, mayReauth: boolean): Promise<Buffer> {
    this.health.touch(); // reads keep the probe of a down mirror going
    if (!this.health.up) {
      throw new SourceUnavailableError(this.name, `marked down (${this.health.snapshot().lastError ?? 'failures'}); probing ${this.config.pingUrl}`);
    }
    if (this.unconfirmed !== undefined) {
      this.unconfirmed = undefined;
      this.health.recordSuccess();
    }
    const headers: Record<string, string> = { ...this.config.headers };
    const auth = this.config.authThrough ? (this.mirrorAuth ?? (await this.forwardedAuth())) : undefined;
    if (auth) headers.authorization = auth;
    try {
      const buf = await getRange(this.name, this.blobUrl(range.blobId), range, headers, this.dispatcher, ctx.signal);
      this.unconfirmed = rangeKey(range);
      return buf;
    } catch (e) {
      if (ctx.signal?.aborted || !(e instanceof HttpRangeError)) throw e;
      if (e.status === 401 && mayReauth && this.config.authThrough && (await this.answerChallenge(range, ctx.signal))) {
        return this.attempt(range, ctx, false);
      }
      // 5xx and other statuses: next source without counting (nydusd); transport errors count.
      if (e.status === 0) this.health.recordFailure(e.message);
      throw e;
    }
  }

  /** auth_through: the origin's Authorization, for the mirror to forward; Basic only where allowed. */
  private async forwardedAuth(): Promise<string | undefined> {
    const a = await this.origin.authorization();
    if (a && /^basic /i.test(a) && !mayCarryCredentials(new URL(this.config.host), this.origin.url)) return undefined;
    return a;
  }

  /** auth_through: fetch a token from the realm the mirror names. Returns true when auth changed. */
  private async answerChallenge(range: BlobRange, signal?: AbortSignal): Promise<boolean> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.blobUrl(range.blobId), { method: 'HEAD', dispatcher: this.dispatcher, signal });
      await res.body.dump();
    } catch {
      return false;
    }
    const ch = parseChallenge(String(res.headers['www-authenticate'] ?? ''));
    if (!ch) return false;
    let next: string | undefined;
    const basic = this.origin.basicAuth?.();
    if (ch.scheme === 'basic' && basic && mayCarryCredentials(new URL(this.config.host), this.origin.url)) next = `Basic ${basic}`;
    if (ch.scheme === 'bearer' && ch.params.realm) {
      let u: URL;
      try {
        u = new URL(ch.params.realm);
      } catch {
        return false;
      }
      if (basic && !mayCarryCredentials(u, this.origin.url)) {
        log.warn({ source: this.name, realm: describeRealm(ch.params.realm) }, "refused token realm: credentials go over plain http only to the registry's own host");
        return false;
      }
      if (ch.params.service) u.searchParams.set('service', ch.params.service);
      u.searchParams.set('scope', ch.params.scope ?? `repository:${this.origin.repo}:pull`);
      const th: Record<string, string> = basic ? { authorization: `Basic ${basic}` } : {};
      try {
        const tr = await request(u, { headers: th, dispatcher: this.dispatcher, signal });
        if (tr.statusCode !== 200) {
          await tr.body.dump();
          return false;
        }
        const body = (await tr.body.json()) as { token?: string; access_token?: string };
        const tok = body.token ?? body.access_token;
        if (tok) next = `Bearer ${tok}`;
      } catch {
        return false;
      }
    }
    if (!next || next === this.mirrorAuth) return false;
    this.mirrorAuth = next;
    return true;
  }

  rejected(range: BlobRange): void {
    if (this.unconfirmed === rangeKey(range)) this.unconfirmed = undefined;
    log.warn({ source: this.name, blob: range.blobId, offset: range.offset }, 'mirror bytes failed verification');
    this.health.recordFailure(`digest mismatch at ${range.blobId.slice(0, 12)}+${range.offset}`);
  }

  healthSnapshot(): HealthSnapshot {
    return this.health.snapshot();
  }

  async close(): Promise<void> {
    await this.health.close();
    await this.dispatcher.close();
  }
}

/** Anything holding an ordered source list that can be swapped live (the ChunkPipeline). */
export interface SourceList {
  sources(): readonly ChunkSource[];
  setSources(sources: ChunkSource[]): void;
}

/** Mirror sets by the source that follows them (origin or proxy), to find them in a live list. */
const setsByTail = new WeakMap<ChunkSource, MirrorSet>();

/**
 * The live, ordered mirror list of one image, followed by `tail` (the origin, or the proxy wrapping
 * it). `chain()` is what goes into the pipeline's source list; `updateMirrors()` swaps the mirrors
 * in place later.
 */
export class MirrorSet {
  private list: MirrorSource[];

  constructor(
    private readonly origin: OriginInfo,
    configs: MirrorConfig[],
    readonly tail: ChunkSource,
  ) {
    this.list = configs.filter((c) => c.capabilities.includes('pull')).map((c) => new MirrorSource(c, origin));
    setsByTail.set(tail, this);
  }

  get sources(): MirrorSource[] {
    return this.list.slice();
  }

  /** Mirrors in order, then the tail. */
  chain(): ChunkSource[] {
    return [...this.list, this.tail];
  }

  /**
   * Make `configs` (pull-capable ones, in order) the mirrors. Mirrors whose config did not change
   * are kept with their health. Returns the new list and the removed sources (for the caller to
   * close once nothing reads from them).
   */
  update(configs: MirrorConfig[]): { next: MirrorSource[]; removed: MirrorSource[] } {
    const old = new Map(this.list.map((s) => [JSON.stringify(s.config), s]));
    const next: MirrorSource[] = [];
    for (const c of configs.filter((x) => x.capabilities.includes('pull'))) {
      const key = JSON.stringify(c);
      const kept = old.get(key);
      if (kept) old.delete(key);
      next.push(kept ?? new MirrorSource(c, this.origin));
    }
    this.list = next;
    log.info({ repo: this.origin.repo, mirrors: next.map((s) => s.name) }, 'mirror set updated');
    return { next: next.slice(), removed: [...old.values()] };
  }

  async close(): Promise<void> {
    await Promise.all(this.list.map((s) => s.close()));
    this.list = [];
  }
}

/**
 * Swap the mirrors of a live source list holding a `MirrorSet.chain()`, keeping everything else (peers,
 * proxy, origin) in place. Returns false when the list has no mirror set (e.g. a localfs backend).
 */
export async function updateMirrors(target: SourceList, configs: MirrorConfig[]): Promise<boolean> {
  const current = target.sources();
  const set = current.map((s) => setsByTail.get(s)).find((s): s is MirrorSet => s !== undefined);
  if (!set) return false;
  const before = new Set<ChunkSource>(set.sources);
  const { next, removed } = set.update(configs);
  const rest = current.filter((s) => !before.has(s));
  rest.splice(rest.indexOf(set.tail), 0, ...next);
  target.setSources(rest);
  // Reads already running keep their list; dispatcher.close() lets their requests finish.
  await Promise.all(removed.map((s) => s.close()));
  return true;
}

/** The mirror sources in a live list, for metrics and health reports. */
export function mirrorSourcesOf(list: readonly ChunkSource[]): MirrorSource[] {
  return list.filter((s): s is MirrorSource => s instanceof MirrorSource);
}
