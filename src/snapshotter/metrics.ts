/**
 * Prometheus metrics of the snapshotter, served in text format at `http://<address>/v1/metrics`
 * (upstream's path): RPC latency by operation and result, daemon counts and lifecycle events, and
 * the process metrics prom-client collects by default.
 */
import * as http from 'node:http';
import { AddressInfo } from 'node:net';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  private readonly opLatency = new Histogram({
    name: 'snapshotter_snapshot_operation_elapsed_milliseconds',
    help: 'Time spent in each snapshots RPC, by operation and gRPC result',
    labelNames: ['operation', 'result'],
    buckets: [1, 5, 20, 100, 500, 2000, 10000],
    registers: [this.registry],
  });
  readonly daemonEvents = new Counter({
    name: 'nydusd_lifetime_event_counts',
    help: 'nydusd lifecycle events seen by the daemon manager (started, died, restarted, recovered)',
    labelNames: ['nydusd_event'],
    registers: [this.registry],
  });
  readonly daemons = new Gauge({ name: 'nydusd_counts', help: 'Running nydusd processes', registers: [this.registry] });
  readonly instances = new Gauge({ name: 'snapshotter_rafs_instances', help: 'Mounted rafs instances', registers: [this.registry] });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'snapshotter_' });
  }

  observe(operation: string, startedNs: bigint, result: string): void {
    this.opLatency.observe({ operation, result }, Number(process.hrtime.bigint() - startedNs) / 1e6);
  }

  /** Serves /v1/metrics on host:port; resolves with the bound address (port 0 picks a free one). */
  async serve(address: string): Promise<{ server: http.Server; url: string }> {
    const i = address.lastIndexOf(':');
    const host = address.slice(0, i) || '0.0.0.0';
    const port = Number(address.slice(i + 1));
    const server = http.createServer((req, res) => {
      if (req.url !== '/v1/metrics') {
        res.writeHead(404).end('not found\n');
        return;
      }
      this.registry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(text),
        (err: Error) => res.writeHead(500).end(`${err.message}\n`),
      );
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const a = server.address() as AddressInfo;
    return { server, url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${a.port}/v1/metrics` };
  }
}
