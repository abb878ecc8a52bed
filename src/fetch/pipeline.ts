/**
 * The chunk fetch pipeline: turns "these chunks of this blob, please" into verified uncompressed
 * bytes, from the blob cache when it can and from the ordered `ChunkSource` list when it must.
 * It composes one stage per module, each a function of the next (stage.ts):
 *
 *   cache-stage   cached chunks read back, re-verified on first read (or always, validateCache)
 *   dedup-stage   chunks already in flight awaited, poisoned ones failed, the rest claimed
 *   amplify-stage following chunks added up to amplifyIo, cut into contiguous ranges
 *   source-walk   each range asked of the sources in order until every chunk verified
 *   verify-stage  every chunk of an answer decompressed and digest-checked, then served and cached
 *
 * Contract of `read(bc, wanted, opts, spans)`: verified uncompressed bytes of every chunk of
 * `wanted` (same order; only [from, to) of each with `spans`), or ChunkFetchError (EIO).
 * Unverified bytes are never returned or cached. A chunk every source answered wrongly fails fast
 * for POISON_HOLD_MS. `setSources()` swaps the list; running reads finish on the old one.
 */
import type { ChunkInfo } from '../format/model';
import type { VerifyClock } from '../format/digest';
import type { BlobCacheManager } from '../cache/blob-cache';
import type { ChunkSource } from './source';
import type { FetchMetrics } from './metrics';
import type { ChunkSpan, ReadDispatch, ReadOptions } from './stage';
import { BlobChunks } from './blob-chunks';
import { ChunkClaims } from './chunk-claims';
import { cacheStage } from './cache-stage';
import { dedupStage } from './dedup-stage';
import { amplifyStage } from './amplify-stage';
import { sourceWalk } from './source-walk';
import { verifyStage } from './verify-stage';

export { BlobChunks } from './blob-chunks';
export { ChunkFetchError, POISON_HOLD_MS } from './chunk-claims';
export { MIN_AMPLIFY } from './amplify-stage';
export type { ChunkSpan, ReadOptions } from './stage';

export interface PipelineOptions {
  cache: BlobCacheManager;
  sources: ChunkSource[];
  metrics: FetchMetrics;
  /** Bytes of read amplification (amplify_io); 0 disables it. */
  amplifyIo: number;
  /** Re-check the digest of cached chunks on every read (digest_validate), not just the first. */
  validateCache?: boolean;
}

export class ChunkPipeline {
  private sourceList: ChunkSource[];
  private readonly dispatch: ReadDispatch;
  /** Uncompressed bytes delivered for prefetch reads (blobcache metrics). */
  prefetchBytes = 0;
  prefetchRequests = 0;
  /** CPU time spent decompressing and verifying fetched chunks. */
  readonly clock: VerifyClock = { decompressMs: 0, verifyMs: 0 };

  constructor(private readonly opts: PipelineOptions) {
    this.sourceList = [...opts.sources];
    const claims = new ChunkClaims();
    const fetch = amplifyStage(claims, opts.amplifyIo)(sourceWalk(claims, opts.metrics, verifyStage(claims, this.clock, this)));
    this.dispatch = cacheStage({ stats: opts.cache.stats, validateCache: opts.validateCache })(dedupStage(claims, opts.cache.stats)(fetch));
  }

  get metrics(): FetchMetrics {
    return this.opts.metrics;
  }

  get cache(): BlobCacheManager {
    return this.opts.cache;
  }

  /** Replaces the source list; reads already running finish with the list they started with. */
  setSources(sources: ChunkSource[]): void {
    this.sourceList = [...sources];
  }

  sources(): readonly ChunkSource[] {
    return this.sourceList;
  }

  /**
   * Verified uncompressed bytes of `wanted` (same order). With `spans`, only bytes
   * [from, to) of each chunk are returned, and a cached, already verified chunk is read only there.
   */
  async read(bc: BlobChunks, wanted: ChunkInfo[], ro: ReadOptions = {}, spans?: ChunkSpan[]): Promise<Buffer[]> {
    const cf = await this.opts.cache.get(bc.blob);
    return Promise.all(this.dispatch({ bc, cf, chunks: wanted, ro, sources: this.sourceList, spans }));
  }
}
