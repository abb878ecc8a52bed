/**
 * Where registry credentials come from, in this order: explicit options, the environment, then the
 * docker config file (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`: `auths`, and
 * `credHelpers` / `credsStore` through `docker-credential-<helper> get`).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export type Credentials =
  | { username: string; password: string }
  | { auth: string /* base64 user:pass */ }
  | { identityToken: string };

/** Username and password, or an identity (refresh) token, resolved from any Credentials form. */
export interface ResolvedCredentials {
  username?: string;
  password?: string;
  identityToken?: string;
}

export function resolveCredentials(c: Credentials | undefined): ResolvedCredentials | undefined {
  if (!c) return undefined;
  if ('identityToken' in c) return { identityToken: c.identityToken };
  if ('auth' in c) {
    const dec = Buffer.from(c.auth, 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i < 0) throw new Error('credentials: "auth" is not base64 of user:password');
    return { username: dec.slice(0, i), password: dec.slice(i + 1) };
  }
  return { username: c.username, password: c.password };
}

/** `user:password` (as on the nydusify command line) to credentials; one-line error if malformed. */
export function parseUserPass(s: string, what: string): Credentials {
  const i = s.indexOf(':');
  if (i <= 0) throw new Error(`${what}: expected USER:PASSWORD`);
  return { username: s.slice(0, i), password: s.slice(i + 1) };
}

/** docker config `auths` keys come as `host`, `https://host`, `http://host/v1/`...; compare hosts. */
function keyHost(key: string): string {
  const h = key.replace(/^[a-z]+:\/\//, '').split('/')[0];
  return h === 'index.docker.io' || h === 'registry-1.docker.io' ? 'docker.io' : h;
}

function dockerConfigPath(env: NodeJS.ProcessEnv): string {
  const dir = env.DOCKER_CONFIG ?? path.join(os.homedir(), '.docker');
  return path.join(dir, 'config.json');
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

function fromHelper(helper: string, registry: string): Credentials | undefined {
  const server = registry === 'docker.io' ? 'https://index.docker.io/v1/' : registry;
  try {
    const out = execFileSync(`docker-credential-${helper}`, ['get'], { input: server, encoding: 'utf8', timeout: 10_000, stdio: ['pipe', 'pipe', 'ignore'] });
    const j = JSON.parse(out) as { Username?: string; Secret?: string };
    if (!j.Secret) return undefined;
    return j.Username === '<token>' ? { identityToken: j.Secret } : { username: j.Username ?? '', password: j.Secret };
  } catch {
    return undefined; // helper missing or has nothing for this server: anonymous access
  }
}

/**
 * Credentials for `registry` (host[:port], docker.io for Hub) from the docker config file, or
 * undefined. A malformed config file is an error naming the file.
 */
export function dockerConfigCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const file = dockerConfigPath(env);
  if (!fs.existsSync(file)) return undefined;
  let cfg: DockerConfig;
  try {
    cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as DockerConfig;
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  const helper = cfg.credHelpers?.[registry];
  if (helper) return fromHelper(helper, registry);
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (keyHost(key) !== registry) continue;
    if (entry.identitytoken) return { identityToken: entry.identitytoken };
    if (entry.auth) return { auth: entry.auth };
    if (entry.username !== undefined) return { username: entry.username, password: entry.password ?? '' };
  }
  if (cfg.credsStore) return fromHelper(cfg.credsStore, registry);
  return undefined;
}

/**
 * Credentials from the environment: `${prefix}_USER` as `user:password`, or `${prefix}_USERNAME`
 * with `${prefix}_PASSWORD`. The prefix lets a tool keep source and target apart.
 */
export function envCredentials(prefix: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const combined = env[`${prefix}_USER`];
  if (combined) return parseUserPass(combined, `${prefix}_USER`);
  const u = env[`${prefix}_USERNAME`];
  if (u !== undefined) return { username: u, password: env[`${prefix}_PASSWORD`] ?? '' };
  return undefined;
}
