/**
 * Counters of the peer swarm, read by the daemon's API (`/api/v1/metrics/p2p`), its Prometheus
 * text (`/metrics`, see daemon/prom.ts) and tests.
 */
export type PeerFailure = 'timeout' | 'busy' | 'not_found' | 'gone' | 'error' | 'digest';
/**
 * Why a connection was refused: a key outside `allow`; a HELLO whose proof does not verify for this
 * connection (wrong secret, or replayed from another one); no HELLO within `hello_timeout_ms`; another
 * frame before HELLO; a malformed frame or wrong version before HELLO.
 */
export type RefusalReason = 'allowlist' | 'bad_proof' | 'no_hello' | 'before_hello' | 'protocol';

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
  /** Connections refused, by reason. */
  readonly refusedBy: Record<RefusalReason, number> = { allowlist: 0, bad_proof: 0, no_hello: 0, before_hello: 0, protocol: 0 };
  readonly failures: Record<PeerFailure, number> = { timeout: 0, busy: 0, not_found: 0, gone: 0, error: 0, digest: 0 };

  /** Connections refused for any reason. */
  get refused(): number {
    return Object.values(this.refusedBy).reduce((a, b) => a + b, 0);
  }

  snapshot() {
    return {
      bytesFromPeers: this.bytesFromPeers,
      chunksFromPeers: this.chunksFromPeers,
      bytesFromUpstream: this.bytesFromUpstream,
      chunksServed: this.chunksServed,
      bytesServed: this.bytesServed,
      peers: this.peers,
      refused: this.refused,
      refusedBy: { ...this.refusedBy },
      failures: { ...this.failures },
    };
  }
}
