/**
 * Fetch stage 2, in-flight dedup: a chunk another read is already fetching is awaited, not fetched
 * twice; a poisoned chunk (every source answered wrongly, see chunk-claims.ts) fails at once. The
 * rest is claimed and handed to the fetch side; if that side faults unexpectedly, every claim it
 * was given is failed, so no reader waits forever.
 */
import type { ChunkInfo } from '../format/model';
import type { CacheStats } from '../cache/blob-cache';
import { ChunkClaims, ChunkFetchError } from './chunk-claims';
import type { FetchDispatch, ReadDispatch } from './stage';

export function dedupStage(claims: ChunkClaims, stats: CacheStats): (next: FetchDispatch) => ReadDispatch {
  return (next) => (req) => {
    const blobId = req.bc.blob.blobId;
    const missing: ChunkInfo[] = [];
    const out = req.chunks.map((c) => {
      const bad = claims.poison(blobId, c);
      if (bad) return Promise.reject(bad);
      const running = claims.running(blobId, c);
      if (running) return running;
      missing.push(c);
      return claims.claim(blobId, c);
    });
    if (missing.length > 0) {
      stats.misses += missing.length;
      next({ ...req, chunks: missing }).catch((e: Error) => {
        for (const c of missing) claims.fail(blobId, c, new ChunkFetchError(`blob ${blobId} chunk ${c.index}: ${e.message}`, false));
      });
    }
    return out;
  };
}
