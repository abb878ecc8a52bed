/**
 * Builds the ordered source list of one rafs instance from its config: the origin registry, the
 * localfs blob directory, or an s3 / oss bucket. The mirror and peer modules extend this function: peers first,
 * then mirrors, then the dfdaemon proxy wrapping the origin, then the origin itself — the order the
 * pipeline asks them in.
 *
 * Credentials are per instance: `device.backend.config.auth` of that instance only (the
 * `IMAGE_PULL_AUTH` environment variable fills in the `--config` file's, as upstream, through
 * `applyImagePullAuth`), replaceable while it runs with `updateRegistryAuth`
 * (`PUT /api/v1/config {"registry_auth"}`, routed in upstream-api.ts). Where they may be sent: docs/registry.md.
 */
import * as fs from 'node:fs';
import type { ChunkSource } from '../fetch/source';
import { FetchMetrics } from '../fetch/metrics';
import { LocalFsSource } from '../fetch/localfs';
import { ObjectStoreSource } from '../fetch/object-source';
import { OriginSource, BlobRangeReader } from '../fetch/origin';
import type { RegistryClient } from '../registry/client';
import type { OriginInfo, SourceList } from '../fetch/mirror-set';
import { CertsDir, effectiveMirrors, hostDirCandidates } from '../mirrors/certs-dir';
import { mirrorsFromJson, proxyFromJson } from '../mirrors/nydus-json';
import { MirrorConfigError } from '../mirrors/types';
import { parseP2PConfig, P2PConfigError } from '../p2p/config';
import { ApiFault } from './api';
import { mirrorSetModule, p2pHub, proxyModule } from './optional';
import type { NydusdConfig, RegistryBackendConfig } from './config';
import type { ObjectStoreConfig } from '../fetch/object-store';

export interface SourceDeps {
  metrics: FetchMetrics;
  /** Makes the registry client for the origin; tests and the daemon may share one. */
  registryClient?: (cfg: RegistryBackendConfig) => BlobRangeReader;
  /** certs.d mirrors (nydusd --mirrors-dir); they replace the config's mirrors when they have any. */
  certs?: CertsDir;
}

export function defaultRegistryClient(cfg: RegistryBackendConfig): RegistryClient {
  const auth = cfg.auth;
  // Loaded on first use: undici costs ~15 MB of RSS that a localfs-only daemon does not need.
  const { RegistryClient: Client } = require('../registry/client') as typeof import('../registry/client');
  return new Client({
    registry: cfg.host,
    insecure: cfg.scheme === 'http',
    skipVerify: cfg.skipVerify,
    timeoutMs: Math.max(cfg.timeout, cfg.connectTimeout, 1) * 1000,
    retryLimit: cfg.retryLimit,
    credentials: auth ? { auth } : undefined,
    ca: cfg.caCertFiles?.length ? cfg.caCertFiles.map(readCaFile).join('\n') : undefined,
    noDockerConfig: true,
  });
}

