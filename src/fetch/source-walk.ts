/**
 * Fetch stage 4, the walk over the sources for one contiguous range: each source in order is asked
 * for the range spanning the chunks still pending. An unavailable source is skipped; a failed read
 * counts an error and moves on; an answer goes through the verify stage, and only the chunks that
 * failed there move on to the next source, after `source.rejected(range)` is called. A chunk no
 * source delivered fails with ChunkFetchError (`digestMismatch` when some source did answer,
 * wrongly; it is then poisoned). A blob whose compressor this process cannot decompress is never
 * fetched: its chunks fail at once, so no mirror or peer is blamed for our own limitation.
 */
import { decompressorProblem } from '../format/codec';
import { hex } from '../format/digest';
import { ChunkClaims, ChunkFetchError } from './chunk-claims';
import type { FetchMetrics } from './metrics';
import { BlobRange, SourceUnavailableError } from './source';
import type { FetchDispatch } from './stage';
import type { VerifyAnswer } from './verify-stage';
import { logger } from '../util/log';

const log = logger('pipeline');

export function sourceWalk(claims: ChunkClaims, metrics: FetchMetrics, verify: VerifyAnswer): FetchDispatch {
  return async (req) => {
    const blobId = req.bc.blob.blobId;
    const problem = decompressorProblem(req.bc.blob.compressor);
    if (problem) {
      for (const c of req.chunks) claims.fail(blobId, c, new ChunkFetchError(`blob ${blobId} chunk ${c.index}: ${problem}`, false));
      return;
    }
    let pending = req.chunks;
    let lastError = 'no chunk source configured';
    let mismatch = false;
    for (const src of req.sources) {
      if (pending.length === 0) break;
      const start = Math.min(...pending.map((c) => c.compressedOffset));
      const end = Math.max(...pending.map((c) => c.compressedOffset + c.compressedSize));
      const range: BlobRange = { blobId, offset: start, length: end - start };
      const t0 = performance.now();
      let raw: Buffer;
      try {
        raw = await src.read(range, { signal: req.ro.signal, prefetch: req.ro.prefetch, chunkDigests: pending.map((c) => hex(c.digest)) });
        if (raw.length !== range.length) throw new Error(`short answer: ${raw.length} of ${range.length} bytes`);
      } catch (e) {
        const unavailable = e instanceof SourceUnavailableError;
        metrics.record(src.name, { ms: performance.now() - t0, error: !unavailable, unavailable });
        lastError = `${src.name}: ${(e as Error).message}`;
        if (!unavailable) log.warn({ source: src.name, blob: blobId, offset: range.offset, length: range.length, err: (e as Error).message }, 'source read failed');
        continue;
      }
      metrics.record(src.name, { ms: performance.now() - t0, bytes: raw.length });
      const bad = await verify(req, pending, start, raw);
      if (bad.length) {
        mismatch = true;
        metrics.digestFailure(src.name, bad.length);
        lastError = `${src.name}: digest mismatch for ${bad.length} chunk(s)`;
        log.error({ source: src.name, blob: blobId, chunks: bad.map((c) => c.index) }, 'chunk digest mismatch, answer refused');
        try {
          src.rejected?.(range);
        } catch (e) {
          log.warn({ source: src.name, err: (e as Error).message }, 'rejected() hook failed');
        }
      }
      pending = bad;
    }
    for (const c of pending) {
      const err = new ChunkFetchError(`blob ${blobId} chunk ${c.index}: ${mismatch ? 'no source delivered bytes matching the digest' : 'no source could serve it'} (last: ${lastError})`, mismatch);
      claims.fail(blobId, c, err, mismatch);
    }
  };
}
