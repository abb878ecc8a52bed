/**
 * Counters of the peer swarm, read by the daemon's API and by tests. Plain numbers plus a
 * Prometheus text rendering so the daemon can append them to its /metrics answer.
 */
export type PeerFailure = 'timeout' | 'busy' | 'not_found' | 'gone' | 'error' | 'digest';

export class P2PMetrics {
  /** Bytes read for this node's own reads from peers. */
  bytesFromPeers = 0;
  chunksFromPeers = 0;
  /** Bytes this node fetched upstream (mirrors/origin) as a chunk owner or to serve a peer. */
  bytesFromUpstream = 0;
  /** Requests peers made to this node that it answered with bytes. */
  chunksServed = 0;
  bytesServed = 0;
  /** Live, handshaken peers right now. */
  peers = 0;
  /** Connections refused by the allowlist or the cluster-secret proof. */
  refused = 0;
  readonly failures: Record<PeerFailure, number> = { timeout: 0, busy: 0, not_found: 0, gone: 0, error: 0, digest: 0 };

  snapshot() {
    return {
      bytesFromPeers: this.bytesFromPeers,
      chunksFromPeers: this.chunksFromPeers,
      bytesFromUpstream: this.bytesFromUpstream,
      chunksServed: this.chunksServed,
      bytesServed: this.bytesServed,
      peers: this.peers,
      refused: this.refused,
      failures: { ...this.failures },
    };
  }

  prometheus(prefix = 'nydus_p2p'): string {
    const lines = [
      `# TYPE ${prefix}_bytes_total counter`,
      `${prefix}_bytes_total{source="peer"} ${this.bytesFromPeers}`,
      `${prefix}_bytes_total{source="upstream"} ${this.bytesFromUpstream}`,
      `# TYPE ${prefix}_served_chunks_total counter`,
      `${prefix}_served_chunks_total ${this.chunksServed}`,
      `# TYPE ${prefix}_served_bytes_total counter`,
      `${prefix}_served_bytes_total ${this.bytesServed}`,
      `# TYPE ${prefix}_peers gauge`,
      `${prefix}_peers ${this.peers}`,
      `# TYPE ${prefix}_refused_total counter`,
      `${prefix}_refused_total ${this.refused}`,
      `# TYPE ${prefix}_failures_total counter`,
      ...Object.entries(this.failures).map(([k, v]) => `${prefix}_failures_total{reason="${k}"} ${v}`),
    ];
    return lines.join('\n') + '\n';
  }
}
