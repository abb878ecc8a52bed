/**
 * nydusd: a process serving one or more rafs instances over FUSE, with an HTTP API.
 *
 * Lifecycle (the states `GET /api/v1/daemon` reports, after upstream's state machine):
 *   INIT     API socket up, nothing mounted yet
 *   READY    the command-line image is mounted, prefetch not yet started
 *   RUNNING  serving; a shared daemon (no --bootstrap) goes straight here and mounts through the API
 *   STOPPED  shutting down: prefetch stopped, FUSE unmounted, chunk maps flushed
 *
 * Contract: `mount` is all-or-nothing (a failed mount leaves no FUSE mount and no instance);
 * mountpoints are unique; `umount` of one instance never disturbs the others; `shutdown` is
 * idempotent and always flushes every cache it opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlobCacheManager } from '../cache/blob-cache';
import { ChunkPipeline } from '../fetch/pipeline';
import { addStats, FetchMetrics, SourceStats } from '../fetch/metrics';
import type { ChunkSource } from '../fetch/source';
import { logger, setLogLevel } from '../util/log';
import { ApiFault, ApiServer, ApiRequest } from './api';
import { ConfigError, NydusdConfig, parseNydusdConfig, parseNydusdConfigText } from './config';
import { FuseMount } from './fuse';
import { discardPremount, premountFuse } from '../fuse/session';
import { EROFS_MAGIC, SB, SB_OFFSET } from '../format/layout';
import { BlobView } from './blob-view';
import { ErofsMount, tryKernelMount } from './erofs-mount';
import { cleanStaleMount } from './mounts';
import { Prefetcher } from './prefetch';
import { RafsInstance } from './rafs';
import { applyCertsDir, applyMirrorsUpdate, buildSources, SourceDeps } from './sources';
import type { CertsWatcher } from '../mirrors/watcher';
import type { MirrorSource } from '../fetch/mirror-set';
import type { ProxySource } from '../fetch/proxy';
import { collectGarbage } from './gc';
import { OnDemandImage } from '../format/decode';
import { IdleCollector } from './idle-gc';
import { loadedMirrorSet, loadedP2pHub, loadedProxy, watcherModule } from './optional';
import { prometheusText } from './prom';
import { hostMountpoint } from './virtual-mounts';
import { addUpstreamRoutes } from './upstream-api';
import { SupervisedConnection, SupervisedOptions } from './supervised';

const log = logger('nydusd');

export type DaemonState = 'INIT' | 'READY' | 'RUNNING' | 'STOPPED';

export const VERSION = { package_ver: '0.1.0', git_commit: 'nydus-ts', build_time: '', profile: 'release', rustc: `node ${process.version}` };

export interface MountedInstance {
  mountpoint: string;
  bootstrap: string;
  /** Replaced by `reconfigure` (hot credential or proxy updates, remount with a new config). */
  config: NydusdConfig;
  rafs: RafsInstance;
  /** How the image is served: nydusd's FUSE mount, or the kernel's EROFS over the blob view. */
  fuse: FuseMount | ErofsMount;
  pipeline: ChunkPipeline;
  metrics: FetchMetrics;
  cache: BlobCacheManager;
  prefetcher: Prefetcher;
  mountedAt: Date;
}

export interface DaemonOptions {
  id: string;
  apisock?: string;
  /** Config used by API mounts that bring none. */
  defaultConfig?: NydusdConfig;
  deps?: Partial<SourceDeps>;
  /** certs.d directory to watch; its mirrors are applied live to every instance (default off). */
  mirrorsDir?: string;
  /**
   * The daemon's --mountpoint. When set, API mountpoints and `?id=` are paths under it, as in
   * upstream's shared daemon (`/ID` is `<mountRoot>/ID`); without it they are absolute host paths.
   */
  mountRoot?: string;
  /**
   * Run under a supervisor that keeps the FUSE connection (src/daemon/supervised.ts): every
   * instance is a directory of one FUSE mount at `mountRoot`, served over the descriptor given.
   */
  supervised?: SupervisedOptions;
  /** Where the blob view of kernel EROFS mode is mounted (default: `blob-view` beside the API socket). */
  blobViewDir?: string;
}

