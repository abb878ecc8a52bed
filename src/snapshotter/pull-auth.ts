/**
 * Registry credentials for one image, resolved by the snapshotter in upstream nydus-snapshotter's
 * order (pkg/auth; kubelet credential providers and Kubernetes secrets are not implemented here):
 *  1. labels the client set on the snapshot: `containerd.io/snapshot/pullusername` and
 *     `containerd.io/snapshot/pullsecret` (both non-empty);
 *  2. with the CRI keychain on, the `auth` of the kubelet's PullImageRequest for this image
 *     (cri-image-proxy.ts);
 *  3. docker's config file for the image's registry host (registry/docker-config.ts: `auths`,
 *     `credHelpers`, `credsStore`), read on every call;
 *  4. `device.backend.config.auth` of the nydusd template, when the template names no host or
 *     names this image's host.
 * The result is base64 `user:password` for that image's rafs instance only. Identity tokens from
 * docker's config or CRI are not expressible in nydusd's `auth` and are skipped with a warning.
 *
 * `watch()` reports changes of the docker config file (inotify on its directory, plus a 1 s stat
 * poll for a directory created later), so a rotated password reaches running daemons.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { dockerConfigCredentialsAsync, dockerConfigPath } from '../registry/docker-config';
import { resolveCredentials } from '../registry/credentials';
import { parseReference } from '../registry/reference';
import { logger } from '../util/log';
import type { CriKeychain } from './cri-image-proxy';

const log = logger('pull-auth');

export const PULL_USERNAME = 'containerd.io/snapshot/pullusername';
export const PULL_SECRET = 'containerd.io/snapshot/pullsecret';

export type AuthSource = 'labels' | 'cri' | 'docker-config' | 'template' | 'none';

export interface ImageAuth {
  /** base64 `user:password`, or undefined for anonymous access. */
  auth?: string;
  from: AuthSource;
}

export interface PullAuthOptions {
  env?: NodeJS.ProcessEnv;
  /** The nydusd template's `device.backend.config`: its `auth` and `host`. */
  template?: { auth?: unknown; host?: unknown };
  /** Credentials captured by the CRI image service proxy (`enable_cri_keychain`). */
  cri?: CriKeychain;
}

const b64 = (user: string, pass: string): string => Buffer.from(`${user}:${pass}`).toString('base64');

export class PullAuth {
  readonly dockerConfigFile: string;
  private readonly env: NodeJS.ProcessEnv;
  private readonly template?: { auth: string; host?: string };
  private readonly cri?: CriKeychain;
  private watcher?: fs.FSWatcher;
  private polling = false;
  private debounce?: NodeJS.Timeout;

  constructor(o: PullAuthOptions = {}) {
    this.env = o.env ?? process.env;
    this.dockerConfigFile = dockerConfigPath(this.env);
    this.cri = o.cri;
    const t = o.template;
    if (t && typeof t.auth === 'string' && t.auth) this.template = { auth: t.auth, host: typeof t.host === 'string' && t.host ? t.host : undefined };
  }

  /** Credentials for image `ref` whose snapshot carries `labels`. Never throws for a missing source. */
  async resolve(ref: string, labels: Record<string, string>): Promise<ImageAuth> {
    const user = labels[PULL_USERNAME];
    const secret = labels[PULL_SECRET];
    if (user && secret) return { auth: b64(user, secret), from: 'labels' };
    const cri = this.cri?.lookup(ref);
    if (cri && 'unusable' in cri) log.warn({ ref, kind: cri.unusable }, 'CRI pull credentials for this image are not user and password, which nydusd takes; skipped');
    else if (cri) return { auth: b64(cri.username, cri.password), from: 'cri' };
    const registry = parseReference(ref).registry;
    try {
      const c = resolveCredentials(await dockerConfigCredentialsAsync(registry, this.env));
      if (c?.identityToken) log.warn({ registry, file: this.dockerConfigFile }, 'docker config holds an identity token for this registry; nydusd takes user and password only, skipped');
      else if (c?.username && c.password) return { auth: b64(c.username, c.password), from: 'docker-config' };
    } catch (e) {
      log.warn({ registry, err: (e as Error).message }, 'docker config unusable; trying the next credential source');
    }
    if (this.template && (!this.template.host || this.template.host === registry)) return { auth: this.template.auth, from: 'template' };
    return { from: 'none' };
  }

  /** Calls `onChange` (debounced) whenever the docker config file may have changed. */
  watch(onChange: () => void): void {
    const fire = () => {
      if (this.debounce) clearTimeout(this.debounce);
      this.debounce = setTimeout(onChange, 50);
      this.debounce.unref();
    };
    const dir = path.dirname(this.dockerConfigFile);
    const name = path.basename(this.dockerConfigFile);
    try {
      this.watcher = fs.watch(dir, { persistent: false }, (_ev, f) => {
        if (!f || f.toString() === name) fire();
      });
      this.watcher.on('error', () => undefined);
    } catch {
      // The directory does not exist (yet): the stat poll below sees the file appear.
    }
    fs.watchFile(this.dockerConfigFile, { interval: 1000, persistent: false }, fire);
    this.polling = true;
  }

  close(): void {
    this.watcher?.close();
    if (this.polling) fs.unwatchFile(this.dockerConfigFile);
    this.polling = false;
    if (this.debounce) clearTimeout(this.debounce);
  }
}
