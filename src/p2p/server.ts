/**
 * The serving side of the swarm. A chunk's owner answers from its RangeStore, or fetches the range
 * upstream exactly once however many peers (and this node's own reads) ask at the same time, then
 * keeps and serves it.
 *
 * Contract of `upstream`: it returns bytes that already passed digest verification (the daemon
 * passes its fetch pipeline over mirrors and origin, never over the peer source, so requests
 * cannot loop). The server never judges bytes itself and never stores anything else.
 */
import type { BlobRange, ReadContext } from '../fetch/source';
import type { RequestHandler } from './channel';
import type { Request } from './frames';
import type { P2PMetrics } from './metrics';
import { RangeStore } from './store';
import { logger } from '../util/log';

const log = logger('p2p');

export type UpstreamFetch = (range: BlobRange, ctx: ReadContext) => Promise<Buffer>;

export class ChunkServer {
  private readonly inflight = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly upstream: UpstreamFetch,
    private readonly store: RangeStore,
    private readonly metrics: P2PMetrics,
  ) {}

  /** Verified bytes of `range`: stored, joined to an in-flight fetch, or fetched upstream once. */
  obtain(range: BlobRange, chunkDigests: string[]): Promise<Buffer> {
    const key = RangeStore.key(range.blobId, range.offset, range.length);
    const hit = this.store.get(key);
    if (hit) return Promise.resolve(hit);
    let p = this.inflight.get(key);
    if (!p) {
      // Not tied to any one asker's signal: other askers may still want the bytes.
      p = this.upstream(range, { chunkDigests }).then((bytes) => {
        if (bytes.length !== range.length) throw new Error(`upstream returned ${bytes.length} bytes for ${range.length}`);
        this.metrics.bytesFromUpstream += bytes.length;
        this.store.put(key, bytes);
        return bytes;
      }).finally(() => this.inflight.delete(key));
      this.inflight.set(key, p);
    }
    return p;
  }

  /** Handler for peers' REQUEST frames. */
  readonly handle: RequestHandler = async (req: Request) => {
    const bytes = await this.obtain({ blobId: req.blobId, offset: req.offset, length: req.length }, req.digests).catch((e: Error) => {
      log.warn({ blob: req.blobId, offset: req.offset, length: req.length, err: e.message }, 'could not serve a peer');
      throw e;
    });
    this.metrics.chunksServed++;
    this.metrics.bytesServed += bytes.length;
    return bytes;
  };
}