export class Daemon {
  state: DaemonState = 'INIT';
  readonly api = new ApiServer();
  readonly instances = new Map<string, MountedInstance>();
  private readonly caches = new Map<string, BlobCacheManager>();
  /** Collects a burst's garbage once the mounts go quiet. */
  private readonly idleGc = new IdleCollector();
  private stopping?: Promise<void>;
  private mirrorsWatch?: CertsWatcher;
  /** The connection a supervisor keeps, when run under one. */
  readonly supervised?: SupervisedConnection;
  private blobView?: BlobView;

  constructor(readonly opts: DaemonOptions) {
    if (opts.supervised) {
      if (!opts.mountRoot) throw new Error('a supervised nydusd needs --mountpoint (its one FUSE mount)');
      this.supervised = new SupervisedConnection(opts.supervised, opts.mountRoot, () => this.idleGc.touch());
    }
    this.routes();
    addUpstreamRoutes(this);
  }

  /** The instance name a supervised daemon serves `mp` under: one directory of its mount. */
  private instanceName(mp: string): string {
    const name = path.relative(this.opts.mountRoot ?? '/', mp);
    if (!name || name.includes('/') || name.startsWith('..')) throw new ApiFault(400, 'InvalidQuery', `mountpoint: a supervised nydusd serves instances as /NAME (one directory under ${this.opts.mountRoot}), got ${mp}`);
    return name;
  }

  async listen(): Promise<void> {
    if (this.opts.mirrorsDir && !this.mirrorsWatch) {
      this.mirrorsWatch = new (watcherModule().CertsWatcher)(this.opts.mirrorsDir, { onChange: (c) => applyCertsDir(this.instances.values(), c) });
      await this.mirrorsWatch.start();
    }
    if (this.opts.apisock) {
      fs.mkdirSync(path.dirname(this.opts.apisock), { recursive: true });
      await this.api.listen(this.opts.apisock);
    }
  }

  private cacheFor(workDir: string): BlobCacheManager {
    const dir = path.resolve(workDir);
    let c = this.caches.get(dir);
    if (!c) {
      c = new BlobCacheManager(dir);
      this.caches.set(dir, c);
    }
    return c;
  }

