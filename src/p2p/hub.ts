/**
 * The swarm inside one nydusd process: one PeerNode per distinct `p2p` config, shared by every rafs
 * instance mounted with it. Each instance gets its own `peer` ChunkSource (first in its source
 * list); `attach` tells the node which blobs the instance serves and through which sources (the
 * instance's others, never peers) it fetches them upstream, verified against its chunk tables.
 *
 *   const peer = peerSourceFor(cfg);            // in buildSources, before the mirrors
 *   ... after the bootstrap is loaded:
 *   peer.attach(rafs.blobs, () => pipeline.sources());   // this node can now own and serve those blobs
 *   await peer.close();                         // on umount: detaches; the node lives on
 *
 * The node starts in the background; until it has joined, `read` is unavailable (the pipeline
 * goes on to mirrors and origin).
 */
import type { BlobChunks } from '../fetch/pipeline';
import { BlobRange, ChunkSource, ReadContext, SourceUnavailableError } from '../fetch/source';
import { logger } from '../util/log';
import { NotFoundError } from './channel';
import type { P2PConfig } from './config';
import { PeerNode } from './node';
import { fetchVerified } from './verify';

const log = logger('p2p');

interface Attachment { blobs: Map<string, BlobChunks>; sources: () => readonly ChunkSource[] }

export class PeerHub {
  node?: PeerNode;
  readonly started: Promise<PeerNode | undefined>;
  private readonly attached = new Set<Attachment>();

  constructor(cfg: P2PConfig) {
    this.started = PeerNode.start(cfg, { upstream: (range, ctx) => this.upstream(range, ctx) }).then(
      (n) => {
        this.node = n;
        log.info({ key: n.publicKey }, 'joined the p2p swarm');
        return n;
      },
      (e: Error) => {
        log.error({ err: e.message }, 'p2p swarm failed to start; reading without peers');
        return undefined;
      },
    );
  }

  /** A `peer` source for one rafs instance. */
  source(): InstancePeerSource {
    return new InstancePeerSource(this);
  }

  attach(a: Attachment): () => void {
    this.attached.add(a);
    return () => this.attached.delete(a);
  }

  private upstream(range: BlobRange, ctx: ReadContext): Promise<Buffer> {
    for (const a of this.attached) {
      const bc = a.blobs.get(range.blobId);
      if (bc) return fetchVerified(bc, a.sources(), range, ctx);
    }
    return Promise.reject(new NotFoundError(`blob ${range.blobId} is not mounted here`));
  }

  async close(): Promise<void> {
    await (await this.started)?.close();
  }
}

export class InstancePeerSource implements ChunkSource {
  readonly name = 'peer';
  private detach?: () => void;

  constructor(readonly hub: PeerHub) {}

  /**
   * Registers the instance's blobs, and its live source list (mirrors can change at run time),
   * whose non-peer sources become this node's upstream for those blobs.
   */
  attach(blobs: readonly BlobChunks[], sources: () => readonly ChunkSource[]): void {
    this.detach?.();
    const others = () => sources().filter((s) => !(s instanceof InstancePeerSource));
    this.detach = this.hub.attach({ blobs: new Map(blobs.map((b) => [b.blob.blobId, b])), sources: others });
  }

  read(range: BlobRange, ctx?: ReadContext): Promise<Buffer> {
    const node = this.hub.node;
    if (!node) return Promise.reject(new SourceUnavailableError(this.name, 'swarm not joined yet'));
    return node.source.read(range, ctx);
  }

  rejected(range: BlobRange): void {
    this.hub.node?.source.rejected(range);
  }

  /** Peer statistics for the daemon API. */
  metrics() {
    return this.hub.node?.metrics;
  }

  async close(): Promise<void> {
    this.detach?.();
    this.detach = undefined;
  }
}

/** Attaches the instance to its peer source, if its source list has one (p2p enabled). */
export function attachPeers(sources: readonly ChunkSource[], blobs: readonly BlobChunks[], live: () => readonly ChunkSource[]): void {
  for (const s of sources) if (s instanceof InstancePeerSource) s.attach(blobs, live);
}

const hubs = new Map<string, PeerHub>();

/** The process-wide hub for `cfg` (created on first use), and a peer source for one instance. */
export function peerSourceFor(cfg: P2PConfig): InstancePeerSource {
  const key = JSON.stringify(cfg);
  let hub = hubs.get(key);
  if (!hub) {
    hub = new PeerHub(cfg);
    hubs.set(key, hub);
  }
  return hub.source();
}

/** Counters of every swarm this process joined, for `GET /api/v1/metrics/p2p`. */
export function p2pMetrics(): ({ publicKey: string } & ReturnType<PeerNode['metrics']['snapshot']>)[] {
  return [...hubs.values()].flatMap((h) => (h.node ? [{ publicKey: h.node.publicKey, ...h.node.metrics.snapshot() }] : []));
}

/** Leaves every swarm this process joined (daemon shutdown, tests). */
export async function closeAllHubs(): Promise<void> {
  const all = [...hubs.values()];
  hubs.clear();
  await Promise.allSettled(all.map((h) => h.close()));
}
