/**
 * Fetch stage 3, read amplification and grouping: the missing chunks are extended with the chunks
 * that follow the last of them in the blob (not cached, not in flight, not poisoned) up to
 * `amplifyIo` bytes (upstream's amplify_io; never below MIN_AMPLIFY), those are claimed too, and
 * everything is cut into contiguous compressed ranges no larger than the range limit (gaps up to
 * amplifyIo/128 are downloaded and dropped). Each range goes to the next stage, all at once.
 */
import type { ChunkInfo } from '../format/model';
import type { BlobCacheFile } from '../cache/blob-cache';
import type { BlobChunks } from './blob-chunks';
import { ChunkClaims, ChunkFetchError } from './chunk-claims';
import type { FetchDispatch } from './stage';

/** Read amplification never goes below this (upstream's floor for user_io_batch_size). */
export const MIN_AMPLIFY = 128 * 1024;

/** The chunks that follow the last missing one, up to `amplifyIo`; they are claimed here. */
function extend(claims: ChunkClaims, amplifyIo: number, bc: BlobChunks, cf: BlobCacheFile, missing: ChunkInfo[]): ChunkInfo[] {
  const sorted = [...missing].sort((a, b) => a.compressedOffset - b.compressedOffset);
  if (amplifyIo <= 0) return sorted;
  const target = Math.max(amplifyIo, MIN_AMPLIFY);
  const start = sorted[0].compressedOffset;
  const last = sorted[sorted.length - 1];
  const extra: ChunkInfo[] = [];
  for (let p = bc.position(last) + 1; p > 0 && p < bc.ordered.length; p++) {
    const c = bc.ordered[p];
    if (c.compressedOffset + c.compressedSize - start > target) break;
    // A chunk that failed verification is fetched again only when a read asks for it.
    if (cf.isReady(c) || claims.busy(bc.blob.blobId, c)) break;
    void claims.claim(bc.blob.blobId, c);
    extra.push(c);
  }
  return extra.length ? [...sorted, ...extra] : sorted;
}

/** Groups chunks into contiguous ranges of at most `maxBytes`, bridging gaps up to `gapOk`. */
export function groupRanges(chunks: ChunkInfo[], maxBytes: number, gapOk: number): ChunkInfo[][] {
  const sorted = [...chunks].sort((a, b) => a.compressedOffset - b.compressedOffset);
  const groups: ChunkInfo[][] = [];
  let cur: ChunkInfo[] = [];
  let curStart = 0;
  let curEnd = 0;
  for (const c of sorted) {
    const cEnd = c.compressedOffset + c.compressedSize;
    if (cur.length > 0 && c.compressedOffset >= curEnd && c.compressedOffset - curEnd <= gapOk && cEnd - curStart <= maxBytes) {
      cur.push(c);
      curEnd = cEnd;
      continue;
    }
    if (cur.length > 0 && c.compressedOffset < curEnd) {
      // Overlapping entries (the same bytes referenced twice) ride along in the current range.
      cur.push(c);
      curEnd = Math.max(curEnd, cEnd);
      continue;
    }
    if (cur.length) groups.push(cur);
    cur = [c];
    curStart = c.compressedOffset;
    curEnd = cEnd;
  }
  if (cur.length) groups.push(cur);
  return groups;
}

export function amplifyStage(claims: ChunkClaims, amplifyIo: number): (next: FetchDispatch) => FetchDispatch {
  return (next) => async (req) => {
    const all = req.ro.noAmplify ? req.chunks : extend(claims, amplifyIo, req.bc, req.cf, req.chunks);
    const maxBytes = req.ro.maxRangeBytes ?? Math.max(amplifyIo, 1 << 20);
    try {
      await Promise.all(groupRanges(all, maxBytes, Math.max(amplifyIo >> 7, 0)).map((g) => next({ ...req, chunks: g })));
    } catch (e) {
      // The chunks claimed here have no reader upstream to fail them.
      const blobId = req.bc.blob.blobId;
      for (const c of all.slice(req.chunks.length)) claims.fail(blobId, c, new ChunkFetchError(`blob ${blobId} chunk ${c.index}: ${(e as Error).message}`, false));
      throw e;
    }
  };
}