  /** Mounts `bootstrap` at `mountpoint` with `config`; prefetch starts when `startPrefetch` is set. */
  async mount(mountpoint: string, bootstrap: string, config: NydusdConfig, prefetchFiles?: string[], startPrefetch = true): Promise<MountedInstance> {
    const mp = path.resolve(mountpoint);
    const t0 = performance.now();
    if (this.instances.has(mp)) throw new ApiFault(409, 'AlreadyExists', `${mp}: already mounted by this daemon`);
    if (this.state === 'STOPPED') throw new ApiFault(503, 'Stopping', 'daemon is shutting down');
    if (!fs.existsSync(bootstrap)) throw new ApiFault(400, 'InvalidSource', `${bootstrap}: bootstrap file not found`);
    if (!this.supervised && cleanStaleMount(mp) === 'live') throw new ApiFault(409, 'MountpointBusy', `${mp}: something is already mounted there`);
    const metrics = new FetchMetrics();
    const cache = this.cacheFor(config.cache.workDir);
    const sources = buildSources(config, { metrics, certs: this.mirrorsWatch?.certs, ...this.opts.deps });
    const pipeline = new ChunkPipeline({ cache, sources, metrics, amplifyIo: config.amplifyIo, validateCache: config.digestValidate || config.cache.validate });
    // A FUSE mount needs nothing from the image: mount(8) (20-40 ms, a process of its own) runs
    // while the bootstrap loads, and the session answers the kernel's INIT once the image is ready.
    // Kernel EROFS mode needs the daemon's blob view mounted: that too is made meanwhile (once per
    // daemon), for a bootstrap that can be mounted so (a RAFS v5 one is served over FUSE, no view).
    const premounted = !this.supervised && config.cache.type !== 'erofs' ? premountFuse({ mountpoint: mp }) : undefined;
    premounted?.catch(() => undefined);
    if (!this.supervised && config.cache.type === 'erofs' && startsAsRafsV6(bootstrap)) this.blobViewOf().start().catch(() => undefined);
    let rafs: RafsInstance;
    try {
      rafs = await RafsInstance.load(bootstrap, pipeline);
      loadedP2pHub()?.attachPeers(sources, rafs.blobs, () => pipeline.sources());
    } catch (e) {
      if (premounted) await discardPremount(mp, premounted);
      await closeSources(sources);
      throw new ApiFault(400, 'InvalidBootstrap', `${bootstrap}: ${(e as Error).message}`);
    }
    // Prefetch needs the image, not the mount: its first requests (whose answers take longest on a
    // busy registry) go out while the FUSE or kernel mount is made, as upstream starts it at import.
    const prefetcher = new Prefetcher(rafs, config.fsPrefetch, prefetchFiles);
    if (startPrefetch) prefetcher.start();
    let fuse: FuseMount | ErofsMount;
    try {
      if (this.supervised) {
        // Under a supervisor every instance is a directory of its one FUSE connection.
        if (config.cache.type === 'erofs') log.warn({ mountpoint: mp }, 'kernel EROFS mode is not used under a supervisor (failover keeps one FUSE connection); serving over FUSE');
        const f = new FuseMount(rafs, mp, () => this.idleGc.touch());
        fuse = f;
        const name = this.instanceName(mp);
        const index = this.supervised.indexFor(name);
        this.supervised.root.attach(name, index, f);
        this.supervised.attached(name, index);
      } else {
        const kernel = config.cache.type === 'erofs' ? await tryKernelMount(rafs, mp, bootstrap, this.blobViewOf()) : undefined;
        const f = kernel ?? new FuseMount(rafs, mp, () => this.idleGc.touch());
        fuse = f;
        if (!kernel) await (f as FuseMount).mount(premounted);
      }
    } catch (e) {
      await prefetcher.stop();
      await closeSources(sources);
      throw e;
    }
    const inst: MountedInstance = { mountpoint: mp, bootstrap: path.resolve(bootstrap), config, rafs, fuse, pipeline, metrics, cache, prefetcher, mountedAt: new Date() };
    this.instances.set(mp, inst);
    log.info({ mountpoint: mp, bootstrap, entries: rafs.entryCount, blobs: rafs.blobs.length, backend: config.backend.type, fs_driver: driverOf(inst), ms: Math.round(performance.now() - t0) }, 'rafs instance mounted');
    // An image decoded whole leaves megabytes of garbage: collect it after the answer is on its
    // way. One opened on demand leaves little, and a full collection walks every mounted image's
    // heap just as the container's first requests arrive: the idle collector takes it later.
    if (!(rafs.image instanceof OnDemandImage)) setImmediate(collectGarbage);
    return inst;
  }

  /**
   * Serves `inst` from sources built for `config` (new credentials, proxy, mirrors) without
   * touching its FUSE mount; reads already running finish with the sources they started with.
   */
  async reconfigure(inst: MountedInstance, config: NydusdConfig): Promise<void> {
    const sources = buildSources(config, { metrics: inst.metrics, certs: this.mirrorsWatch?.certs, ...this.opts.deps });
    loadedP2pHub()?.attachPeers(sources, inst.rafs.blobs, () => inst.pipeline.sources());
    const old = inst.pipeline.sources();
    inst.pipeline.setSources(sources);
    inst.config = config;
    await closeSources(old);
    log.info({ mountpoint: inst.mountpoint, sources: sources.map((s) => s.name) }, 'rafs instance reconfigured');
  }

  async umount(mountpoint: string): Promise<void> {
    const mp = path.resolve(mountpoint);
    const inst = this.instances.get(mp);
    if (!inst) throw new ApiFault(404, 'NotFound', `${mp}: not mounted by this daemon`);
    this.instances.delete(mp);
    await inst.prefetcher.stop();
    if (this.supervised) {
      const name = this.instanceName(mp);
      this.supervised.root.detach(name);
      this.supervised.detached(name);
    }
    await inst.fuse.unmount();
    await inst.cache.flush();
    await closeSources(inst.pipeline.sources());
    log.info({ mountpoint: mp }, 'rafs instance unmounted');
  }

  /** The daemon's blob view (kernel EROFS mode); tryKernelMount mounts it on first use. */
  private blobViewOf(): BlobView {
    const dir = this.opts.blobViewDir ?? (this.opts.apisock ? path.join(path.dirname(this.opts.apisock), 'blob-view') : path.join('/run/nydusd', this.opts.id, 'blob-view'));
    this.blobView ??= new BlobView(path.resolve(dir), () => this.idleGc.touch());
    return this.blobView;
  }

