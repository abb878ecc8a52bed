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
 *  - recover_policy "failover" (shared mode): this manager is the daemon's supervisor. It opens
 *    /dev/fuse and mounts it at <root>/mnt itself, keeps that descriptor and spawns nydusd with a
 *    copy as fd 3 (`--supervisor <state file>`); the instances are directories of that one mount.
 *    When nydusd dies, a successor is spawned on the same descriptor (`--upgrade`), takes over the
 *    dead one's state, gets its instances mounted again through the API and only then starts
 *    reading, re-sending what the dead one left unanswered (failover_policy). Containers see a
 *    pause, not an error. `upgrade()` replaces a running nydusd the same way (hot upgrade). Node
 *    cannot pass a descriptor to a process that is already running (no SCM_RIGHTS), which is why
 *    the manager mounts and spawns rather than receiving the descriptor from nydusd as upstream's
 *    supervisor does; docs/snapshotter.md "Failover" has the sequence.
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
import { ChildProcess, spawn, StdioOptions } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { NydusdClient } from '../daemon/client';
import { mountFuse } from '../fuse/device';
import { detach, detachSync } from '../fuse/unmount';
import { mirrorToJson } from '../mirrors/nydus-json';
import type { MirrorsSync } from '../mirrors/push';
import { apiHost, parseReference } from '../registry/reference';
import { logger } from '../util/log';
import { failedPrecondition, unavailable } from './errors';
import * as L from './labels';
import type { Metrics } from './metrics';
import type { MetaLayer, RafsMounter } from './snapshotter';
import type { MetaStore } from './store';
import type { CriKeychain } from './cri-image-proxy';
import { ImageAuth, PullAuth } from './pull-auth';

const log = logger('daemon-manager');

