/**
 * Real OCI registries for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, in
 * three flavours (open, htpasswd Basic, token auth behind a token server run here) plus a
 * pull-through cache. Every registry is fronted by a recording pass-through on loopback so tests can
 * assert what the registry saw (method, path, Range, status).
 *
 *   const reg = await startRegistry({ auth: 'token', username: 'alice', password: 's3cret' });
 *   ... use reg.url / reg.host ...
 *   expect(reg.requests().some((r) => r.range)).toBe(true);
 *   await reg.stop();
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { RegistryClient } from '../../src/registry/client';

export interface RequestRecord {
  method: string;
  /** Path and query as the client sent it. */
  path: string;
  /** The Range request header, if any. */
  range?: string;
  /** True when the request carried an Authorization header (its value is never recorded). */
  authorized: boolean;
  status: number;
  /** Date.now() when the answer's headers came back. */
  at: number;
}

export interface RegistryOptions {
  auth?: 'none' | 'basic' | 'token';
  /** Makes the registry a pull-through cache of this origin (`proxy.remoteurl`). */
  proxyRemoteUrl?: string;
  /** Credentials the origin of a pull-through cache wants. */
  proxyUsername?: string;
  proxyPassword?: string;
  username?: string;
  password?: string;
  /**
   * Token auth: lifetime of issued tokens in seconds (default 300). The registry accepts a token for
   * 60 s past its `exp` (distribution's clock-skew leeway), so a short-lived token is signed with
   * `exp` = now + ttl - 60: the registry then really refuses it after `ttl` seconds.
   */
  tokenTtlSeconds?: number;
  /** Token auth: the realm the registry names in its challenge, instead of the token server's. */
  realmOverride?: string;
}

export interface TokenRecord {
  method: string;
  scope: string;
  account?: string;
  status: number;
  /** Date.now() of the answer. */
  at: number;
}

export interface TestRegistry {
  /** `http://127.0.0.1:PORT` of the recording front. */
  url: string;
  /** `127.0.0.1:PORT` of the recording front, for image references. */
  host: string;
  /** The registry process itself, bypassing the recorder. */
  directUrl: string;
  username?: string;
  password?: string;
  /** Token auth only: the token server (HTTPS) and the PEM of its certificate, which also signs tokens. */
  tokenRealm?: string;
  caCertPath?: string;
  /** Requests the registry answered, in order. */
  requests(): RequestRecord[];
  clearRequests(): void;
  /** Token auth only: requests the token server answered (no credentials recorded). */
  tokenRequests(): TokenRecord[];
  /** Token auth only: every token issued, for tests that check no token leaked anywhere. */
  issuedTokens(): string[];
  /** Token auth only: the password the token server accepts from now on (the old one is refused). */
  setPassword(password: string): void;
  /**
   * Token auth only: lifetime of tokens issued from now on (as `tokenTtlSeconds`). Tools that do not
   * renew tokens early (skopeo, containerd) are best run before tokens are made short-lived.
   */
  setTokenTtlSeconds(seconds: number): void;
  /** Storage root of the registry (filesystem driver). */
  storageDir: string;
  stop(): Promise<void>;
}

const REGISTRY_BIN = '/usr/bin/docker-registry';

/** A port the kernel just handed out on 127.0.0.1 and that nobody holds now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

function ensureHtpasswd(): string {
  try {
    return execFileSync('bash', ['-c', 'command -v htpasswd'], { encoding: 'utf8' }).trim();
  } catch {
    execFileSync('bash', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq apache2-utils >/dev/null'], {
      stdio: 'inherit',
      timeout: 5 * 60_000,
    });
    return '/usr/bin/htpasswd';
  }
}

/** A self-signed certificate for 127.0.0.1 usable both for TLS serving and for signing tokens. */
function makeCert(dir: string): { certPath: string; keyPath: string } {
  const certPath = path.join(dir, 'token.crt');
  const keyPath = path.join(dir, 'token.key');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath, '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-addext', 'keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign',
  ], { stdio: 'ignore' });
  return { certPath, keyPath };
}

function b64url(b: Buffer | string): string {
  return Buffer.from(b).toString('base64url');
}

interface TokenServer {
  realm: string;
  records: TokenRecord[];
  issued: string[];
  setPassword(password: string): void;
  setTtl(seconds: number): void;
  close(): Promise<void>;
}

/** distribution's leeway on `exp` and `nbf` (registry/auth/token/token.go). */
const REGISTRY_TOKEN_LEEWAY_S = 60;