  /** Starts prefetch of every mounted instance and moves to RUNNING. */
  run(): void {
    for (const i of this.instances.values()) i.prefetcher.start();
    this.state = 'RUNNING';
  }

  shutdown(): Promise<void> {
    this.stopping ??= this.doShutdown();
    return this.stopping;
  }

  /**
   * A supervised daemon's exit for a successor (`PUT /api/v1/daemon/exit`, upstream's upgrade):
   * caches are flushed and the process ends, but the FUSE mount stays and so does the state file;
   * requests this process read and did not answer are the successor's (FUSE_NOTIFY_RESEND).
   */
  async exitForSuccessor(): Promise<void> {
    this.state = 'STOPPED';
    for (const i of this.instances.values()) await i.prefetcher.stop();
    for (const c of this.caches.values()) await c.close().catch((e) => log.error({ err: (e as Error).message }, 'cache close failed'));
    log.info('exiting for a successor; the FUSE connection stays with the supervisor');
  }

  private async doShutdown(): Promise<void> {
    this.state = 'STOPPED';
    await this.mirrorsWatch?.close();
    for (const mp of [...this.instances.keys()]) {
      await this.umount(mp).catch((e) => log.error({ mountpoint: mp, err: (e as Error).message }, 'unmount failed'));
    }
    await this.supervised?.unmount();
    await this.blobView?.stop();
    this.idleGc.stop();
    for (const c of this.caches.values()) await c.close().catch((e) => log.error({ err: (e as Error).message }, 'cache close failed'));
    await loadedP2pHub()?.closeAllHubs();
    await this.api.close();
    if (this.opts.apisock) fs.rmSync(this.opts.apisock, { force: true });
  }

  /** The host path an API mountpoint names (see `DaemonOptions.mountRoot`). */
  hostMountpoint(apiPath: string): string {
    return hostMountpoint(this.opts.mountRoot, apiPath);
  }

  /** The instance an API path names; a daemon with a mountpoint also takes the host path itself (nydusctl --id). */
  findInstance(apiPath: string): MountedInstance | undefined {
    return this.instances.get(this.hostMountpoint(apiPath)) ?? (this.opts.mountRoot ? this.instances.get(path.resolve(apiPath)) : undefined);
  }

  /** Instances named by `?id=` (a mountpoint), or all of them. */
  select(q: URLSearchParams): MountedInstance[] {
    const id = q.get('id');
    if (!id) return [...this.instances.values()];
    const inst = this.findInstance(id);
    if (!inst) throw new ApiFault(404, 'NotFound', `${id}: no such rafs instance`);
    return [inst];
  }

  info(): object {
    const backends: Record<string, object> = {};
    for (const i of this.instances.values()) {
      backends[i.mountpoint] = {
        mountpoint: i.mountpoint,
        fs_type: 'rafs',
        bootstrap: i.bootstrap,
        mounted_time: i.mountedAt.toISOString(),
        backend_type: i.config.backend.type,
        mode: 'direct',
        fs_driver: driverOf(i),
        prefetch: i.config.fsPrefetch.enable,
      };
    }
    const v = this.blobView;
    // Kernel EROFS mode only: where the blob files are and what their READs delivered.
    const blobView = v?.fuseSession ? { dir: v.dir, blobs: v.blobIds(), reads: v.stats.reads, read_bytes: v.stats.bytes, read_errors: v.stats.errors } : undefined;
    return { id: this.opts.id, version: VERSION, state: this.state, supervisor: this.opts.supervised?.statePath ?? '', backend_collection: backends, ...(blobView ? { blob_view: blobView } : {}) };
  }

