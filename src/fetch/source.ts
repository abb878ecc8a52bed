/**
 * The one interface every source of blob bytes implements: the origin registry, a localfs blob
 * directory, the mirror set, the dfdaemon proxy and the peer swarm.
 *
 * A source only moves bytes. It never decides whether they are right: the pipeline
 * (`pipeline.ts`) decompresses and digest-verifies every chunk before anything is cached or served,
 * and tells the source through `rejected()` when its bytes did not verify.
 *
 * Contract of `read`:
 *  - resolves with exactly `range.length` bytes of the blob file starting at `range.offset`
 *    (the compressed address space: what `ChunkInfo.compressedOffset` indexes);
 *  - rejects with `SourceUnavailableError` when the source cannot serve now (mirror down, proxy ping
 *    failing, peer gone), so the pipeline moves to the next source without counting a data error;
 *  - rejects with any other Error for a failed attempt (HTTP status, reset, short body);
 *  - honours `signal` (abort) and never retries forever: each source bounds its own attempts.
 */

export interface BlobRange {
  /** Blob id (64 hex) as in the bootstrap's blob table. */
  blobId: string;
  offset: number;
  length: number;
}

export interface ReadContext {
  signal?: AbortSignal;
  /** The chunk digests (hex) this range carries, for sources that key by chunk (peers). */
  chunkDigests?: string[];
  /** Prefetch reads may be given lower priority or a bandwidth budget by a source. */
  prefetch?: boolean;
}

export interface ChunkSource {
  /** Stable name used in metrics and logs, e.g. `origin`, `mirror:127.0.0.1:5001`, `peer`. */
  readonly name: string;
  read(range: BlobRange, ctx?: ReadContext): Promise<Buffer>;
  /** Called when bytes this source returned for `range` failed digest verification. */
  rejected?(range: BlobRange): void;
  /** Release sockets, timers and watchers. */
  close?(): Promise<void>;
}

/** The source cannot serve right now; the pipeline should ask the next one. */
export class SourceUnavailableError extends Error {
  constructor(source: string, reason: string) {
    super(`${source}: unavailable: ${reason}`);
    this.name = 'SourceUnavailableError';
  }
}
