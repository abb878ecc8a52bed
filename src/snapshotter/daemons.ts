/**
 * The daemon manager: runs nydusd processes and the rafs instances in them, and implements the
 * snapshotter's `RafsMounter`.
 *
 *  - shared mode (default): one nydusd for every image; dedicated: one per image. Either way an
 *    instance is added with `POST /api/v1/mount?mountpoint=<root>/mnt/<snapshot id>`.
 *  - A daemon is spawned detached (its own session), so it outlives a snapshotter that is stopped
 *    or killed; containers keep their filesystems.
 *  - Daemons and instances are recorded in the metadata store. After a snapshotter restart,
 *    `recover()` adopts every recorded daemon that still answers RUNNING (its mounts untouched) and
 *    restarts the others.
 *  - Liveness is polled (pid + API); with recover_policy "restart" a dead daemon's stale FUSE mounts
 *    are detached, it is spawned again and its instances are mounted again at the same paths.
 *  - The certs.d mirrors in force are written into each instance's config at mount (and remount
 *    after a restart); later changes are pushed live to every daemon by the mirrors sync.
 *  - Registry credentials are resolved per image (pull-auth.ts) and reach only that image's
 *    instance, inside the mount request on the daemon's API socket (directory mode 0700). They are
 *    never in nydusd's arguments or environment (credential variables are removed from it), never
 *    stored (the instance record keeps the image reference and re-resolves them after a restart),
 *    never logged. When docker's config file changes, and every minute for credential helpers, the
 *    credentials are resolved again and changed ones pushed with `PUT /api/v1/config
 *    {"registry_auth"}` to the running instance, without a remount.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NydusdClient } from '../daemon/client';
import { mirrorToJson } from '../mirrors/nydus-json';
import type { MirrorsSync } from '../mirrors/push';
import { apiHost, parseReference } from '../registry/reference';
import { logger } from '../util/log';
import { failedPrecondition, unavailable } from './errors';
import * as L from './labels';
import type { Metrics } from './metrics';
import type { MetaLayer, RafsMounter } from './snapshotter';
import type { MetaStore } from './store';
import { ImageAuth, PullAuth } from './pull-auth';

const log = logger('daemon-manager');

export interface DaemonManagerOptions {
  root: string;
  store: MetaStore;
  mode: 'shared' | 'dedicated';
  nydusdPath: string;
  /** The nydusd JSON template (already parsed JSON). */
  template: Record<string, unknown>;
  recoverPolicy: 'restart' | 'none';
  cacheDir: string;
  logLevel: string;
  /** "erofs": instances are mounted in nydusd's kernel EROFS mode (cache type "erofs"); default fusedev. */
  fsDriver?: 'fusedev' | 'erofs';
  /** nydusd output to our stdout instead of <root>/logs/<id>/nydusd.log. */
  logToStdout?: boolean;
  /** The certs.d watcher: mirrors for new instances, and live pushes to daemons when it changes. */
  mirrors?: MirrorsSync;
  metrics?: Metrics;
  /** Liveness poll period (ms). */
  pollMs?: number;
  /** How long a spawned daemon may take to reach RUNNING (ms). */
  startTimeoutMs?: number;
  /** Per-image registry credentials (default: labels, docker config of this process's env, template). */
  pullAuth?: PullAuth;
  /** Period of the credential re-resolution for helper-backed credentials (ms). */
  credentialRefreshMs?: number;
}

/** What the store keeps per daemon. */
interface DaemonRecord {
  id: string;
  pid: number;
  apiSock: string;
  /** Dedicated mode: the meta snapshot the daemon serves. */
  owner?: string;
}

/** The parts of nydusd's JSON config the snapshotter fills in; everything else passes through. */
interface NydusdJson {
  device: {
    id?: string;
    backend: { type: string; config: { host?: string; repo?: string; scheme?: string; mirrors?: unknown[] } & Record<string, unknown> };
    cache: { type?: string; config?: Record<string, unknown> } & Record<string, unknown>;
  } & Record<string, unknown>;
  [key: string]: unknown;
}