export interface DaemonManagerOptions {
  root: string;
  store: MetaStore;
  mode: 'shared' | 'dedicated';
  nydusdPath: string;
  /** The nydusd JSON template (already parsed JSON). */
  template: Record<string, unknown>;
  recoverPolicy: 'restart' | 'failover' | 'none';
  /** nydusd's --failover-policy under recover_policy "failover" (default resend). */
  failoverPolicy?: 'resend' | 'flush' | 'none';
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
  /** Credentials from CRI pulls (`enable_cri_keychain`), for the default PullAuth. */
  criKeychain?: CriKeychain;
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
  /** Failover: this manager's copy of the daemon's /dev/fuse descriptor (the connection outlives nydusd). */
  fuseFd?: number;
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

/** The API socket of an upgraded daemon: api.sock, api-1.sock, api-2.sock... (the old one still listens). */
function nextApiSock(sock: string): string {
  const m = /api(?:-(\d+))?\.sock$/.exec(path.basename(sock));
  return path.join(path.dirname(sock), `api-${Number(m?.[1] ?? 0) + 1}.sock`);
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
    for (const d of ['mnt', 'socket', 'logs']) {
      const dir = path.join(o.root, d);
      try {
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      } catch (e) {
        // A supervised daemon's FUSE mount whose connection died with both processes.
        if ((e as NodeJS.ErrnoException).code !== 'ENOTCONN') throw e;
        detachSync(dir);
        fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      }
    }
    fs.mkdirSync(o.cacheDir, { recursive: true });
    const tpl = (o.template.device as { backend?: { config?: { auth?: unknown; host?: unknown } } } | undefined)?.backend?.config;
    this.pullAuth = o.pullAuth ?? new PullAuth({ template: tpl, cri: o.criKeychain });
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
      if (rec.owner !== undefined && this.mine(d).length === 0) {
        // A dedicated daemon whose image was never mounted in it (the snapshotter died while it
        // started): nothing needs it, and nothing else would ever stop it.
        log.warn({ daemon: rec.id, pid: rec.pid }, 'recorded dedicated nydusd serves no instance: stopping it');
        await this.stopDaemon(d);
        continue;
      }
      const running = pidAlive(rec.pid, rec.apiSock);
      const alive = running && (await this.state(d)) === 'RUNNING';
      if (alive) {
        log.info({ daemon: rec.id, pid: rec.pid }, 'adopted running nydusd');
        this.o.metrics?.daemonEvents.inc({ nydusd_event: 'recovered' });
        // The descriptor copy died with the previous snapshotter process and cannot be had back
        // from nydusd (no SCM_RIGHTS in Node): this daemon is restarted, not failed over, if it dies.
        if (this.failover) log.warn({ daemon: rec.id }, 'adopted nydusd: its FUSE connection is not kept here; until its next restart it cannot fail over');
      } else if (this.o.recoverPolicy !== 'none') {
        // Alive but not RUNNING: a start cut short by the previous snapshotter's death, or hung.
        // Its replacement takes the same socket and mountpoints, so it must not live on beside it.
        if (running) process.kill(rec.pid, 'SIGKILL');
        log.warn({ daemon: rec.id, pid: rec.pid, killed: running }, running ? 'recorded nydusd does not answer RUNNING: restarting it' : 'recorded nydusd is gone: restarting it');
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
        if (prev?.from === 'labels' || inst.config.device.backend.type !== 'registry') continue;
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
    if (!a.auth || config.device.backend.type !== 'registry') return config;
    const out = JSON.parse(JSON.stringify(config)) as NydusdJson;
    out.device.backend.config.auth = a.auth;
    return out;
  }

  private async state(d: Daemon | NydusdClient): Promise<string> {
    try {
      return (await (d instanceof NydusdClient ? d : d.client).daemonInfo()).state;
    } catch {
      return 'UNREACHABLE';
    }
  }

  /** recover_policy "failover" applies to the shared daemon: one FUSE connection this manager keeps. */
  private get failover(): boolean {
    return this.o.recoverPolicy === 'failover' && this.o.mode === 'shared';
  }

  /** The supervised daemon's one FUSE mount; its instances are the directories in it. */
  private mountRoot(): string {
    return path.join(this.o.root, 'mnt');
  }

  /** The failover state file nydusd keeps (`--supervisor`), beside its API socket. */
  private statePath(d: Daemon): string {
    return path.join(path.dirname(d.rec.apiSock), 'failover.json');
  }

  /** How the daemon's API names an instance: `/ID` under a supervised daemon's mount, else the host path. */
  private apiPath(i: { mountpoint: string }): string {
    return this.failover ? `/${path.basename(i.mountpoint)}` : i.mountpoint;
  }

  private mine(d: Daemon): InstanceRecord[] {
    return [...this.instances.values()].filter((i) => i.daemonId === d.rec.id);
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
      if (this.o.recoverPolicy === 'none') continue;
      d.restarting = this.serial(`daemon:${d.rec.id}`, () => (this.failover && d.fuseFd !== undefined ? this.failoverDaemon(d) : this.restart(d)))
        .catch((err: Error) => log.error({ daemon: d.rec.id, err: err.message }, 'restart failed'))
        .finally(() => (d.restarting = undefined));
    }
  }

  /** Clears a dead daemon's leftovers, spawns it again and remounts its instances. */
  private async restart(d: Daemon): Promise<void> {
    const mine = this.mine(d);
    if (!this.failover) for (const i of mine) await detach(i.mountpoint);
    await this.spawnDaemon(d);
    for (const i of mine) {
      if (!this.failover) await fs.promises.mkdir(i.mountpoint, { recursive: true });
      const a = await this.resolveAuth(i);
      await d.client.mount(this.apiPath(i), i.bootstrap, this.withAuth(this.withMirrors(i), a));
      this.authOf.set(i.snapshotId, a);
    }
    this.o.metrics?.daemonEvents.inc({ nydusd_event: 'restarted' });
    log.info({ daemon: d.rec.id, pid: d.rec.pid, instances: mine.length }, 'nydusd restarted');
  }