  backendMetrics(insts: MountedInstance[]): object {
    const sources: Record<string, SourceStats> = {};
    for (const i of insts) {
      for (const [name, s] of Object.entries(i.metrics.snapshot())) {
        const t = sources[name];
        if (!t) sources[name] = s;
        else addStats(t, s);
      }
    }
    const all = Object.values(sources);
    const sum = (f: (s: SourceStats) => number) => all.reduce((a, s) => a + f(s), 0);
    return {
      id: insts.length === 1 ? insts[0].mountpoint : '',
      backend_type: [...new Set(insts.map((i) => i.config.backend.type))].join(','),
      read_count: sum((s) => s.requests),
      read_errors: sum((s) => s.errors),
      read_amount_total: sum((s) => s.bytes),
      read_cumulative_latency_millis_total: Math.round(sum((s) => s.latencyMsTotal)),
      digest_failures: sum((s) => s.digestFailures),
      // Our addition: CPU time turning fetched chunks into verified bytes (fetch/verify-stage.ts).
      decompress_millis_total: Math.round(insts.reduce((a, i) => a + i.pipeline.clock.decompressMs, 0)),
      verify_millis_total: Math.round(insts.reduce((a, i) => a + i.pipeline.clock.verifyMs, 0)),
      sources,
      health: sourceHealth(insts),
    };
  }