/** What the store keeps per rafs instance; the config never carries `auth` (resolved per mount). */
interface InstanceRecord {
  snapshotId: string;
  daemonId: string;
  mountpoint: string;
  bootstrap: string;
  /** The registry host the instance reads from. */
  registry: string;
  /** The image reference, to resolve its credentials again. */
  ref?: string;
  config: NydusdJson;
}

/** Environment variables that carry credentials and must not reach nydusd. */
const CREDENTIAL_ENV = /^(IMAGE_PULL_AUTH$|NYDUSIFY_.*_(USER|USERNAME|PASSWORD)$)|(PASSWORD|SECRET|TOKEN)/i;

interface Daemon {
  rec: DaemonRecord;
  client: NydusdClient;
  proc?: ChildProcess;
  /** Set while a restart is in progress, so reads of the daemon wait for it. */
  restarting?: Promise<void>;
}

const SHARED_ID = 'shared';

function pidAlive(pid: number, apiSock: string): boolean {
  try {
    process.kill(pid, 0);
    // A recycled pid belongs to another program: check that it is our daemon.
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(apiSock);
  } catch {
    return false;
  }
}

/** Detaches whatever is mounted at `dir` (a dead FUSE mount answers ENOTCONN until then). */
function detach(dir: string): void {
  for (const [cmd, args] of [['fusermount3', ['-uz', dir]], ['fusermount', ['-uz', dir]], ['umount', ['-l', dir]]] as const) {
    try {
      execFileSync(cmd, [...args], { stdio: 'ignore', timeout: 10_000 });
      return;
    } catch {
      // Not mounted, or this helper is missing: try the next one.
    }
  }
}