  /**
   * A dead supervised daemon's successor: spawned on the connection this manager kept, it takes
   * over, gets the instances mounted again and starts; the kernel re-sends what the dead one had
   * read (failover_policy). If that fails the daemon is restarted the plain way.
   */
  private async failoverDaemon(d: Daemon): Promise<void> {
    try {
      await this.succeed(d, d.rec.apiSock);
    } catch (err) {
      log.error({ daemon: d.rec.id, err: (err as Error).message }, 'failover failed; restarting nydusd (its mounts break)');
      await this.restart(d);
      return;
    }
    this.o.metrics?.daemonEvents.inc({ nydusd_event: 'failover' });
    log.info({ daemon: d.rec.id, pid: d.rec.pid, instances: this.mine(d).length }, 'nydusd failed over');
  }

  /**
   * Hot upgrade (upstream's system controller `PUT /api/v1/daemons/upgrade`): the shared nydusd is
   * replaced by `nydusdPath` (default: the configured one) under running containers, the way a
   * failover goes, except that the old daemon exits only once its successor holds every instance.
   */
  async upgrade(nydusdPath?: string): Promise<{ id: string; pid: number }[]> {
    const d = this.daemons.get(SHARED_ID);
    if (!this.failover || !d || d.fuseFd === undefined) {
      throw failedPrecondition('hot upgrade needs recover_policy "failover", daemon_mode "shared" and a shared nydusd started by this snapshotter (it keeps the FUSE connection)');
    }
    if (nydusdPath !== undefined && !fs.statSync(nydusdPath, { throwIfNoEntry: false })?.isFile()) throw failedPrecondition(`nydusd_path: ${nydusdPath}: not a file`);
    if (d.restarting) await d.restarting;
    const run = this.serial(`daemon:${d.rec.id}`, async () => {
      const old = { pid: d.rec.pid, sock: d.rec.apiSock, client: d.client };
      await old.client.call('PUT', '/api/v1/daemon/fuse/sendfd');
      await this.succeed(d, nextApiSock(old.sock), nydusdPath, async () => {
        await old.client.call('PUT', '/api/v1/daemon/exit');
        for (let i = 0; i < 200 && pidAlive(old.pid, old.sock); i++) await new Promise((r) => setTimeout(r, 50));
        if (pidAlive(old.pid, old.sock)) process.kill(old.pid, 'SIGKILL');
      });
      this.o.metrics?.daemonEvents.inc({ nydusd_event: 'upgraded' });
      log.info({ daemon: d.rec.id, pid: d.rec.pid, nydusd: nydusdPath ?? this.o.nydusdPath }, 'nydusd upgraded');
    });
    d.restarting = run.then(
      () => undefined,
      () => undefined,
    );
    void d.restarting.then(() => (d.restarting = undefined));
    await run;
    return [{ id: d.rec.id, pid: d.rec.pid }];
  }

  /**
   * Spawns a successor of `d` on the FUSE connection kept here (`--upgrade`), hands it the state
   * (takeover) and the instances, runs `beforeStart` (an upgrade's old daemon leaves then) and starts
   * it: only now does it read the connection and have the kernel re-send what was left unanswered.
   */
  private async succeed(d: Daemon, apiSock: string, nydusdPath?: string, beforeStart?: () => Promise<void>): Promise<void> {
    const { proc, client } = await this.spawnProc(d, apiSock, { successor: true, nydusdPath });
    try {
      await client.call('PUT', '/api/v1/daemon/fuse/takeover');
      for (const i of this.mine(d)) {
        const a = await this.resolveAuth(i);
        await client.mount(this.apiPath(i), i.bootstrap, this.withAuth(this.withMirrors(i), a));
        this.authOf.set(i.snapshotId, a);
      }
      await beforeStart?.();
      await client.call('PUT', '/api/v1/daemon/start');
    } catch (err) {
      proc.kill('SIGKILL');
      throw err;
    }
    const oldSock = d.rec.apiSock;
    d.proc = proc;
    d.client = client;
    d.rec.pid = proc.pid ?? 0;
    d.rec.apiSock = apiSock;
    this.o.store.tx(() => this.o.store.putRecord('daemon', d.rec.id, d.rec));
    if (oldSock !== apiSock) {
      fs.rmSync(oldSock, { force: true });
      this.o.mirrors?.remove(oldSock);
      for (const registry of new Set(this.mine(d).map((i) => i.registry))) await this.o.mirrors?.add({ apiSock, registry });
    }
  }

