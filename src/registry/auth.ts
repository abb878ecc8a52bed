/**
 * Registry authentication (distribution's token spec and RFC 7617 Basic):
 *  - learn the registry's challenge once (GET /v2/ answering 401 with WWW-Authenticate, or 200 when
 *    the registry is open), or from any 401 a request gets; with `probe` false there is no GET /v2/:
 *    requests go without credentials until a 401 names the challenge (as containerd's resolver
 *    does: one round trip less against an open registry, as many against one that wants auth);
 *  - Bearer: fetch a token from the realm for the exact scope set, cache it per scope set until
 *    shortly before it expires, share in-flight fetches;
 *  - Basic: the configured user and password.
 * Where credentials may go (`mayCarryCredentials`): a token realm gets the registry's credentials
 * only over https, or over plain http when it is on the registry's own host; otherwise the token
 * request is not sent and the call fails naming the refused realm. Without credentials a token is
 * asked for anonymously from any realm (nothing secret leaves). Redirects are never followed here.
 * Tokens and credentials never go into errors or logs.
 */
import type { Dispatcher } from 'undici';
import { ResolvedCredentials } from './credentials';
import { RegistryError, describeErrorBody } from './errors';
import { Transport, header, withRetry } from './transport';
import { logger } from '../util/log';

const log = logger('registry-auth');

export interface Challenge {
  scheme: 'bearer' | 'basic' | 'none';
  params: Record<string, string>;
}

/** Parses `Bearer realm="...",service="...",scope="..."` (quoted or token values). */
export function parseChallenge(value: string | undefined): Challenge | undefined {
  if (!value) return undefined;
  const m = /^\s*(\w+)\s*(.*)$/.exec(value);
  if (!m) return undefined;
  const scheme = m[1].toLowerCase();
  if (scheme !== 'bearer' && scheme !== 'basic') return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g;
  let p: RegExpExecArray | null;
  while ((p = re.exec(m[2])) !== null) params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  return { scheme, params };
}

/** `repository:NAME:a,b` */
export function repositoryScope(repo: string, actions: string[]): string {
  return `repository:${repo}:${actions.join(',')}`;
}

/**
 * Whether credentials for the registry at `registryUrl` may be sent to `target`: https anywhere, or
 * plain http to the registry's own host name (the registry itself already gets them in the clear).
 */
export function mayCarryCredentials(target: URL, registryUrl: string): boolean {
  if (target.protocol === 'https:') return true;
  return target.protocol === 'http:' && target.hostname.toLowerCase() === new URL(registryUrl).hostname.toLowerCase();
}

/** The realm as it may appear in an error: scheme, host and path, no query. */
export function describeRealm(realm: string): string {
  try {
    const u = new URL(realm);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return JSON.stringify(realm.slice(0, 100));
  }
}

interface CachedToken {
  header: string;
  expiresAt: number;
}

export class Authenticator {
  private challenge?: Promise<Challenge>;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly inflight = new Map<string, Promise<string | undefined>>();

  constructor(
    private readonly registry: string,
    private readonly baseUrl: string,
    private readonly transport: Transport,
    private creds: ResolvedCredentials | undefined,
    private readonly probe = true,
  ) {}

  /** New credentials (rotated password): cached headers are dropped, the next request asks again. */
  setCredentials(creds: ResolvedCredentials | undefined): void {
    this.creds = creds;
    this.tokens.clear();
  }

