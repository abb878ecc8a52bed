/**
 * Dragonfly dfdaemon proxy mode (nydusd `backend.config.proxy`), as a wrapper around the origin
 * source: `withProxy(config, origin)(direct)`.
 *
 * Blob reads go to the proxy as absolute-form HTTP requests (`GET http://<registry>/v2/<repo>/blobs/
 * sha256:<id>` with `Host: <registry>`, `Range`, and the origin's Bearer token, which the proxy
 * relays to the registry; token requests never go through the proxy). Basic credentials never go
 * to the proxy: for an origin that wants Basic, reads go straight to the origin (docs/registry.md,
 * "Where credentials go"). `use_http` rewrites an https origin URL to http so dfdaemon sees plaintext.
 * Rules, as current nydusd has them:
 *  - `ping_url` is probed at start and every `check_interval` s; 2xx/3xx is healthy;
 *  - healthy: a proxy answer < 500 is the answer; >= 500 or a transport error goes to the origin
 *    when `fallback`, else fails;
 *  - unhealthy: `fallback` reads from the origin, otherwise the read fails at once with
 *    "proxy is not healthy and fallback is disabled".
 */
import { Agent } from '../util/http-agent';
import type { ProxyConfig } from '../mirrors/types';
import { logger } from '../util/log';
import { Health, HealthSnapshot, pingStatus } from './health';
import { getRange, HttpRangeError, makeDispatcher, MIRROR_HTTP_DEFAULTS, OriginInfo } from './mirror-set';
import { BlobRange, ChunkSource, ReadContext } from './source';

const log = logger('proxy');

/** Thrown when the proxy cannot serve and fallback is off; the read must not go elsewhere. */
export class ProxyUnhealthyError extends Error {
  constructor(proxy: string) {
    super(`proxy ${proxy}: proxy is not healthy and fallback is disabled`);
    this.name = 'ProxyUnhealthyError';
  }
}

export interface ProxyStats {
  viaProxy: number;
  direct: number;
  health: HealthSnapshot;
}

export class ProxySource implements ChunkSource {
  readonly name: string;
  readonly health: Health;
  private readonly dispatcher: Agent;
  private viaProxy = 0;
  private direct = 0;
  private lastFallbackWarn = 0;

  constructor(
    readonly config: ProxyConfig,
    private readonly origin: OriginInfo,
    private readonly directSource: ChunkSource,
  ) {
    this.name = `proxy:${new URL(config.url).host}`;
    this.dispatcher = makeDispatcher();
    this.health = new Health({
      name: this.name,
      // Only the ping decides health in proxy mode; read failures fall back per request.
      failureLimit: Number.POSITIVE_INFINITY,
      intervalMs: config.checkInterval * 1000,
      pauseAfterIdleMs: config.checkPauseElapsed * 1000,
      probeWhileUp: config.pingUrl !== '',
      probe: async () => {
        const st = await pingStatus(config.pingUrl, MIRROR_HTTP_DEFAULTS.connectTimeoutMs, this.dispatcher);
        return st >= 200 && st < 400;
      },
    });
  }

  /** The absolute-form URL the proxy is asked for. */
  proxiedUrl(blobId: string): string {
    const base = this.config.useHttp ? this.origin.url.replace(/^https:/, 'http:') : this.origin.url;
    return `${base}/v2/${this.origin.repo}/blobs/sha256:${blobId}`;
  }

  async read(range: BlobRange, ctx: ReadContext = {}): Promise<Buffer> {
    await this.health.ready;
    this.health.touch();
    if (!this.health.up) return this.fallback(range, ctx, 'proxy ping failing');
    const auth = await this.origin.authorization();
    if (auth && /^basic /i.test(auth)) return this.readDirect(range, ctx, 'the origin wants Basic credentials, which never go through the proxy');
    const target = this.proxiedUrl(range.blobId);
    const headers: Record<string, string> = { host: new URL(target).host };
    if (auth) headers.authorization = auth;
    try {
      const buf = await getRange(this.name, this.config.url, range, headers, this.dispatcher, ctx.signal, target);
      this.viaProxy++;
      return buf;
    } catch (e) {
      if (ctx.signal?.aborted || !(e instanceof HttpRangeError)) throw e;
      // < 500 is the proxy's answer (nydusd returns it as is); >= 500 and transport errors may fall back.
      if (e.status > 0 && e.status < 500) throw e;
      return this.fallback(range, ctx, e.message);
    }
  }

  private fallback(range: BlobRange, ctx: ReadContext, why: string): Promise<Buffer> {
    if (!this.config.fallback) throw new ProxyUnhealthyError(this.config.url);
    return this.readDirect(range, ctx, why);
  }

  /** A read from the origin itself, with a warning at most every 2 s. */
  private readDirect(range: BlobRange, ctx: ReadContext, why: string): Promise<Buffer> {
    const now = Date.now();
    if (now - this.lastFallbackWarn > 2000) {
      this.lastFallbackWarn = now;
      log.warn({ source: this.name, reason: why }, 'proxy unusable; reading from the origin');
    }
    this.direct++;
    return this.directSource.read(range, ctx);
  }

  rejected(range: BlobRange): void {
    // Proxy health is the ping's business; a bad answer is logged and the pipeline moves on.
    log.warn({ source: this.name, blob: range.blobId, offset: range.offset }, 'bytes failed verification');
  }

  stats(): ProxyStats {
    return { viaProxy: this.viaProxy, direct: this.direct, health: this.health.snapshot() };
  }

  async close(): Promise<void> {
    await this.health.close();
    await this.dispatcher.close();
    await this.directSource.close?.();
  }
}

/** `withProxy(config, origin)(direct)`: the origin source wrapped in proxy mode. */
export function withProxy(config: ProxyConfig, origin: OriginInfo): (direct: ChunkSource) => ProxySource {
  return (direct) => new ProxySource(config, origin, direct);
}
