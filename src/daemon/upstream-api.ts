/**
 * The endpoints of upstream nydusd's v1 API that nydus-snapshotter calls besides mount, umount,
 * daemon info and metrics (pkg/daemon/client.go; answers as in dragonflyoss/nydus api/src):
 *
 *   GET  /api/v1/metrics/inflight       FUSE requests not answered yet; 204 when there are none
 *   GET  /api/v1/config?id=MP           keys set through PUT for that instance (credentials masked)
 *   PUT  /api/v1/config?id=MP           {"registry_auth": base64(user:pass)} and/or {"proxy_url": URL}:
 *                                       applied to that instance's sources without remount
 *   PUT  /api/v1/daemon/start           READY -> RUNNING (starts prefetch)
 *   PUT  /api/v1/mount?mountpoint=MP    remount: same bootstrap, new config, without unmounting
 *   PUT  /api/v1/daemon/fuse/sendfd     a supervised daemon writes its failover state for the supervisor
 *   PUT  /api/v1/daemon/fuse/takeover   INIT -> READY: a supervised daemon started with --upgrade reads
 *                                       the state of the daemon it replaces (docs/nydusd.md "Failover");
 *                                       both answer 501 in a daemon without --supervisor
 *
 * `id` and `mountpoint` name instances as every other endpoint does (under the daemon's
 * --mountpoint when it has one). Errors are `{code, message}` like the rest of the API; a message
 * never carries a credential.
 */
import * as path from 'node:path';
import { ApiFault, ApiRequest } from './api';
import type { NydusdConfig, RegistryBackendConfig } from './config';
import type { Daemon, MountedInstance } from './daemon';
import { updateRegistryAuth } from './sources';

/** The keys of upstream's `nydus_utils::config::Keys`. */
const HOT_KEYS = ['registry_auth', 'proxy_url', 'dragonfly_scheduler_endpoint'] as const;
type HotKey = (typeof HOT_KEYS)[number];

/** What PUT /api/v1/config set per instance, for GET (credentials are never echoed). */
const applied = new WeakMap<MountedInstance, Partial<Record<HotKey, string>>>();

export function addUpstreamRoutes(d: Daemon): void {
  const a = d.api;
  a.addRoute('GET', '/api/v1/metrics/inflight', () => {
    const ops = [...d.instances.values()].flatMap((i) => [...i.fuse.inflight.values()]);
    return ops.length ? ops : undefined;
  });
  a.addRoute('GET', '/api/v1/config', (r) => {
    const set = applied.get(instanceById(d, r)) ?? {};
    return { ...set, ...(set.registry_auth !== undefined ? { registry_auth: '[redacted]' } : {}) };
  });
  a.addRoute('PUT', '/api/v1/config', (r) => updateConfig(d, r));
  a.addRoute('PUT', '/api/v1/daemon/start', async () => {
    // Upstream's state machine takes Start only in READY (after a mount or a takeover).
    if (d.state !== 'READY') throw new ApiFault(400, 'UnexpectedEvent', `start: the daemon is ${d.state}, not READY`);
    // A successor starts reading the FUSE connection only now, with every instance mounted again.
    await d.supervised?.start();
    d.run();
    return undefined;
  });
  a.addRoute('PUT', '/api/v1/mount', (r) => remount(d, r));
  const supervisedOnly = (what: string) => {
    // Upstream answers an unsupported daemon operation with 501 and code "UNDEFINED".
    if (!d.supervised) throw new ApiFault(501, 'UNDEFINED', `fuse ${what}: this nydusd runs without --supervisor; nothing keeps its FUSE connection`);
    return d.supervised;
  };
  a.addRoute('PUT', '/api/v1/daemon/fuse/sendfd', () => {
    // The descriptor is already with the supervisor (it spawned us with it): the state goes to the file.
    supervisedOnly('sendfd').save();
    return undefined;
  });
  a.addRoute('PUT', '/api/v1/daemon/fuse/takeover', () => {
    const s = supervisedOnly('takeover');
    if (d.state !== 'INIT') throw new ApiFault(400, 'UnexpectedEvent', `takeover: the daemon is ${d.state}, not INIT (start it with --upgrade)`);
    try {
      s.takeover();
    } catch (e) {
      throw new ApiFault(400, 'InvalidState', (e as Error).message);
    }
    d.state = 'READY';
    return undefined;
  });
}