  /** The Authorization header for these scopes, or undefined when the registry wants none. */
  async header(scopes: string[], repo?: string): Promise<string | undefined> {
    const key = [...scopes].sort().join(' ');
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.header;
    let p = this.inflight.get(key);
    if (!p) {
      p = this.compute(key, scopes, repo).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /** Forget the header for these scopes and take `wwwAuthenticate` (from a 401) as the challenge. */
  reset(scopes: string[], wwwAuthenticate: string | undefined): void {
    this.tokens.delete([...scopes].sort().join(' '));
    const ch = parseChallenge(wwwAuthenticate);
    if (ch) this.challenge = Promise.resolve(ch);
  }

  private async compute(key: string, scopes: string[], repo?: string): Promise<string | undefined> {
    const ch = await this.getChallenge();
    if (ch.scheme === 'none') return undefined;
    if (ch.scheme === 'basic') {
      if (!this.creds?.username) return undefined;
      const h = `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password ?? ''}`).toString('base64')}`;
      this.tokens.set(key, { header: h, expiresAt: Number.MAX_SAFE_INTEGER });
      return h;
    }
    const { token, expiresIn } = await this.fetchToken(ch.params, scopes, repo);
    const ttl = expiresIn * 1000;
    // Renew a little early so a request never leaves with a token about to expire.
    this.tokens.set(key, { header: `Bearer ${token}`, expiresAt: Date.now() + Math.max(ttl - 10_000, ttl / 2) });
    return `Bearer ${token}`;
  }

  private getChallenge(): Promise<Challenge> {
    if (!this.challenge && !this.probe) return Promise.resolve({ scheme: 'none', params: {} }); // until a 401 tells
    if (!this.challenge) {
      this.challenge = this.ping().catch((e) => {
        this.challenge = undefined;
        throw e;
      });
    }
    return this.challenge;
  }

  private async ping(): Promise<Challenge> {
    return withRetry(async () => {
      let res: Dispatcher.ResponseData;
      try {
        res = await this.transport.send({ method: 'GET', url: `${this.baseUrl}/v2/` });
      } catch (e) {
        throw new RegistryError(this.registry, undefined, 'GET /v2/', 0, (e as Error).message, (e as { code?: string }).code);
      }
      await res.body.dump();
      if (res.statusCode === 401) {
        const ch = parseChallenge(header(res.headers, 'www-authenticate'));
        if (!ch) throw new RegistryError(this.registry, undefined, 'GET /v2/', 401, 'unsupported WWW-Authenticate challenge');
        return ch;
      }
      // Some registries answer 404 on /v2/ yet serve repositories openly; a later 401 teaches us.
      if (res.statusCode < 500 && res.statusCode !== 429) return { scheme: 'none', params: {} } as Challenge;
      throw new RegistryError(this.registry, undefined, 'GET /v2/', res.statusCode, '');
    }, { retryLimit: this.transport.retryLimit });
  }

  private async fetchToken(params: Record<string, string>, scopes: string[], repo?: string): Promise<{ token: string; expiresIn: number }> {
    const realm = params.realm;
    if (!realm) throw new RegistryError(this.registry, repo, 'token', 401, 'Bearer challenge without realm');
    const wanted = scopes.length ? scopes : params.scope ? [params.scope] : [];
    const op = `token for ${wanted.join(' ') || 'registry'}`;
    let realmUrl: URL;
    try {
      realmUrl = new URL(realm);
    } catch {
      throw new RegistryError(this.registry, repo, op, 401, `Bearer challenge with an invalid realm ${describeRealm(realm)}`);
    }
    if (this.creds && !mayCarryCredentials(realmUrl, this.baseUrl)) {
      throw new RegistryError(this.registry, repo, op, 401,
        `refused token realm ${describeRealm(realm)}: credentials go over plain http only to the registry's own host`);
    }
    return withRetry(async () => {
      let res: Dispatcher.ResponseData;
      try {
        if (this.creds?.identityToken) {
          const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: this.creds.identityToken, client_id: 'nydus-ts' });
          if (params.service) form.set('service', params.service);
          if (wanted.length) form.set('scope', wanted.join(' '));
          res = await this.transport.send({
            method: 'POST', url: realm, body: form.toString(),
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
          });
        } else {
          const u = new URL(realm);
          if (params.service) u.searchParams.set('service', params.service);
          for (const s of wanted) u.searchParams.append('scope', s);
          const headers: Record<string, string> = {};
          if (this.creds?.username) {
            headers.authorization = `Basic ${Buffer.from(`${this.creds.username}:${this.creds.password ?? ''}`).toString('base64')}`;
            u.searchParams.set('account', this.creds.username);
          }
          res = await this.transport.send({ method: 'GET', url: u.toString(), headers });
        }
      } catch (e) {
        throw new RegistryError(this.registry, repo, op, 0, `token server ${new URL(realm).host}: ${(e as Error).message}`, (e as { code?: string }).code);
      }
      const text = await res.body.text();
      if (res.statusCode === 401 || res.statusCode === 403) {
        throw new RegistryError(this.registry, repo, op, res.statusCode,
          this.creds ? 'the token server rejected the credentials' : 'the token server requires credentials');
      }
      if (res.statusCode !== 200) throw new RegistryError(this.registry, repo, op, res.statusCode, describeErrorBody(text));
      let j: { token?: string; access_token?: string; expires_in?: number };
      try {
        j = JSON.parse(text);
      } catch {
        throw new RegistryError(this.registry, repo, op, 200, 'token server answered something other than JSON');
      }
      const token = j.token ?? j.access_token;
      if (!token) throw new RegistryError(this.registry, repo, op, 200, 'token server answered without a token');
      log.debug({ registry: this.registry, scopes: wanted, expiresIn: j.expires_in }, 'got registry token');
      return { token, expiresIn: j.expires_in && j.expires_in > 0 ? j.expires_in : 60 };
    }, { retryLimit: this.transport.retryLimit });
  }
}
