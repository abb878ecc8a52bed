/**
 * Fetch stage 5, verify and deliver: cuts a source's answer for a range into its chunks, opens each
 * with `openChunk` (decompress to the exact size, then the digest: format/digest.ts), hands the good
 * ones to their waiters at once and then writes them to the blob cache; the bad ones are returned
 * for the next source. Unverified bytes are never delivered or cached.
 */
import type { ChunkInfo } from '../format/model';
import { ChunkProblem, VerifyClock, openChunk } from '../format/digest';
import type { ChunkClaims } from './chunk-claims';
import type { ChunkRequest } from './stage';
import { logger } from '../util/log';

const log = logger('pipeline');

/** Bytes delivered for prefetch reads (blobcache metrics). */
export interface PrefetchCounters {
  prefetchBytes: number;
  prefetchRequests: number;
}

/** Verifies `raw` (the range starting at `start`) for `chunks`; resolves with the chunks that failed. */
export type VerifyAnswer = (req: ChunkRequest, chunks: ChunkInfo[], start: number, raw: Buffer) => Promise<ChunkInfo[]>;

export function verifyStage(claims: ChunkClaims, clock: VerifyClock, counters: PrefetchCounters): VerifyAnswer {
  const deliver = async (req: ChunkRequest, c: ChunkInfo, data: Buffer): Promise<void> => {
    const release = claims.deliver(req.bc.blob.blobId, c, data);
    if (req.ro.prefetch) {
      counters.prefetchBytes += data.length;
      counters.prefetchRequests++;
    }
    try {
      await req.cf.write(c, data);
      req.cf.markVerified(c);
    } catch (e) {
      // The bytes are verified; a full disk costs a refetch later, not this read.
      log.warn({ blob: req.bc.blob.blobId, chunk: c.index, err: (e as Error).message }, 'cache write failed');
    } finally {
      release();
    }
  };
  return async (req, chunks, start, raw) => {
    const bad: ChunkInfo[] = [];
    for (const c of chunks) {
      const data = openChunk(req.bc.blob, c, raw.subarray(c.compressedOffset - start, c.compressedOffset - start + c.compressedSize), clock);
      if (data instanceof ChunkProblem) bad.push(c);
      else await deliver(req, c, data);
    }
    return bad;
  };
}