  private routes(): void {
    const a = this.api;
    a.addRoute('GET', '/api/v1/daemon', () => this.info());
    a.addRoute('PUT', '/api/v1/daemon', (r) => {
      const lvl = (r.body as { log_level?: unknown } | undefined)?.log_level;
      if (typeof lvl !== 'string' || !['trace', 'debug', 'info', 'warn', 'error'].includes(lvl)) throw new ApiFault(400, 'InvalidBody', 'log_level: expected trace, debug, info, warn or error');
      setLogLevel(lvl);
      return undefined;
    });
    a.addRoute('PUT', '/api/v1/daemon/exit', () => {
      if (this.supervised) {
        // The old daemon of an upgrade leaving: the mount is not its to take down. Its FUSE readers
        // stay blocked in read(2) in libuv's pool (the connection lives on), and exiting normally
        // joins those threads: it would never finish. So it ends itself with SIGKILL once its
        // caches are flushed; what it had read and not answered is re-sent to its successor.
        setImmediate(() => void this.exitForSuccessor().finally(() => process.kill(process.pid, 'SIGKILL')));
        return undefined;
      }
      setImmediate(() => void this.shutdown().then(() => process.exit(0)));
      return undefined;
    });
    a.addRoute('GET', '/api/v1/daemon/backend', () =>
      [...this.instances.values()].map((i) => ({ mountpoint: i.mountpoint, type: i.config.backend.type, host: i.config.backend.type === 'registry' ? i.config.backend.config.host : undefined, repo: i.config.backend.type === 'registry' ? i.config.backend.config.repo : undefined })),
    );
    a.addRoute('PUT', '/api/v1/daemon/mirrors', (r) => applyMirrorsUpdate(this.instances.values(), r.body));
    a.addRoute('GET', '/api/v1/daemon/mirrors', (r) =>
      this.select(r.query).map((i) => {
        const srcs = i.pipeline.sources();
        const proxy = srcs.find(isProxy);
        return {
          mountpoint: i.mountpoint,
          sources: srcs.map((s) => s.name),
          mirrors: mirrorSourcesOf(srcs).map((m) => ({ name: m.name, host: m.config.host, ...m.healthSnapshot() })),
          proxy: proxy ? { name: proxy.name, url: proxy.config.url, fallback: proxy.config.fallback, ...proxy.stats() } : undefined,
        };
      }),
    );
    a.addRoute('POST', '/api/v1/mount', (r) => this.apiMount(r));
    a.addRoute('DELETE', '/api/v1/mount', async (r) => {
      const mp = requireMountpoint(r);
      await this.umount(this.findInstance(mp)?.mountpoint ?? this.hostMountpoint(mp));
      return undefined;
    });
    a.addRoute('GET', '/api/v1/metrics', (r) => {
      const insts = this.select(r.query);
      const s = insts.map((i) => i.rafs.stats);
      const sum = (f: (x: (typeof s)[number]) => number) => s.reduce((acc, x) => acc + f(x), 0);
      const dist = s.reduce<number[]>((acc, x) => acc.map((v, k) => v + x.readLatencyDist[k]), new Array(s[0]?.readLatencyDist.length ?? 0).fill(0));
      return {
        id: insts.length === 1 ? insts[0].mountpoint : '',
        files_account_enabled: true,
        measure_latency: true,
        data_read: sum((x) => x.readBytes),
        read_count: sum((x) => x.reads),
        read_errors: sum((x) => x.readErrors),
        read_latency_millis_total: Math.round(sum((x) => x.readLatencyMsTotal)),
        read_latency_dist: dist,
        nr_opens: sum((x) => x.opens),
        // Not upstream's: READ requests as the kernel sized them, by size in bytes (per FUSE session).
        fuse_read_sizes: this.readSizes(insts),
      };
    });
    a.addRoute('GET', '/api/v1/metrics/backend', (r) => this.backendMetrics(this.select(r.query)));
    a.addRoute('GET', '/api/v1/metrics/p2p', () => loadedP2pHub()?.p2pMetrics() ?? []);
    a.addRoute('GET', '/api/v1/metrics/blobcache', async (r) => {
      const insts = this.select(r.query);
      const caches = [...new Set(insts.map((i) => i.cache))];
      const st = { hits: 0, misses: 0, hitBytes: 0, writtenBytes: 0, corrupt: 0 };
      let entries = 0;
      let ready = 0;
      let total = 0;
      for (const c of caches) for (const k of Object.keys(st) as (keyof typeof st)[]) st[k] += c.stats[k];
      // Readiness counts only the blobs of the selected instances (a work_dir may hold others).
      const seen = new Set<string>();
      for (const i of insts) {
        for (const bc of i.rafs.blobs) {
          if (seen.has(bc.blob.blobId)) continue;
          seen.add(bc.blob.blobId);
          const f = await i.cache.get(bc.blob);
          entries++;
          ready += f.map.readyCount();
          total += f.map.chunkCount;
        }
      }
      const pf = insts.map((i) => i.prefetcher.progress);
      return {
        id: insts.length === 1 ? insts[0].mountpoint : '',
        store_path: caches.map((c) => c.workDir).join(','),
        underlying_files: entries,
        entries_count: entries,
        hits: st.hits,
        misses: st.misses,
        hit_bytes: st.hitBytes,
        written_bytes: st.writtenBytes,
        corrupt_chunks: st.corrupt,
        total: st.hits + st.misses,
        chunks_ready: ready,
        chunks_total: total,
        data_all_ready: total > 0 && ready === total,
        prefetch_data_amount: insts.reduce((s, i) => s + i.pipeline.prefetchBytes, 0),
        prefetch_requests_count: insts.reduce((s, i) => s + i.pipeline.prefetchRequests, 0),
        prefetch_workers: insts.reduce((s, i) => s + (i.config.fsPrefetch.enable ? i.config.fsPrefetch.threadsCount : 0), 0),
        prefetch_begin_time_millis: pf.filter((p) => p.beginMs > 0).reduce((m, p) => (m === 0 ? p.beginMs : Math.min(m, p.beginMs)), 0),
        prefetch_end_time_millis: pf.some((p) => p.beginMs && !p.endMs) ? 0 : Math.max(0, ...pf.map((p) => p.endMs)),
        prefetch_errors: pf.reduce((s, p) => s + p.errors, 0),
      };
    });
    a.addRoute('GET', '/api/v1/metrics/files', (r) =>
      this.select(r.query).flatMap((i) => i.rafs.accessPattern().map((f) => ({ mountpoint: i.mountpoint, path: f.path, ino: f.ino, nr_read: f.nrRead, bytes: f.bytes }))),
    );
    a.addRoute('GET', '/api/v1/metrics/pattern', (r) =>
      this.select(r.query).flatMap((i) =>
        i.rafs.accessPattern().map((f) => ({ mountpoint: i.mountpoint, ino: f.ino, path: f.path, nr_read: f.nrRead, first_access_time_secs: f.firstSecs, first_access_time_nanos: f.firstNanos })),
      ),
    );
    a.addRoute('GET', '/metrics', async () => ({ raw: await prometheusText(this), contentType: 'text/plain; version=0.0.4' }));
  }

  /** Sizes of the READ requests the FUSE sessions of `insts` served: {bytes: count}. */
  private readSizes(insts: MountedInstance[]): Record<string, number> {
    // An instance in kernel EROFS mode has no session of its own: its reads are the blob view's.
    const sessions = new Set(insts.map((i) => (this.supervised ? this.supervised.fuseSession : i.fuse instanceof FuseMount ? i.fuse.fuseSession : this.blobView?.fuseSession)));
    const out: Record<string, number> = {};
    for (const s of sessions) for (const [size, n] of s?.stats.readSizes ?? []) out[size] = (out[size] ?? 0) + n;
    return out;
  }