  /**
   * A new FUSE connection for a supervised daemon: whatever a previous one left at the mount root is
   * detached, /dev/fuse opened and mounted there; this manager keeps the descriptor.
   */
  private async openConnection(d: Daemon): Promise<void> {
    if (d.fuseFd !== undefined) fs.closeSync(d.fuseFd);
    d.fuseFd = undefined;
    const root = this.mountRoot();
    await detach(root);
    await fs.promises.rm(this.statePath(d), { force: true });
    d.fuseFd = await mountFuse({ mountpoint: root, source: 'nydus', subtype: 'rafs', options: ['ro', 'allow_other', 'default_permissions'] });
  }

  /**
   * Spawns nydusd for `d` (on a new FUSE connection when supervised) and waits for RUNNING. It is
   * recorded as soon as it has a pid, as upstream does: a snapshotter killed while the daemon boots
   * leaves a record (recover() and whoever stops daemons by PID find it), never an unknown process.
   */
  private async spawnDaemon(d: Daemon): Promise<void> {
    if (this.failover) await this.openConnection(d);
    const record = (pid: number): void => {
      d.rec.pid = pid;
      this.o.store.tx(() => this.o.store.putRecord('daemon', d.rec.id, d.rec));
    };
    const { proc } = await this.spawnProc(d, d.rec.apiSock, { onSpawned: record });
    d.proc = proc;
  }