function instanceById(d: Daemon, r: ApiRequest): MountedInstance {
  const id = r.query.get('id');
  if (!id) throw new ApiFault(400, 'InvalidQuery', 'id: query parameter required (the instance mountpoint, e.g. /<snapshot id>)');
  const inst = d.findInstance(id);
  if (!inst) throw new ApiFault(404, 'NotFound', `${id}: no such rafs instance`);
  return inst;
}

async function updateConfig(d: Daemon, r: ApiRequest): Promise<undefined> {
  const inst = instanceById(d, r);
  const body = r.body;
  if (!body || typeof body !== 'object' || Array.isArray(body)) throw new ApiFault(400, 'InvalidBody', 'body: expected {"registry_auth"?: "...", "proxy_url"?: "..."}');
  const entries = Object.entries(body as Record<string, unknown>);
  if (entries.length === 0) throw new ApiFault(400, 'InvalidBody', 'body: no key to update');
  for (const [k, v] of entries) {
    if (!(HOT_KEYS as readonly string[]).includes(k)) throw new ApiFault(400, 'InvalidBody', `${k}: unknown key (expected ${HOT_KEYS.join(', ')})`);
    if (typeof v !== 'string') throw new ApiFault(400, 'InvalidBody', `${k}: expected a string`);
  }
  const want = body as Partial<Record<HotKey, string>>;
  if (want.dragonfly_scheduler_endpoint !== undefined) throw new ApiFault(400, 'InvalidBody', 'dragonfly_scheduler_endpoint: not supported by this nydusd (blobs go through proxy_url)');
  const be = inst.config.backend;
  if (be.type !== 'registry') throw new ApiFault(400, 'InvalidBody', `${entries[0][0]}: instance ${inst.mountpoint} reads a ${be.type} backend, not a registry`);
  if (want.registry_auth !== undefined && want.registry_auth !== '' && !Buffer.from(want.registry_auth, 'base64').toString('utf8').includes(':')) {
    throw new ApiFault(400, 'InvalidBody', 'registry_auth: must be base64 of "user:password"');
  }
  if (want.proxy_url) checkUrl('proxy_url', want.proxy_url);
  let cfg: RegistryBackendConfig = be.config;
  if (want.proxy_url !== undefined) {
    const old = typeof cfg.proxy === 'object' && cfg.proxy !== null ? (cfg.proxy as Record<string, unknown>) : {};
    cfg = { ...cfg, proxy: want.proxy_url ? { ...old, url: want.proxy_url } : undefined };
  }
  if (want.proxy_url !== undefined) await d.reconfigure(inst, withRegistry(inst.config, cfg));
  // Credentials change in place (cached tokens dropped, live mirrors kept); an instance whose
  // sources hold no registry client is rebuilt with them.
  const auth = want.registry_auth || undefined;
  if (want.registry_auth !== undefined && !updateRegistryAuth(inst, auth)) await d.reconfigure(inst, withRegistry(inst.config, { ...cfg, auth }));
  applied.set(inst, { ...applied.get(inst), ...want });
  return undefined;
}

function withRegistry(config: NydusdConfig, cfg: RegistryBackendConfig): NydusdConfig {
  return { ...config, backend: { type: 'registry', config: cfg } };
}

function checkUrl(key: string, v: string): void {
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ApiFault(400, 'InvalidBody', `${key}: not a URL: ${JSON.stringify(v)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ApiFault(400, 'InvalidBody', `${key}: expected an http or https URL, got ${u.protocol}`);
}

/**
 * Upstream's remount swaps the instance's config (and bootstrap) under a live FUSE session. Here a
 * new config is applied in place; another bootstrap would need a new mount, which would break the
 * files containers hold open, so it is refused.
 */
async function remount(d: Daemon, r: ApiRequest): Promise<undefined> {
  const m = d.mountRequest(r);
  const inst = d.instances.get(m.mountpoint);
  if (!inst) throw new ApiFault(404, 'NotFound', `${m.mountpoint}: not mounted by this daemon`);
  if (path.resolve(m.source) !== inst.bootstrap) {
    throw new ApiFault(501, 'UNDEFINED', `remount ${m.mountpoint}: a different bootstrap (${m.source}) needs a new mount; only the config of a mounted image can be replaced`);
  }
  if (path.resolve(m.config.cache.workDir) !== path.resolve(inst.config.cache.workDir)) {
    throw new ApiFault(400, 'InvalidConfig', `remount ${m.mountpoint}: the cache work_dir cannot change under a mounted image (${inst.config.cache.workDir})`);
  }
  await d.reconfigure(inst, m.config);
  return undefined;
}
