/**
 * The gRPC face of the snapshotter: containerd's `containerd.services.snapshots.v1.Snapshots`
 * service loaded from proto/ at runtime, each RPC translated to a `Snapshotter` call. Every call
 * is logged with its key, parent and label names (the first thing anyone debugging a pull asks
 * for), timed into the metrics, and its error mapped to containerd's gRPC code.
 */
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { logger } from '../util/log';
import { grpcCode, SnapshotError } from './errors';
import type { Metrics } from './metrics';
import type { Mount, Snapshotter } from './snapshotter';
import type { SnapshotInfo } from './store';

const log = logger('snapshots-service');

export const PROTO_DIR = path.join(__dirname, '../../proto');
const LIST_BATCH = 100;

/** Loads the snapshots service definition from proto/. */
export function loadSnapshotsService(): grpc.ServiceDefinition {
  const def = protoLoader.loadSync('services/snapshots/v1/snapshots.proto', {
    includeDirs: [PROTO_DIR],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: grpc.ServiceClientConstructor } } } };
  };
  return pkg.containerd.services.snapshots.v1.Snapshots.service;
}

interface Timestamp {
  seconds: string | number;
  nanos: number;
}

function ts(us: number): Timestamp {
  return { seconds: String(Math.floor(us / 1e6)), nanos: (us % 1e6) * 1000 };
}

function toProtoInfo(i: SnapshotInfo): Record<string, unknown> {
  return { name: i.name, parent: i.parent, kind: i.kind, created_at: ts(i.createdUs), updated_at: ts(i.updatedUs), labels: i.labels };
}

function toProtoMounts(ms: Mount[]): Record<string, unknown>[] {
  return ms.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options }));
}

// Requests arrive as plain objects shaped by proto-loader (keepCase, longs as strings).
type Req = any; // eslint-disable-line
type Unary = (call: grpc.ServerUnaryCall<Req, unknown>, cb: grpc.sendUnaryData<unknown>) => void;

/** Builds the service implementation over `sn`. */
export function snapshotsHandlers(sn: Snapshotter, metrics?: Metrics): grpc.UntypedServiceImplementation {
  const unary = (op: string, fn: (req: Req) => Promise<unknown> | unknown): Unary =>
    (call, cb) => {
      const req = call.request;
      const started = process.hrtime.bigint();
      const fields = { key: req.key, parent: req.parent || undefined, name: req.name || undefined, labels: req.labels ? Object.keys(req.labels) : undefined };
      Promise.resolve()
        .then(() => fn(req))
        .then(
          (res) => {
            log.debug({ op, ...fields }, 'rpc ok');
            metrics?.observe(op, started, 'ok');
            cb(null, res ?? {});
          },
          (err: unknown) => {
            const code = grpcCode(err);
            const msg = err instanceof Error ? err.message : String(err);
            // AlreadyExists on Prepare is the remote-snapshot success signal, not a failure.
            const level = err instanceof SnapshotError ? 'info' : 'error';
            log[level]({ op, ...fields, code: grpc.status[code], err: msg }, 'rpc error');
            metrics?.observe(op, started, grpc.status[code]);
            cb({ code, details: msg });
          },
        );
    };

  return {
    Prepare: unary('prepare', async (r) => ({ mounts: toProtoMounts(await sn.prepare(r.key, r.parent, r.labels ?? {})) })),
    View: unary('view', async (r) => ({ mounts: toProtoMounts(await sn.view(r.key, r.parent, r.labels ?? {})) })),
    Mounts: unary('mounts', async (r) => ({ mounts: toProtoMounts(await sn.mounts(r.key)) })),
    Commit: unary('commit', async (r) => {
      await sn.commit(r.name, r.key, r.labels ?? {});
      return {};
    }),
    Remove: unary('remove', async (r) => {
      await sn.remove(r.key);
      return {};
    }),
    Stat: unary('stat', (r) => ({ info: toProtoInfo(sn.stat(r.key)) })),
    Update: unary('update', (r) => {
      const info = r.info ?? {};
      const paths: string[] = r.update_mask?.paths ?? [];
      return { info: toProtoInfo(sn.update({ name: info.name, labels: info.labels ?? {} }, paths)) };
    }),
    Usage: unary('usage', async (r) => {
      const u = await sn.usage(r.key);
      return { size: String(u.size), inodes: String(u.inodes) };
    }),
    Cleanup: unary('cleanup', async () => {
      await sn.cleanup();
      return {};
    }),
    List: (call: grpc.ServerWritableStream<Req, unknown>) => {
      const started = process.hrtime.bigint();
      try {
        const infos = sn.list(call.request.filters ?? []);
        for (let i = 0; i < infos.length; i += LIST_BATCH) call.write({ info: infos.slice(i, i + LIST_BATCH).map(toProtoInfo) });
        log.debug({ op: 'list', filters: call.request.filters, n: infos.length }, 'rpc ok');
        metrics?.observe('list', started, 'ok');
        call.end();
      } catch (err) {
        const code = grpcCode(err);
        log.info({ op: 'list', err: (err as Error).message }, 'rpc error');
        metrics?.observe('list', started, grpc.status[code]);
        call.emit('error', { code, details: (err as Error).message });
      }
    },
  };
}