function isLoopback(host: string): boolean {
  const h = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

export class DaemonManager implements RafsMounter {
  private readonly daemons = new Map<string, Daemon>();
  private readonly instances = new Map<string, InstanceRecord>();
  /** Per-key serialisation of mounts and daemon starts. */
  private readonly locks = new Map<string, Promise<unknown>>();
  private timer?: NodeJS.Timeout;
  private credTimer?: NodeJS.Timeout;
  private closed = false;
  private readonly pullAuth: PullAuth;
  /** The credentials each instance was last given (memory only). */
  private readonly authOf = new Map<string, ImageAuth>();

  constructor(private readonly o: DaemonManagerOptions) {
    for (const d of ['mnt', 'socket', 'logs']) fs.mkdirSync(path.join(o.root, d), { recursive: true, mode: 0o700 });
    fs.mkdirSync(o.cacheDir, { recursive: true });
    const tpl = (o.template.device as { backend?: { config?: { auth?: unknown; host?: unknown } } } | undefined)?.backend?.config;
    this.pullAuth = o.pullAuth ?? new PullAuth({ template: tpl });
  }

  private serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return next;
  }

  /** Finds recorded daemons again (adopting live ones, restarting dead ones) and starts the liveness poll. */
  async recover(): Promise<void> {
    for (const inst of this.o.store.records<InstanceRecord>('instance')) {
      if (inst.config.device.backend.config.auth !== undefined) {
        // A record from before credentials were kept out of the store.
        delete inst.config.device.backend.config.auth;
        this.o.store.tx(() => this.o.store.putRecord('instance', inst.snapshotId, inst));
      }
      this.instances.set(inst.snapshotId, inst);
    }
    for (const rec of this.o.store.records<DaemonRecord>('daemon')) {
      const d: Daemon = { rec, client: new NydusdClient(rec.apiSock, 10_000) };
      this.daemons.set(rec.id, d);
      const alive = pidAlive(rec.pid, rec.apiSock) && (await this.state(d)) === 'RUNNING';
      if (alive) {
        log.info({ daemon: rec.id, pid: rec.pid }, 'adopted running nydusd');
        this.o.metrics?.daemonEvents.inc({ nydusd_event: 'recovered' });
      } else if (this.o.recoverPolicy === 'restart') {
        log.warn({ daemon: rec.id, pid: rec.pid }, 'recorded nydusd is gone: restarting it');
        await this.restart(d).catch((err: Error) => log.error({ daemon: rec.id, err: err.message }, 'restart failed'));
      }
      // Keep the daemon's mirrors in step with certs.d from now on.
      const hosts = new Set([...this.instances.values()].filter((i) => i.daemonId === rec.id).map((i) => i.registry));
      for (const registry of hosts) await this.o.mirrors?.add({ apiSock: rec.apiSock, registry });
    }
    // The shared daemon is started now rather than on the first container: a cold start then
    // does not wait for a process to boot (upstream does the same).
    if (this.o.mode === 'shared' && !this.daemons.has(SHARED_ID)) {
      void this.daemonFor('').catch((err: Error) => log.error({ err: err.message }, 'starting the shared nydusd failed; retried on the first mount'));
    }
    this.updateGauges();
    const poll = this.o.pollMs ?? 1000;
    this.timer = setInterval(() => void this.checkLiveness(), poll);
    this.timer.unref();
    // Adopted daemons hold whatever credentials they had: bring them up to date, then follow changes.
    this.pullAuth.watch(() => void this.refreshCredentials());
    this.credTimer = setInterval(() => void this.refreshCredentials(), this.o.credentialRefreshMs ?? 60_000);
    this.credTimer.unref();
    await this.refreshCredentials();
  }

  /** Credentials for an instance's image, resolved now. */
  private resolveAuth(inst: { snapshotId: string; ref?: string }, labels?: Record<string, string>): Promise<ImageAuth> {
    if (!inst.ref) return Promise.resolve({ from: 'none' });
    return this.pullAuth.resolve(inst.ref, labels ?? this.o.store.labelsOfId(Number(inst.snapshotId)) ?? {});
  }

  /**
   * Resolves every instance's credentials again and pushes those that changed to the running
   * daemon (`PUT /api/v1/config`). Label credentials do not change after the pull.
   */
  private refreshCredentials(): Promise<void> {
    return this.serial('credentials', async () => {
      for (const inst of [...this.instances.values()]) {
        if (this.closed) return;
        const prev = this.authOf.get(inst.snapshotId);
        if (prev?.from === 'labels') continue;
        const d = this.daemons.get(inst.daemonId);
        if (!d || d.restarting) continue;
        const next = await this.resolveAuth(inst);
        if (prev && prev.auth === next.auth) continue;
        try {
          await d.client.call('PUT', `/api/v1/config?id=${encodeURIComponent(inst.mountpoint)}`, { registry_auth: next.auth ?? '' });
          this.authOf.set(inst.snapshotId, next);
          log.info({ snapshot: inst.snapshotId, daemon: d.rec.id, from: next.from }, 'registry credentials updated in the running nydusd');
        } catch (err) {
          log.warn({ snapshot: inst.snapshotId, daemon: d.rec.id, err: (err as Error).message }, 'pushing registry credentials failed; retried on the next change');
        }
      }
    });
  }

  /** The config as sent to nydusd: with the image's credentials, if any. */
  private withAuth(config: NydusdJson, a: ImageAuth): NydusdJson {
    if (!a.auth) return config;
    const out = JSON.parse(JSON.stringify(config)) as NydusdJson;
    out.device.backend.config.auth = a.auth;
    return out;
  }

  private async state(d: Daemon): Promise<string> {
    try {
      return (await d.client.daemonInfo()).state;
    } catch {
      return 'UNREACHABLE';
    }
  }

  private updateGauges(): void {
    this.o.metrics?.daemons.set(this.daemons.size);
    this.o.metrics?.instances.set(this.instances.size);
  }

  private async checkLiveness(): Promise<void> {
    if (this.closed) return;
    for (const d of this.daemons.values()) {
      if (d.restarting || pidAlive(d.rec.pid, d.rec.apiSock)) continue;
      log.warn({ daemon: d.rec.id, pid: d.rec.pid }, 'nydusd died');
      this.o.metrics?.daemonEvents.inc({ nydusd_event: 'died' });
      if (this.o.recoverPolicy !== 'restart') continue;
      d.restarting = this.serial(`daemon:${d.rec.id}`, () => this.restart(d))
        .catch((err: Error) => log.error({ daemon: d.rec.id, err: err.message }, 'restart failed'))
        .finally(() => (d.restarting = undefined));
    }
  }

  /** Clears a dead daemon's leftovers, spawns it again and remounts its instances. */
  private async restart(d: Daemon): Promise<void> {
    const mine = [...this.instances.values()].filter((i) => i.daemonId === d.rec.id);
    for (const i of mine) detach(i.mountpoint);
    await this.spawnDaemon(d);
    for (const i of mine) {
      fs.mkdirSync(i.mountpoint, { recursive: true });
      const a = await this.resolveAuth(i);
      await d.client.mount(i.mountpoint, i.bootstrap, this.withAuth(this.withMirrors(i), a));
      this.authOf.set(i.snapshotId, a);
    }
    this.o.metrics?.daemonEvents.inc({ nydusd_event: 'restarted' });
    log.info({ daemon: d.rec.id, pid: d.rec.pid, instances: mine.length }, 'nydusd restarted');
  }

  /** Spawns nydusd for `d`, waits for RUNNING and records it. */
  private async spawnDaemon(d: Daemon): Promise<void> {
    fs.mkdirSync(path.dirname(d.rec.apiSock), { recursive: true, mode: 0o700 });
    fs.rmSync(d.rec.apiSock, { force: true });
    const args = ['--apisock', d.rec.apiSock, '--id', d.rec.id, '--log-level', this.o.logLevel];
    let out: number | 'inherit' = 'inherit';
    if (!this.o.logToStdout) {
      const logDir = path.join(this.o.root, 'logs', d.rec.id);
      fs.mkdirSync(logDir, { recursive: true });
      out = fs.openSync(path.join(logDir, 'nydusd.log'), 'a');
    }
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CREDENTIAL_ENV.test(k)));
    const proc = spawn(this.o.nydusdPath, args, { stdio: ['ignore', out, out], detached: true, env });
    if (typeof out === 'number') fs.closeSync(out);
    proc.unref();
    const spawnError = new Promise<never>((_, reject) => proc.once('error', (e) => reject(new Error(`spawn ${this.o.nydusdPath}: ${e.message}`))));
    spawnError.catch(() => undefined);
    d.proc = proc;
    d.rec.pid = proc.pid ?? 0;
    this.o.store.tx(() => this.o.store.putRecord('daemon', d.rec.id, d.rec));
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 30_000);
    let last = 'not started';
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw unavailable(`nydusd ${d.rec.id} exited (${proc.exitCode ?? proc.signalCode}) before RUNNING; see its log`);
      last = await Promise.race([this.state(d), spawnError]);
      if (last === 'RUNNING') {
        this.o.metrics?.daemonEvents.inc({ nydusd_event: 'started' });
        log.info({ daemon: d.rec.id, pid: d.rec.pid }, 'nydusd running');
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    throw unavailable(`nydusd ${d.rec.id} did not reach RUNNING within ${this.o.startTimeoutMs ?? 30_000} ms (last: ${last})`);
  }

  /** The daemon that serves `snapshotId`, started if needed. */
  private daemonFor(snapshotId: string): Promise<Daemon> {
    const id = this.o.mode === 'shared' ? SHARED_ID : `d${snapshotId}-${crypto.randomBytes(3).toString('hex')}`;
    const existing = this.o.mode === 'shared' ? this.daemons.get(SHARED_ID) : [...this.daemons.values()].find((d) => d.rec.owner === snapshotId);
    if (existing) return existing.restarting ? existing.restarting.then(() => existing) : Promise.resolve(existing);
    return this.serial('daemon-start', async () => {
      const again = this.o.mode === 'shared' ? this.daemons.get(SHARED_ID) : undefined;
      if (again) return again;
      const rec: DaemonRecord = { id, pid: 0, apiSock: path.join(this.o.root, 'socket', id, 'api.sock') };
      if (this.o.mode === 'dedicated') rec.owner = snapshotId;
      const d: Daemon = { rec, client: new NydusdClient(rec.apiSock, 30_000) };
      await this.spawnDaemon(d);
      this.daemons.set(id, d);
      this.updateGauges();
      return d;
    });
  }

  /** The per-instance nydusd config: template + registry of the image + cache dir; no credentials. */
  private instanceConfig(meta: MetaLayer): { registry: string; ref: string; config: NydusdJson } {
    const ref = L.imageRef(meta.labels);
    if (!ref) {
      throw failedPrecondition(
        `nydus image of snapshot ${meta.snapshotId} has no image reference label (${L.CRI_IMAGE_REF} or ${L.STARGZ_REFERENCE}): pull it with ./bin/ctr-remote images rpull, nerdctl, or CRI with disable_snapshot_annotations = false`,
      );
    }
    const r = parseReference(ref);
    const t = JSON.parse(JSON.stringify(this.o.template)) as Partial<NydusdJson>;
    const device = (t.device ?? {}) as Partial<NydusdJson['device']>;
    const backend = device.backend ?? { type: 'registry', config: {} };
    const host = apiHost(r.registry);
    backend.config = { ...(backend.config ?? {}), host, repo: r.repository };
    delete backend.config.auth; // the image's own credentials are added when it is mounted
    // containerd's rules: registries on loopback speak plain HTTP, and so does a registry whose
    // certs.d hosts.toml names an http:// server.
    const hosts = this.o.mirrors?.certs.hostsFor(r.registry);
    const server = hosts?.server;
    if (isLoopback(host) || server?.startsWith('http://')) backend.config.scheme = 'http';
    // hosts.toml's top-level ca / skip_verify are, in containerd, the registry's own TLS settings.
    if (hosts?.serverTls?.ca.length) backend.config.ca_cert_files = [...((backend.config.ca_cert_files as string[] | undefined) ?? []), ...hosts.serverTls.ca];
    if (hosts?.serverTls?.skipVerify !== undefined) backend.config.skip_verify = hosts.serverTls.skipVerify;
    const cache = device.cache ?? { type: 'blobcache' };
    cache.config = { ...(cache.config ?? {}), work_dir: this.o.cacheDir };
    if (this.o.fsDriver === 'erofs') cache.type = 'erofs';
    const config: NydusdJson = { ...t, device: { ...device, id: `/${meta.snapshotId}`, backend, cache } };
    return { registry: r.registry, ref, config };
  }

  /** The config with the certs.d mirrors for its registry in force now (if any are configured). */
  private withMirrors(inst: { registry: string; config: NydusdJson }): NydusdJson {
    const mirrors = this.o.mirrors?.certs.mirrorsFor(inst.registry) ?? [];
    if (mirrors.length === 0) return inst.config;
    const out = JSON.parse(JSON.stringify(inst.config)) as NydusdJson;
    out.device.backend.config.mirrors = mirrors.map(mirrorToJson);
    return out;
  }

  async mount(meta: MetaLayer): Promise<string> {
    return this.serial(`instance:${meta.snapshotId}`, async () => {
      const known = this.instances.get(meta.snapshotId);
      if (known) {
        const d = this.daemons.get(known.daemonId);
        if (d?.restarting) await d.restarting;
        return known.mountpoint;
      }
      const { registry, ref, config } = this.instanceConfig(meta);
      const auth = await this.resolveAuth({ snapshotId: meta.snapshotId, ref }, meta.labels);
      const d = await this.daemonFor(meta.snapshotId);
      const mountpoint = path.join(this.o.root, 'mnt', meta.snapshotId);
      detach(mountpoint);
      fs.mkdirSync(mountpoint, { recursive: true });
      const sent = (): NydusdJson => this.withAuth(this.withMirrors({ registry, config }), auth);
      try {
        await d.client.mount(mountpoint, meta.bootstrap, sent());
      } catch (err) {
        // The daemon may still hold an instance there from before a snapshotter crash: replace it.
        log.warn({ snapshot: meta.snapshotId, err: (err as Error).message }, 'mount refused; replacing a stale instance');
        await d.client.umount(mountpoint).catch(() => undefined);
        detach(mountpoint);
        await d.client.mount(mountpoint, meta.bootstrap, sent());
      }
      this.authOf.set(meta.snapshotId, auth);
      const inst: InstanceRecord = { snapshotId: meta.snapshotId, daemonId: d.rec.id, mountpoint, bootstrap: meta.bootstrap, registry, ref, config };
      this.o.store.tx(() => this.o.store.putRecord('instance', meta.snapshotId, inst));
      this.instances.set(meta.snapshotId, inst);
      this.updateGauges();
      await this.o.mirrors?.add({ apiSock: d.rec.apiSock, registry });
      log.info({ snapshot: meta.snapshotId, daemon: d.rec.id, mountpoint, image: ref, credentials: auth.from }, 'rafs instance mounted');
      return mountpoint;
    });
  }

  async umount(snapshotId: string): Promise<void> {
    return this.serial(`instance:${snapshotId}`, async () => {
      const inst = this.instances.get(snapshotId);
      if (!inst) return;
      const d = this.daemons.get(inst.daemonId);
      if (d) await d.client.umount(inst.mountpoint).catch((err: Error) => log.warn({ snapshot: snapshotId, err: err.message }, 'umount via API failed; detaching'));
      detach(inst.mountpoint);
      fs.rmSync(inst.mountpoint, { recursive: true, force: true });
      this.o.store.tx(() => this.o.store.deleteRecord('instance', snapshotId));
      this.instances.delete(snapshotId);
      this.authOf.delete(snapshotId);
      // A dedicated daemon lives as long as its image.
      if (d && d.rec.owner === snapshotId) await this.stopDaemon(d);
      this.updateGauges();
      log.info({ snapshot: snapshotId }, 'rafs instance unmounted');
    });
  }

  mounted(): string[] {
    return [...this.instances.keys()];
  }

  /** The config an instance runs with now (mirrors included); for nydus-overlayfs mounts. */
  config(snapshotId: string): Record<string, unknown> | undefined {
    const inst = this.instances.get(snapshotId);
    return inst ? this.withMirrors(inst) : undefined;
  }

  /** Daemons known now: id, pid, API socket. */
  list(): DaemonRecord[] {
    return [...this.daemons.values()].map((d) => ({ ...d.rec }));
  }

  private async stopDaemon(d: Daemon): Promise<void> {
    try {
      if (pidAlive(d.rec.pid, d.rec.apiSock)) process.kill(d.rec.pid, 'SIGTERM');
    } catch {
      // Already gone.
    }
    for (let i = 0; i < 100 && pidAlive(d.rec.pid, d.rec.apiSock); i++) await new Promise((r) => setTimeout(r, 50));
    if (pidAlive(d.rec.pid, d.rec.apiSock)) process.kill(d.rec.pid, 'SIGKILL');
    this.daemons.delete(d.rec.id);
    this.o.mirrors?.remove(d.rec.apiSock);
    this.o.store.tx(() => this.o.store.deleteRecord('daemon', d.rec.id));
  }

  /** Stops the liveness poll; daemons keep running (containers depend on them). */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.credTimer) clearInterval(this.credTimer);
    this.pullAuth.close();
  }

  /** Unmounts every instance and stops every daemon (cleanup_on_close, tests). */
  async destroyAll(): Promise<void> {
    this.close();
    // A daemon still starting (the shared one, started early) must not be left behind.
    await this.locks.get('daemon-start');
    for (const id of this.mounted()) await this.umount(id);
    for (const d of [...this.daemons.values()]) await this.stopDaemon(d);
  }
}
