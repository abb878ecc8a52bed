/**
 * Registry credentials from docker's config file, as `docker login` leaves them:
 * `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (`/root/.docker/config.json` for root).
 *
 * Per registry host, first match wins:
 *  1. `credHelpers[host]`: `docker-credential-<helper> get`;
 *  2. `auths` (keys with or without scheme and path; `https://index.docker.io/v1/` for Hub):
 *     `identitytoken`, `auth` (base64 `user:password`) or `username` + `password`;
 *  3. `credsStore`: `docker-credential-<store> get`.
 * The helper protocol: the server URL on stdin, `{"ServerURL","Username","Secret"}` on stdout;
 * Username `<token>` means Secret is an identity token. A helper that is missing, fails or knows
 * nothing for the server gives no credentials (anonymous access), never an error. The file is read
 * on every lookup, so a rotated password is used from the next lookup on.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Credentials } from './credentials';

export interface DockerConfigFile {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

const HELPER_TIMEOUT_MS = 10_000;

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(env.DOCKER_CONFIG || path.join(os.homedir(), '.docker'), 'config.json');
}

/** The parsed file, or undefined when there is none; malformed JSON is an error naming the file. */
export function readDockerConfig(file: string): DockerConfigFile | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text) as DockerConfigFile;
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
}

/** `auths` keys come as `host`, `https://host`, `http://host/v1/`...; compare hosts. */
function keyHost(key: string): string {
  const h = key.replace(/^[a-z]+:\/\//, '').split('/')[0];
  return h === 'index.docker.io' || h === 'registry-1.docker.io' ? 'docker.io' : h;
}

/** What the config says for `registry`: stored credentials, a helper to ask, or nothing. */
export type DockerConfigMatch = { credentials: Credentials } | { helper: string; server: string } | undefined;

export function matchDockerConfig(cfg: DockerConfigFile, registry: string): DockerConfigMatch {
  const server = registry === 'docker.io' ? 'https://index.docker.io/v1/' : registry;
  const helper = cfg.credHelpers?.[registry];
  if (helper) return { helper, server };
  for (const [key, entry] of Object.entries(cfg.auths ?? {})) {
    if (keyHost(key) !== registry || !entry) continue;
    if (entry.identitytoken) return { credentials: { identityToken: entry.identitytoken } };
    if (entry.auth) return { credentials: { auth: entry.auth } };
    if (entry.username !== undefined) return { credentials: { username: entry.username, password: entry.password ?? '' } };
  }
  if (cfg.credsStore) return { helper: cfg.credsStore, server };
  return undefined;
}

function parseHelperAnswer(out: string): Credentials | undefined {
  try {
    const j = JSON.parse(out) as { Username?: string; Secret?: string };
    if (!j.Secret) return undefined;
    return j.Username === '<token>' ? { identityToken: j.Secret } : { username: j.Username ?? '', password: j.Secret };
  } catch {
    return undefined;
  }
}

/** Blocking lookup (command-line tools). */
export function dockerConfigCredentials(registry: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const cfg = readDockerConfig(dockerConfigPath(env));
  const m = cfg && matchDockerConfig(cfg, registry);
  if (!m) return undefined;
  if ('credentials' in m) return m.credentials;
  try {
    const out = execFileSync(`docker-credential-${m.helper}`, ['get'], { input: m.server, encoding: 'utf8', timeout: HELPER_TIMEOUT_MS, stdio: ['pipe', 'pipe', 'ignore'], env });
    return parseHelperAnswer(out);
  } catch {
    return undefined; // helper missing or has nothing for this server: anonymous access
  }
}

/** The same lookup without blocking the event loop (the snapshotter, which serves gRPC meanwhile). */
export async function dockerConfigCredentialsAsync(registry: string, env: NodeJS.ProcessEnv = process.env): Promise<Credentials | undefined> {
  const cfg = readDockerConfig(dockerConfigPath(env));
  const m = cfg && matchDockerConfig(cfg, registry);
  if (!m) return undefined;
  if ('credentials' in m) return m.credentials;
  const helper = m.helper;
  return new Promise((resolve) => {
    const child = execFile(`docker-credential-${helper}`, ['get'], { encoding: 'utf8', timeout: HELPER_TIMEOUT_MS, env }, (err, stdout) => {
      resolve(err ? undefined : parseHelperAnswer(stdout));
    });
    child.stdin?.on('error', () => undefined); // a helper that exits without reading stdin
    child.stdin?.end(m.server);
  });
}