  /** Spawns nydusd on `apiSock` and waits for RUNNING (a successor: INIT, waiting for takeover). */
  private async spawnProc(d: Daemon, apiSock: string, opts: { successor?: boolean; nydusdPath?: string; onSpawned?: (pid: number) => void } = {}): Promise<{ proc: ChildProcess; client: NydusdClient }> {
    await fs.promises.mkdir(path.dirname(apiSock), { recursive: true, mode: 0o700 });
    await fs.promises.rm(apiSock, { force: true });
    const args = ['--apisock', apiSock, '--id', d.rec.id, '--log-level', this.o.logLevel];
    if (d.fuseFd !== undefined) {
      args.push('--mountpoint', this.mountRoot(), '--supervisor', this.statePath(d), '--failover-policy', this.o.failoverPolicy ?? 'resend');
      if (opts.successor) args.push('--upgrade');
    }
    let logFile: fs.promises.FileHandle | undefined;
    if (!this.o.logToStdout) {
      const logDir = path.join(this.o.root, 'logs', d.rec.id);
      await fs.promises.mkdir(logDir, { recursive: true });
      logFile = await fs.promises.open(path.join(logDir, 'nydusd.log'), 'a');
    }
    const out = logFile?.fd ?? 'inherit';
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !CREDENTIAL_ENV.test(k)));
    // A supervised daemon gets the connection as its fd 3; this process keeps its own copy.
    const stdio: StdioOptions = d.fuseFd !== undefined ? ['ignore', out, out, d.fuseFd] : ['ignore', out, out];
    const bin = opts.nydusdPath ?? this.o.nydusdPath;
    const proc = spawn(bin, args, { stdio, detached: true, env });
    if (proc.pid) opts.onSpawned?.(proc.pid);
    await logFile?.close();
    proc.unref();
    const spawnError = new Promise<never>((_, reject) => proc.once('error', (e) => reject(new Error(`spawn ${bin}: ${e.message}`))));
    spawnError.catch(() => undefined);
    const client = new NydusdClient(apiSock, 30_000);
    const want = opts.successor ? 'INIT' : 'RUNNING';
    const deadline = Date.now() + (this.o.startTimeoutMs ?? 30_000);
    let last = 'not started';
    for (let i = 0; i < 1000 && Date.now() < deadline; i++) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw unavailable(`nydusd ${d.rec.id} exited (${proc.exitCode ?? proc.signalCode}) before ${want}; see its log`);
      last = await Promise.race([this.state(client), spawnError]);
      if (last === want) {
        if (!opts.successor) this.o.metrics?.daemonEvents.inc({ nydusd_event: 'started' });
        log.info({ daemon: d.rec.id, pid: proc.pid, state: want }, opts.successor ? 'nydusd successor waiting for takeover' : 'nydusd running');
        return { proc, client };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGKILL');
    throw unavailable(`nydusd ${d.rec.id} did not reach ${want} within ${this.o.startTimeoutMs ?? 30_000} ms (last: ${last})`);
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
      try {
        await this.spawnDaemon(d);
      } catch (err) {
        // Recorded at spawn, it never came up (and spawnProc killed it): forget it.
        this.o.store.tx(() => this.o.store.deleteRecord('daemon', id));
        throw err;
      }
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
    const cache = device.cache ?? { type: 'blobcache' };
    cache.config = { ...(cache.config ?? {}), work_dir: this.o.cacheDir };
    if (this.o.fsDriver === 'erofs') cache.type = 'erofs';
    // s3, oss and localfs backends name where the blobs are themselves: passed on unchanged.
    if (backend.type !== 'registry') return { registry: r.registry, ref, config: { ...t, device: { ...device, id: `/${meta.snapshotId}`, backend, cache } } as NydusdJson };
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
    const config: NydusdJson = { ...t, device: { ...device, id: `/${meta.snapshotId}`, backend, cache } };
    return { registry: r.registry, ref, config };
  }

  /** The config with the certs.d mirrors for its registry in force now (if any are configured). */
  private withMirrors(inst: { registry: string; config: NydusdJson }): NydusdJson {
    if (inst.config.device.backend.type !== 'registry') return inst.config;
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
      // Under a supervised daemon the directory is its FUSE mount's, made by the mount itself.
      // Otherwise a mount left there (a dead daemon's) goes first; detach spawns nothing when
      // mountinfo shows none, which is the usual case.
      if (!this.failover) {
        await detach(mountpoint);
        await fs.promises.mkdir(mountpoint, { recursive: true });
      }
      const at = this.apiPath({ mountpoint });
      const sent = (): NydusdJson => this.withAuth(this.withMirrors({ registry, config }), auth);
      try {
        await d.client.mount(at, meta.bootstrap, sent());
      } catch (err) {
        // The daemon may still hold an instance there from before a snapshotter crash: replace it.
        log.warn({ snapshot: meta.snapshotId, err: (err as Error).message }, 'mount refused; replacing a stale instance');
        await d.client.umount(at).catch(() => undefined);
        if (!this.failover) await detach(mountpoint);
        await d.client.mount(at, meta.bootstrap, sent());
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
      if (d) await d.client.umount(this.apiPath(inst)).catch((err: Error) => log.warn({ snapshot: snapshotId, err: err.message }, 'umount via API failed; detaching'));
      if (!this.failover) {
        await detach(inst.mountpoint);
        await fs.promises.rm(inst.mountpoint, { recursive: true, force: true });
      }
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
    if (d.fuseFd !== undefined) {
      // nydusd unmounted on SIGTERM; after a SIGKILL the mount is still there.
      await detach(this.mountRoot());
      fs.closeSync(d.fuseFd);
      d.fuseFd = undefined;
    }
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