/**
 * A Docker token server (distribution's token spec): GET with Basic credentials or the OAuth2 POST
 * form (grant_type=password), answering a JWT signed RS256 with the certificate's key and carrying
 * the certificate in `x5c` so the registry verifies it against its `rootcertbundle`.
 */
async function startTokenServer(opts: {
  certPath: string; keyPath: string; service: string; issuer: string; username: string; password: string; ttl?: number;
}): Promise<TokenServer> {
  const certPem = fs.readFileSync(opts.certPath, 'utf8');
  const keyPem = fs.readFileSync(opts.keyPath, 'utf8');
  const certDer = new crypto.X509Certificate(certPem).raw.toString('base64');
  const records: TokenServer['records'] = [];
  const issued: string[] = [];
  let ttl = opts.ttl ?? 300;
  let short = opts.ttl !== undefined;
  let password = opts.password;

  const grant = (scopes: string[], account: string | undefined) =>
    scopes.flatMap((s) => {
      // scope = type:name:actions; names may contain ':' only before a port, not in our tests.
      const m = /^([a-z]+):(.+):([a-z*,]*)$/.exec(s);
      if (!m || !account) return [];
      return [{ type: m[1], name: m[2], actions: m[3].split(',').filter(Boolean) }];
    });

  const sign = (account: string | undefined, scopes: string[]) => {
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer] };
    const claims = {
      iss: opts.issuer, sub: account ?? '', aud: opts.service, exp: now + (short ? ttl - REGISTRY_TOKEN_LEEWAY_S : ttl), nbf: now - 10, iat: now,
      jti: crypto.randomBytes(12).toString('hex'), access: grant(scopes, account),
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = crypto.sign('sha256', Buffer.from(input), keyPem);
    return `${input}.${b64url(sig)}`;
  };

  const server = https.createServer({ cert: certPem, key: keyPem }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const u = new URL(req.url ?? '/', 'https://127.0.0.1');
      let scopes = u.searchParams.getAll('scope');
      let user: string | undefined;
      let pass: string | undefined;
      const authz = req.headers.authorization;
      if (authz?.startsWith('Basic ')) {
        const dec = Buffer.from(authz.slice(6), 'base64').toString();
        const i = dec.indexOf(':');
        user = dec.slice(0, i);
        pass = dec.slice(i + 1);
      }
      if (req.method === 'POST') {
        const form = new URLSearchParams(Buffer.concat(chunks).toString());
        scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
        if (form.get('grant_type') === 'password') {
          user = form.get('username') ?? undefined;
          pass = form.get('password') ?? undefined;
        }
      }
      let status = 200;
      let account: string | undefined;
      if (user !== undefined) {
        if (user === opts.username && pass === password) account = user;
        else status = 401;
      }
      records.push({ method: req.method ?? '', scope: scopes.join(' '), account, status, at: Date.now() });
      if (status !== 200) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password' }] }));
        return;
      }
      const token = sign(account, scopes);
      issued.push(token);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ token, access_token: token, expires_in: ttl, issued_at: new Date().toISOString() }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    realm: `https://127.0.0.1:${port}/token`,
    records,
    issued,
    setPassword: (p) => {
      password = p;
    },
    setTtl: (seconds) => {
      ttl = seconds;
      short = true;
    },
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}

