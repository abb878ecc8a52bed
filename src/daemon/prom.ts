/**
 * Prometheus text for `GET /metrics`: a fresh prom-client registry filled from the daemon's
 * counters at scrape time (the counters live in the fs, pipeline and cache objects; prom-client
 * only formats them).
 */
import type * as PromClient from 'prom-client';
import type { Daemon } from './daemon';
import type { BlobCacheManager } from '../cache/blob-cache';
import { loadedP2pHub } from './optional';

export async function prometheusText(d: Daemon): Promise<string> {
  // Loaded on the first scrape, so daemons nobody scrapes do not carry it.
  const { Gauge, Registry } = require('prom-client') as typeof PromClient;
  const reg = new Registry();
  const g = (name: string, help: string, labelNames: string[]) => new Gauge({ name, help, labelNames, registers: [reg] });
  const up = g('nydusd_up', 'Daemon state: 1 when RUNNING.', ['id', 'state']);
  up.set({ id: d.opts.id, state: d.state }, d.state === 'RUNNING' ? 1 : 0);
  const reads = g('nydusd_fs_reads_total', 'FUSE reads served.', ['mountpoint']);
  const readBytes = g('nydusd_fs_read_bytes_total', 'Bytes returned by FUSE reads.', ['mountpoint']);
  const readErrors = g('nydusd_fs_read_errors_total', 'FUSE reads that failed (EIO).', ['mountpoint']);
  const readLatency = g('nydusd_fs_read_latency_milliseconds_total', 'Cumulative FUSE read latency.', ['mountpoint']);
  const req = g('nydusd_backend_requests_total', 'Range reads sent to a source.', ['mountpoint', 'source']);
  const bytes = g('nydusd_backend_bytes_total', 'Bytes received from a source.', ['mountpoint', 'source']);
  const errs = g('nydusd_backend_errors_total', 'Failed reads per source.', ['mountpoint', 'source']);
  const digest = g('nydusd_backend_digest_failures_total', 'Chunks refused because their digest did not match.', ['mountpoint', 'source']);
  const lat = g('nydusd_backend_latency_milliseconds_total', 'Cumulative read latency per source.', ['mountpoint', 'source']);
  const hits = g('nydusd_blobcache_hits_total', 'Chunk reads served from the blob cache.', ['work_dir']);
  const misses = g('nydusd_blobcache_misses_total', 'Chunk reads that went to a source.', ['work_dir']);
  const hitBytes = g('nydusd_blobcache_hit_bytes_total', 'Bytes served from the blob cache.', ['work_dir']);
  const corrupt = g('nydusd_blobcache_corrupt_chunks_total', 'Cached chunks that failed verification.', ['work_dir']);
  const caches = new Set<BlobCacheManager>();
  for (const i of d.instances.values()) {
    const m = { mountpoint: i.mountpoint };
    reads.set(m, i.rafs.stats.reads);
    readBytes.set(m, i.rafs.stats.readBytes);
    readErrors.set(m, i.rafs.stats.readErrors);
    readLatency.set(m, i.rafs.stats.readLatencyMsTotal);
    for (const [source, s] of Object.entries(i.metrics.snapshot())) {
      const l = { mountpoint: i.mountpoint, source };
      req.set(l, s.requests);
      bytes.set(l, s.bytes);
      errs.set(l, s.errors);
      digest.set(l, s.digestFailures);
      lat.set(l, s.latencyMsTotal);
    }
    caches.add(i.cache);
  }
  for (const c of caches) {
    const l = { work_dir: c.workDir };
    hits.set(l, c.stats.hits);
    misses.set(l, c.stats.misses);
    hitBytes.set(l, c.stats.hitBytes);
    corrupt.set(l, c.stats.corrupt);
  }
  // One swarm node per cluster this daemon joined; none (and no p2p series) when p2p is off.
  const nodes = loadedP2pHub()?.p2pMetrics() ?? [];
  if (nodes.length > 0) {
    const peers = g('nydusd_p2p_peers', 'Live, handshaken peers.', ['node']);
    const p2pBytes = g('nydusd_p2p_bytes_total', 'Chunk bytes this node got from peers, or fetched upstream as a chunk owner.', ['node', 'source']);
    const served = g('nydusd_p2p_served_chunks_total', 'Chunks this node served to peers.', ['node']);
    const servedBytes = g('nydusd_p2p_served_bytes_total', 'Bytes this node served to peers.', ['node']);
    const refused = g('nydusd_p2p_refused_total', 'Connections refused, by reason (allowlist, bad_proof, no_hello, before_hello, protocol).', ['node', 'reason']);
    const failures = g('nydusd_p2p_failures_total', 'Peer requests that failed, by reason (digest: bytes refused).', ['node', 'reason']);
    for (const n of nodes) {
      const node = { node: n.publicKey };
      peers.set(node, n.peers);
      p2pBytes.set({ ...node, source: 'peer' }, n.bytesFromPeers);
      p2pBytes.set({ ...node, source: 'upstream' }, n.bytesFromUpstream);
      served.set(node, n.chunksServed);
      servedBytes.set(node, n.bytesServed);
      for (const [reason, v] of Object.entries(n.refusedBy)) refused.set({ ...node, reason }, v);
      for (const [reason, v] of Object.entries(n.failures)) failures.set({ ...node, reason }, v);
    }
  }
  return reg.metrics();
}
