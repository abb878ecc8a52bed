/**
 * Wires one snapshotter process together: metadata store and snapshotter over the root dir, the
 * gRPC socket (plus the CRI image service proxy when `enable_cri_keychain` is on; bound first, so
 * containerd never finds the snapshotter missing while daemons are being recovered), then the
 * daemon manager's recovery, the certs.d watcher and the metrics endpoint. `close()` stops serving
 * and leaves daemons running, so containers keep their filesystems across a snapshotter restart.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { MirrorsSync } from '../mirrors/push';
import { logger } from '../util/log';
import { nydusdConfigAsV1 } from '../daemon/config';
import { ConfigError, SnapshotterConfig } from './config';
import { addCriImageProxy, CriImageProxy, CriKeychain } from './cri-image-proxy';
import { DaemonManager } from './daemons';
import { Metrics } from './metrics';
import { serveSnapshots } from './server';
import { serveSystemController } from './system';
import { vmMountMode } from './kata-mounts';
import { Snapshotter } from './snapshotter';
import { MetaStore } from './store';

const log = logger('containerd-nydus-grpc');

export interface RunningSnapshotter {
  snapshotter: Snapshotter;
  daemons?: DaemonManager;
  address: string;
  metricsUrl?: string;
  /** Stops serving; daemons keep running unless `destroyDaemons`. */
  close(destroyDaemons?: boolean): Promise<void>;
}

/** nydusd_config: upstream's v1 JSON or v2 (TOML or JSON), as the v1 object daemons.ts fills in. */
function readTemplate(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, '(file)', `cannot read nydusd config: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return nydusdConfigAsV1(text, file);
  } catch (err) {
    throw new ConfigError(file, '(config)', (err as Error).message.replace(`${file}: `, ''));
  }
}

export async function runSnapshotter(cfg: SnapshotterConfig): Promise<RunningSnapshotter> {
  fs.mkdirSync(cfg.root, { recursive: true, mode: 0o700 });
  const metrics = new Metrics();
  const template = cfg.daemonMode === 'none' ? undefined : readTemplate(cfg.daemon.nydusdConfig);
  let daemons: DaemonManager | undefined;
  let watcher: MirrorsSync | undefined;
  const store = new MetaStore(path.join(cfg.root, 'metadata.db'));
  const criKeychain = cfg.criKeychain.enable ? new CriKeychain() : undefined;
  if (template && cfg.daemonMode !== 'none') {
    if (cfg.mirrorsDir) {
      watcher = new MirrorsSync(cfg.mirrorsDir);
    }
    daemons = new DaemonManager({
      root: cfg.root,
      store,
      mode: cfg.daemonMode,
      nydusdPath: cfg.daemon.nydusdPath,
      template,
      recoverPolicy: cfg.daemon.recoverPolicy,
      failoverPolicy: cfg.daemon.failoverPolicy,
      cacheDir: cfg.cache.dir,
      logLevel: cfg.daemon.logLevel,
      fsDriver: cfg.daemon.fsDriver,
      logToStdout: cfg.log.logToStdout,
      mirrors: watcher,
      metrics,
      criKeychain,
    });
  }
  const vm = vmMountMode(cfg.snapshot);
  if (vm.warning) log.warn(vm.warning);
  const sn = new Snapshotter({
    root: cfg.root,
    store,
    rafs: daemons,
    cache: cfg.cache.disable ? undefined : { dir: cfg.cache.dir, maxBytes: cfg.cache.maxSizeMb * 1024 * 1024 },
    nydusOverlayfs: vm.nydusOverlayfs,
    mountOnPull: cfg.snapshot.mountOnPull,
  });
  let criProxy: CriImageProxy | undefined;
  const grpcServer = await serveSnapshots(sn, cfg.address, metrics, (server) => {
    if (criKeychain) criProxy = addCriImageProxy(server, cfg.criKeychain.imageServiceAddress, criKeychain);
  });
  log.info({ address: cfg.address, root: cfg.root, daemonMode: cfg.daemonMode }, 'serving snapshots');
  await watcher?.start();
  await daemons?.recover();
  let metricsServer: Awaited<ReturnType<Metrics['serve']>> | undefined;
  if (cfg.metrics.address) {
    metricsServer = await metrics.serve(cfg.metrics.address);
    log.info({ url: metricsServer.url }, 'serving metrics');
  }
  const systemServer = cfg.system.enable && daemons ? await serveSystemController(cfg.system.address, daemons) : undefined;
  if (systemServer) log.info({ address: cfg.system.address }, 'serving the system controller');
  return {
    snapshotter: sn,
    daemons,
    address: cfg.address,
    metricsUrl: metricsServer?.url,
    async close(destroyDaemons = false) {
      await grpcServer.close();
      criProxy?.close();
      await watcher?.close();
      if (destroyDaemons) await daemons?.destroyAll();
      else daemons?.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.server.close(() => resolve()) : resolve()));
      await new Promise<void>((resolve) => (systemServer ? systemServer.close(() => resolve()) : resolve()));
      sn.close();
    },
  };
}