  private async apiMount(r: ApiRequest): Promise<undefined> {
    const m = this.mountRequest(r);
    await this.mount(m.mountpoint, m.source, m.config, m.prefetchFiles);
    return undefined;
  }

  /** The body of `POST|PUT /api/v1/mount`, checked: `{source, fs_type?, config?, prefetch_files?}`. */
  mountRequest(r: ApiRequest): { mountpoint: string; source: string; config: NydusdConfig; prefetchFiles?: string[] } {
    const mp = this.hostMountpoint(requireMountpoint(r));
    const body = r.body as { source?: unknown; fs_type?: unknown; config?: unknown; prefetch_files?: unknown } | undefined;
    if (!body || typeof body !== 'object') throw new ApiFault(400, 'InvalidBody', 'body: expected {source, fs_type, config}');
    if (typeof body.source !== 'string' || !body.source) throw new ApiFault(400, 'InvalidBody', 'source: expected the bootstrap path');
    if (body.fs_type !== undefined && body.fs_type !== 'rafs') throw new ApiFault(400, 'InvalidBody', `fs_type: only "rafs" is supported, got ${JSON.stringify(body.fs_type)}`);
    let config = this.opts.defaultConfig;
    try {
      if (typeof body.config === 'string' && body.config.trim()) config = parseNydusdConfigText(body.config, 'config').config;
      else if (body.config && typeof body.config === 'object') config = parseNydusdConfig(body.config, 'config').config;
    } catch (e) {
      throw new ApiFault(400, 'InvalidConfig', (e as ConfigError).message);
    }
    if (!config) throw new ApiFault(400, 'InvalidBody', 'config: required (the daemon has no default config)');
    let files: string[] | undefined;
    if (body.prefetch_files !== undefined) {
      if (!Array.isArray(body.prefetch_files) || body.prefetch_files.some((f) => typeof f !== 'string')) throw new ApiFault(400, 'InvalidBody', 'prefetch_files: expected an array of paths');
      files = body.prefetch_files as string[];
    }
    return { mountpoint: mp, source: body.source, config, prefetchFiles: files };
  }
}

function driverOf(i: MountedInstance): 'erofs' | 'fusedev' {
  return i.fuse instanceof ErofsMount ? 'erofs' : 'fusedev';
}

function requireMountpoint(r: ApiRequest): string {
  const mp = r.query.get('mountpoint');
  if (!mp) throw new ApiFault(400, 'InvalidQuery', 'mountpoint: query parameter required');
  if (!path.isAbsolute(mp)) throw new ApiFault(400, 'InvalidQuery', `mountpoint: must be an absolute path, got ${mp}`);
  return mp;
}

/** up/down of every source that tracks health (mirrors, the proxy), by source name. */
function sourceHealth(insts: MountedInstance[]): Record<string, 'up' | 'down'> {
  const out: Record<string, 'up' | 'down'> = {};
  for (const i of insts) {
    for (const s of i.pipeline.sources()) {
      const h = isProxy(s) ? s.health : mirrorSourcesOf([s])[0]?.health;
      // One name may serve several instances: report down if any of them has it down.
      if (h && out[s.name] !== 'down') out[s.name] = h.up ? 'up' : 'down';
    }
  }
  return out;
}

function isProxy(s: ChunkSource): s is ProxySource {
  const m = loadedProxy();
  return m !== undefined && s instanceof m.ProxySource;
}

function mirrorSourcesOf(list: readonly ChunkSource[]): MirrorSource[] {
  return loadedMirrorSet()?.mirrorSourcesOf(list) ?? [];
}

async function closeSources(sources: readonly ChunkSource[]): Promise<void> {
  for (const s of sources) await s.close?.().catch(() => undefined);
}

/** Whether `file` begins as a RAFS v6 bootstrap (the EROFS magic in its superblock), read without loading it. */
function startsAsRafsV6(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const b = Buffer.alloc(4);
    return fs.readSync(fd, b, 0, 4, SB_OFFSET + SB.magic) === 4 && b.readUInt32LE(0) === EROFS_MAGIC;
  } catch {
    return false;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
