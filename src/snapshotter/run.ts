/**
 * Wires one snapshotter process together: metadata store and snapshotter over the root dir, the
 * gRPC socket (bound first), then the daemon manager's recovery of running nydusd processes, the
 * mirrors watcher and the metrics endpoint. `close()` stops serving and leaves daemons running,
 * so containers keep their filesystems across a snapshotter restart.
 */
import * as fs from 'node:fs';
import { logger } from '../util/log';
import type { SnapshotterConfig } from './config';
import { Metrics } from './metrics';
import { serveSnapshots } from './server';
import { Snapshotter } from './snapshotter';

const log = logger('containerd-nydus-grpc');

export interface RunningSnapshotter {
  snapshotter: Snapshotter;
  address: string;
  metricsUrl?: string;
  close(): Promise<void>;
}

export async function runSnapshotter(cfg: SnapshotterConfig): Promise<RunningSnapshotter> {
  fs.mkdirSync(cfg.root, { recursive: true, mode: 0o700 });
  const metrics = new Metrics();
  const sn = new Snapshotter({ root: cfg.root });
  const grpcServer = await serveSnapshots(sn, cfg.address, metrics);
  log.info({ address: cfg.address, root: cfg.root, daemonMode: cfg.daemonMode }, 'serving snapshots');
  let metricsServer: Awaited<ReturnType<Metrics['serve']>> | undefined;
  if (cfg.metrics.address) {
    metricsServer = await metrics.serve(cfg.metrics.address);
    log.info({ url: metricsServer.url }, 'serving metrics');
  }
  return {
    snapshotter: sn,
    address: cfg.address,
    metricsUrl: metricsServer?.url,
    async close() {
      await grpcServer.close();
      await new Promise<void>((resolve) => (metricsServer ? metricsServer.server.close(() => resolve()) : resolve()));
      sn.close();
    },
  };
}
