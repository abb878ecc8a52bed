/**
 * A P2P node: everything the daemon needs to take part in the swarm, wired together.
 *
 *   const node = await PeerNode.start(cfg, { upstream });   // upstream: verified mirrors+origin fetch
 *   sources = [node.source, ...mirrors, origin];            // peers come first
 *   ... node.metrics.snapshot(); await node.close();
 *
 * `upstream` may be supplied later with `setUpstream` when the pipeline is built after its
 * sources; until then requests from peers are answered NOT_FOUND.
 */
import type { KeyPair } from 'hyperdht';
import { CountingLimiter, NotFoundError } from './channel';
import type { P2PConfig } from './config';
import { loadKeyPair } from './identity';
import { Membership } from './membership';
import { P2PMetrics } from './metrics';
import { PeerSource } from './peer-source';
import { ChunkServer, UpstreamFetch } from './server';
import { RangeStore } from './store';

export interface PeerNodeOptions {
  upstream?: UpstreamFetch;
  /** Overrides the key pair from `cfg.keyFile` (tests). */
  keyPair?: KeyPair;
  /** Cool-down of a peer that timed out, ms (default 30 s). */
  cooldownMs?: number;
}

export class PeerNode {
  readonly metrics = new P2PMetrics();
  readonly membership: Membership;
  readonly server: ChunkServer;
  readonly source: PeerSource;
  readonly publicKey: string;
  private upstream?: UpstreamFetch;

  private constructor(cfg: P2PConfig, opts: PeerNodeOptions) {
    this.upstream = opts.upstream;
    const keyPair = opts.keyPair ?? loadKeyPair(cfg.keyFile);
    this.server = new ChunkServer(
      (range, ctx) => {
        if (!this.upstream) return Promise.reject(new NotFoundError('node has no upstream yet'));
        return this.upstream(range, ctx);
      },
      new RangeStore(cfg.storeBytes),
      this.metrics,
    );
    this.membership = new Membership(cfg, {
      keyPair, handler: this.server.handle, limiter: new CountingLimiter(cfg.serveConcurrency), metrics: this.metrics,
    });
    this.publicKey = this.membership.publicKey;
    this.source = new PeerSource({
      selfKey: this.publicKey,
      livePeers: () => this.membership.livePeers(),
      server: this.server,
      metrics: this.metrics,
      requestTimeoutMs: cfg.requestTimeoutMs,
      upstreamTimeoutMs: cfg.upstreamTimeoutMs,
      cooldownMs: opts.cooldownMs,
    });
  }

  static async start(cfg: P2PConfig, opts: PeerNodeOptions = {}): Promise<PeerNode> {
    const node = new PeerNode(cfg, opts);
    try {
      await node.membership.start();
    } catch (e) {
      await node.close();
      throw e;
    }
    return node;
  }

  setUpstream(fn: UpstreamFetch): void {
    this.upstream = fn;
  }

  close(): Promise<void> {
    return this.membership.close();
  }
}