/** A pass-through HTTP proxy to `targetPort` that records every request and its answer's status. */
async function startRecorder(targetPort: number): Promise<{ port: number; records: RequestRecord[]; close(): Promise<void> }> {
  const records: RequestRecord[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });
  const server = http.createServer((req, res) => {
    const up = http.request({
      host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers, agent,
    }, (upRes) => {
      records.push({
        method: req.method ?? '', path: req.url ?? '', range: req.headers.range,
        authorized: req.headers.authorization !== undefined, status: upRes.statusCode ?? 0, at: Date.now(),
      });
      res.writeHead(upRes.statusCode ?? 502, upRes.rawHeaders);
      upRes.pipe(res);
    });
    up.on('error', () => {
      records.push({ method: req.method ?? '', path: req.url ?? '', range: req.headers.range, authorized: false, status: 502, at: Date.now() });
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    records,
    close: () => new Promise((resolve) => { server.closeAllConnections(); agent.destroy(); server.close(() => resolve()); }),
  };
}

async function waitReady(url: string, proc: ChildProcess, logPath: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) break;
    try {
      const res = await fetch(`${url}/v2/`);
      await res.arrayBuffer();
      if (res.status === 200 || res.status === 401) return;
    } catch { /* not listening yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  const tail = fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8').split('\n').slice(-10).join('\n') : '';
  throw new Error(`docker-registry did not become ready at ${url}:\n${tail}`);
}

/** Starts a registry; call `stop()` in afterAll. */
export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const auth = opts.auth ?? 'none';
  const username = opts.username ?? 'tester';
  const password = opts.password ?? 'pa55-word';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-registry-'));
  const storageDir = path.join(dir, 'storage');
  fs.mkdirSync(storageDir);
  let token: TokenServer | undefined;
  let caCertPath: string | undefined;

  const port = await freePort();
  const cfg: string[] = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  formatter: text',
    '  accesslog:',
    '    disabled: true',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${storageDir}`,
    '  delete:',
    '    enabled: true',
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: ${crypto.randomBytes(16).toString('hex')}`,
  ];
  if (auth === 'basic') {
    const htpasswd = path.join(dir, 'htpasswd');
    execFileSync(ensureHtpasswd(), ['-Bbc', htpasswd, username, password], { stdio: 'ignore' });
    cfg.push('auth:', '  htpasswd:', '    realm: nydus-ts-test', `    path: ${htpasswd}`);
  } else if (auth === 'token') {
    const { certPath, keyPath } = makeCert(dir);
    caCertPath = certPath;
    token = await startTokenServer({ certPath, keyPath, service: 'nydus-ts-registry', issuer: 'nydus-ts-token-issuer', username, password, ttl: opts.tokenTtlSeconds });
    cfg.push('auth:', '  token:', `    realm: ${opts.realmOverride ?? token.realm}`, '    service: nydus-ts-registry',
      '    issuer: nydus-ts-token-issuer', `    rootcertbundle: ${certPath}`);
  }
  if (opts.proxyRemoteUrl) {
    cfg.push('proxy:', `  remoteurl: ${opts.proxyRemoteUrl}`);
    if (opts.proxyUsername) cfg.push(`  username: ${opts.proxyUsername}`, `  password: ${opts.proxyPassword ?? ''}`);
  }
  const cfgPath = path.join(dir, 'config.yml');
  fs.writeFileSync(cfgPath, cfg.join('\n') + '\n');
  const logPath = path.join(dir, 'registry.log');
  const logFd = fs.openSync(logPath, 'a');
  const proc = spawn(REGISTRY_BIN, ['serve', cfgPath], { stdio: ['ignore', logFd, logFd] });
  fs.closeSync(logFd);
  const directUrl = `http://127.0.0.1:${port}`;
  let recorder: Awaited<ReturnType<typeof startRecorder>> | undefined;
  const stop = async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([exited, new Promise((r) => { timer = setTimeout(r, 5000); })]);
      clearTimeout(timer);
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
    await recorder?.close();
    await token?.close();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitReady(directUrl, proc, logPath);
    recorder = await startRecorder(port);
  } catch (e) {
    await stop();
    throw e;
  }
  const rec = recorder;
  return {
    url: `http://127.0.0.1:${rec.port}`,
    host: `127.0.0.1:${rec.port}`,
    directUrl,
    username: auth === 'none' ? undefined : username,
    password: auth === 'none' ? undefined : password,
    tokenRealm: token?.realm,
    caCertPath,
    storageDir,
    requests: () => rec.records.slice(),
    clearRequests: () => { rec.records.length = 0; },
    tokenRequests: () => (token ? token.records.slice() : []),
    issuedTokens: () => (token ? token.issued.slice() : []),
    setPassword: (p) => {
      if (!token) throw new Error('setPassword: not a token-auth registry');
      token.setPassword(p);
    },
    setTokenTtlSeconds: (seconds) => {
      if (!token) throw new Error('setTokenTtlSeconds: not a token-auth registry');
      token.setTtl(seconds);
    },
    stop,
  };
}

/** A registry that mirrors `originUrl` (pull-through cache); pushes to it are refused by design. */
export function pullThroughCache(originUrl: string, opts: Omit<RegistryOptions, 'proxyRemoteUrl'> = {}): Promise<TestRegistry> {
  return startRegistry({ ...opts, proxyRemoteUrl: originUrl });
}

/** Pushes the blob file a build wrote (`<blobDir>/<blobId>`) to `repo`, as digest sha256:<blobId>. */
export async function pushBlobFile(reg: TestRegistry, repo: string, blobDir: string, blobId: string): Promise<void> {
  const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
  const file = path.join(blobDir, blobId);
  await client.pushBlob(repo, `sha256:${blobId}`, file, fs.statSync(file).size);
}