function readCaFile(f: string): string {
  try {
    return fs.readFileSync(f, 'utf8');
  } catch (e) {
    throw new ApiFault(400, 'InvalidConfig', `device.backend.config.ca_cert_files: ${f}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export function buildSources(config: NydusdConfig, deps: SourceDeps): ChunkSource[] {
  const peers = peerSources(config);
  return [...peers, ...backendSources(config, deps)];
}

/** The swarm's source when the top-level `p2p` section enables it (asked before any mirror). */
function peerSources(config: NydusdConfig): ChunkSource[] {
  try {
    const p2p = parseP2PConfig(config.p2p, 'config');
    return p2p ? [p2pHub().peerSourceFor(p2p)] : [];
  } catch (e) {
    if (e instanceof P2PConfigError) throw new ApiFault(400, 'InvalidConfig', e.message);
    throw e;
  }
}

function backendSources(config: NydusdConfig, deps: SourceDeps): ChunkSource[] {
  const b = config.backend;
  if (b.type === 'localfs') return [new LocalFsSource({ dir: b.config.dir, altDirs: b.config.altDirs, blobFile: b.config.blobFile })];
  // Upstream's s3 / oss backends have no mirrors; peers (above) still come first.
  if (b.type === 's3' || b.type === 'oss') return [objectStoreSource(b.config)];
  const client = (deps.registryClient ?? defaultRegistryClient)(b.config);
  return registryChain(b.config, client, new OriginSource(client, b.config.repo), deps.certs);
}

function objectStoreSource(cfg: ObjectStoreConfig): ChunkSource {
  for (const f of cfg.caCertFiles ?? []) readCaFile(f);
  return new ObjectStoreSource(cfg);
}

/** The credentials of one registry chain; replaced in place by `updateRegistryAuth`. */
interface AuthCell {
  auth?: string;
  client: BlobRangeReader;
}

/** Chains by their origin and tail sources (these stay when mirrors are swapped). */
const authCells = new WeakMap<ChunkSource, AuthCell>();

/** `[...mirrors, proxy(origin) | origin]` for a registry backend; the mirror set can be swapped live. */
function registryChain(cfg: RegistryBackendConfig, client: BlobRangeReader, origin: ChunkSource, certs?: CertsDir): ChunkSource[] {
  const authz = (client as Partial<Pick<RegistryClient, 'authorization'>>).authorization?.bind(client);
  const cell: AuthCell = { auth: cfg.auth, client };
  const info: OriginInfo = {
    url: `${cfg.scheme}://${cfg.host}`,
    repo: cfg.repo,
    basicAuth: () => cell.auth,
    // Tokens always come from the origin (never through a mirror or the proxy).
    authorization: () => (authz ? authz(cfg.repo, ['pull']) : Promise.resolve(undefined)),
  };
  authCells.set(origin, cell);
  try {
    const mirrors = effectiveMirrors(mirrorsFromJson(cfg.mirrors, 'device.backend.config.mirrors'), certs?.mirrorsFor(cfg.host) ?? []);
    const proxy = proxyFromJson(cfg.proxy, 'device.backend.config.proxy');
    const tail = proxy ? proxyModule().withProxy(proxy, info)(origin) : origin;
    authCells.set(tail, cell);
    return new (mirrorSetModule().MirrorSet)(info, mirrors, tail).chain();
  } catch (e) {
    if (e instanceof MirrorConfigError) throw new ApiFault(400, 'InvalidConfig', e.message);
    throw e;
  }
}

/** What the mirrors API needs of a mounted instance. */
export interface MirrorTarget {
  config: NydusdConfig;
  pipeline: SourceList;
}

/**
 * `PUT /api/v1/daemon/mirrors` body `{registry?, mirrors: [...]}` (nydusd mirror JSON): applies the
 * mirrors, without remount, to every registry instance of `registry` (all when absent). An empty
 * list puts each instance's own config mirrors back. Returns how many instances changed.
 */
export async function applyMirrorsUpdate(instances: Iterable<MirrorTarget>, body: unknown): Promise<{ updated: number }> {
  const b = body as { registry?: unknown; mirrors?: unknown } | undefined;
  if (!b || typeof b !== 'object' || !Array.isArray(b.mirrors)) throw new ApiFault(400, 'InvalidBody', 'body: expected {registry?, mirrors: [...]}');
  if (b.registry !== undefined && typeof b.registry !== 'string') throw new ApiFault(400, 'InvalidBody', 'registry: expected a registry host');
  let pushed;
  try {
    pushed = mirrorsFromJson(b.mirrors, 'mirrors');
  } catch (e) {
    throw new ApiFault(400, 'InvalidBody', (e as Error).message);
  }
  const names = b.registry ? hostDirCandidates(b.registry).filter((n) => n !== '_default') : undefined;
  let updated = 0;
  for (const inst of instances) {
    const be = inst.config.backend;
    if (be.type !== 'registry') continue;
    if (names && !names.includes(be.config.host.toLowerCase())) continue;
    const own = mirrorsFromJson(be.config.mirrors, 'device.backend.config.mirrors');
    if (await mirrorSetModule().updateMirrors(inst.pipeline, effectiveMirrors(own, pushed))) updated++;
  }
  return { updated };
}

/** The certs.d mirrors for every registry instance, re-applied after the directory changed. */
export async function applyCertsDir(instances: Iterable<MirrorTarget>, certs: CertsDir): Promise<void> {
  for (const inst of instances) {
    const be = inst.config.backend;
    if (be.type !== 'registry') continue;
    const own = mirrorsFromJson(be.config.mirrors, 'device.backend.config.mirrors');
    await mirrorSetModule().updateMirrors(inst.pipeline, effectiveMirrors(own, certs.mirrorsFor(be.config.host)));
  }
}

/** Throws a one-line fault unless `auth` is base64 of `user:password`. */
function checkAuth(auth: string, what: string): void {
  if (!/^[A-Za-z0-9+/]+=*$/.test(auth) || !Buffer.from(auth, 'base64').toString('utf8').includes(':')) {
    throw new ApiFault(400, 'InvalidBody', `${what}: must be base64 of "user:password"`);
  }
}

/**
 * Replaces the registry credentials of a running instance (`auth` base64 `user:password`, or
 * undefined for anonymous): the next request uses them, cached tokens are dropped. Returns false
 * for an instance without a registry backend.
 */
export function updateRegistryAuth(target: MirrorTarget, auth: string | undefined): boolean {
  if (auth !== undefined) checkAuth(auth, 'registry_auth');
  const be = target.config.backend;
  if (be.type !== 'registry') return false;
  const cell = target.pipeline.sources().map((s) => authCells.get(s)).find((c): c is AuthCell => c !== undefined);
  if (!cell) return false;
  cell.auth = auth;
  (cell.client as Partial<Pick<RegistryClient, 'setCredentials'>>).setCredentials?.(auth ? { auth } : undefined);
  be.config.auth = auth;
  return true;
}

/**
 * `IMAGE_PULL_AUTH` (base64 `user:password`), as upstream nydusd: it fills in the registry `auth` of
 * the `--config` file's instance only, never of instances mounted through the API with their own
 * config, so one registry's credentials do not reach another.
 */
export function applyImagePullAuth(config: NydusdConfig, env: NodeJS.ProcessEnv = process.env): void {
  const auth = env.IMAGE_PULL_AUTH;
  if (!auth || config.backend.type !== 'registry') return;
  checkAuth(auth, 'IMAGE_PULL_AUTH');
  config.backend.config.auth = auth;
}
