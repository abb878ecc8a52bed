/**
 * Fetch stage 1, cache read and re-verify: chunks ready in the blob cache are read back; the first
 * read of each chunk in this process (every read with `validateCache`) is digest-checked, and a
 * chunk that fails is forgotten and fetched again without amplification. A cached chunk already
 * verified is read only in its span (a FUSE read wants 128 KiB, not the whole 1 MiB chunk). Reads
 * of a chunk whose check is under way (cache reads run in libuv's pool, so two READs that share a
 * chunk overlap) wait for that check instead of reading and hashing the chunk again. The chunks not
 * in the cache go to the next stage.
 */
import type { ChunkInfo } from '../format/model';
import { digestMatches } from '../format/digest';
import type { BlobCacheFile, CacheStats } from '../cache/blob-cache';
import type { ChunkRequest, ReadDispatch } from './stage';
import { logger } from '../util/log';

const log = logger('pipeline');

export interface CacheStageOptions {
  stats: CacheStats;
  /** Re-check the digest of cached chunks on every read (digest_validate), not just the first. */
  validateCache?: boolean;
}

export function cacheStage(o: CacheStageOptions): (next: ReadDispatch) => ReadDispatch {
  const hit = (data: Buffer): Buffer => {
    o.stats.hits++;
    o.stats.hitBytes += data.length;
    return data;
  };
  return (next) => {
    /** Whole-chunk reads being checked, by blob and chunk index. */
    const checking = new Map<string, Promise<Buffer>>();
    const readCached = async (req: ChunkRequest, cf: BlobCacheFile, c: ChunkInfo): Promise<Buffer> => {
      const data = await cf.read(c);
      if (data && !o.validateCache && cf.verified(c)) return hit(data);
      if (data && digestMatches(req.bc.blob.digester, data, c)) {
        cf.markVerified(c);
        return hit(data);
      }
      log.warn({ blob: req.bc.blob.blobId, chunk: c.index }, 'cached chunk failed verification, refetching');
      cf.invalidate(c);
      return next({ ...req, chunks: [c], spans: undefined, ro: { ...req.ro, noAmplify: true } })[0];
    };
    const readChecked = (req: ChunkRequest, cf: BlobCacheFile, c: ChunkInfo): Promise<Buffer> => {
      const k = `${req.bc.blob.blobId}:${c.index}`;
      let p = checking.get(k);
      if (!p) {
        p = readCached(req, cf, c).finally(() => checking.delete(k));
        checking.set(k, p);
      }
      return p;
    };
    return (req) => {
      const { cf, chunks, spans } = req;
      const out: Promise<Buffer>[] = new Array(chunks.length);
      const rest: number[] = [];
      for (let i = 0; i < chunks.length; i++) {
        const c = chunks[i];
        if (!cf.isReady(c)) {
          rest.push(i);
        } else if (spans && cf.verified(c) && !o.validateCache) {
          const { from, to } = spans[i];
          out[i] = cf.read(c, from, to).then((b) => (b ? hit(b) : readChecked(req, cf, c).then((full) => full.subarray(from, to))));
        } else {
          out[i] = spans ? readChecked(req, cf, c).then((b) => b.subarray(spans[i].from, spans[i].to)) : readChecked(req, cf, c);
        }
      }
      if (rest.length > 0) {
        const fetched = next({ ...req, chunks: rest.map((i) => chunks[i]), spans: undefined });
        rest.forEach((i, k) => (out[i] = spans ? fetched[k].then((b) => b.subarray(spans[i].from, spans[i].to)) : fetched[k]));
      }
      return out;
    };
  };
}
