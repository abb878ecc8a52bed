/**
 * Serves the snapshots service on a unix socket. The socket is bound before any daemon recovery
 * starts, so containerd never sees a missing snapshotter while daemons are being found again
 * (upstream issue #791).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Metrics } from './metrics';
import { loadSnapshotsService, snapshotsHandlers } from './service';
import type { Snapshotter } from './snapshotter';

export interface GrpcServer {
  address: string;
  close(): Promise<void>;
}

/** `more` adds other services to the same socket before it is bound (the CRI image proxy). */
export async function serveSnapshots(sn: Snapshotter, address: string, metrics?: Metrics, more?: (server: grpc.Server) => void): Promise<GrpcServer> {
  fs.mkdirSync(path.dirname(address), { recursive: true, mode: 0o700 });
  // A socket file left by a killed snapshotter would make bind fail with EADDRINUSE.
  fs.rmSync(address, { force: true });
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20, 'grpc.max_send_message_length': 16 << 20 });
  server.addService(loadSnapshotsService(), snapshotsHandlers(sn, metrics));
  more?.(server);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${address}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(new Error(`bind ${address}: ${err.message}`)) : resolve())),
  );
  fs.chmodSync(address, 0o660);
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        // Give in-flight calls a moment, then cut the rest: shutdown must not hang on a stuck client.
        const timer = setTimeout(() => server.forceShutdown(), 2000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
