/**
 * The chunk fetch pipeline: turns "these chunks of this blob, please" into verified uncompressed
 * bytes, from the blob cache when it can and from the ordered `ChunkSource` list when it must.
 *
 * For one `read(blob, chunks)`:
 *  1. chunks ready in the cache are read back; the first read of each chunk in this process (every
 *     read with `validateCache`) is digest-checked, and a chunk that fails is forgotten and fetched;
 *  2. chunks another caller is already fetching are awaited, not fetched twice (in-flight dedup);
 *  3. the rest are extended with the following not-cached chunks of the blob up to `amplifyIo`
 *     (read amplification), grouped into contiguous compressed ranges (gaps up to amplifyIo/128 are
 *     downloaded and dropped) no larger than the range limit;
 *  4. each range goes to the sources in order. An unavailable source is skipped; a failed read
 *     counts an error and moves on; every chunk of an answer is decompressed and its digest checked:
 *     good chunks are cached and served, bad ones count a digest failure, `source.rejected(range)`
 *     is called and only the bad chunks move on to the next source;
 *  5. a chunk no source could deliver with the right digest rejects with `ChunkFetchError`
 *     (`digestMismatch` set when some source did answer, wrongly) and, in that case, keeps failing
 *     without new requests for POISON_HOLD_MS. Unverified bytes are never returned or cached.
 *  A blob whose compressor this process cannot decompress is never fetched: its chunks reject at
 *  once and no source is asked, so no mirror or peer is blamed for our own limitation (nydusd
 *  refuses such images at mount; this guards every other caller).
 */
import type { BlobInfo, ChunkInfo } from '../format/model';
import { CHUNK_COMPRESSED } from '../format/model';
import { chunkDigest } from '../format/digest';
import { decompressChunk, decompressorProblem } from '../format/codec';
import type { BlobCacheFile, BlobCacheManager } from '../cache/blob-cache';
import { ChunkSource, SourceUnavailableError, BlobRange } from './source';
import { FetchMetrics } from './metrics';
import { logger } from '../util/log';

const log = logger('pipeline');

/** Read amplification never goes below this (upstream's floor for user_io_batch_size). */
export const MIN_AMPLIFY = 128 * 1024;
/**
 * A chunk every source answered wrongly fails fast for this long: the kernel retries a failed
 * readahead page by page, and those retries should not hammer the backend or recount the failure.
 */
export const POISON_HOLD_MS = 5000;

/** A blob plus all its chunks in compressed-offset order: what amplification walks along. */
export class BlobChunks {
  /** Position in `ordered` of each chunk index. */
  private readonly pos: Int32Array;

  constructor(
    public readonly blob: BlobInfo,
    public readonly ordered: ChunkInfo[],
  ) {
    let n = blob.chunkCount;
    for (const c of ordered) if (c.index >= n) n = c.index + 1;
    this.pos = new Int32Array(n).fill(-1);
    ordered.forEach((c, i) => (this.pos[c.index] = i));
  }

  /** Builds the table from every chunk the image references in this blob (duplicates collapse). */
  static fromChunks(blob: BlobInfo, chunks: Iterable<ChunkInfo>): BlobChunks {
    const byIndex = new Map<number, ChunkInfo>();
    for (const c of chunks) if (!byIndex.has(c.index)) byIndex.set(c.index, c);
    const ordered = [...byIndex.values()].sort((a, b) => a.compressedOffset - b.compressedOffset);
    return new BlobChunks(blob, ordered);
  }

  position(chunk: ChunkInfo): number {
    return chunk.index < this.pos.length ? this.pos[chunk.index] : -1;
  }
}

/** The part [from, to) of a chunk's uncompressed bytes a caller wants. */
export interface ChunkSpan {
  from: number;
  to: number;
}

export interface ReadOptions {
  signal?: AbortSignal;
  prefetch?: boolean;
  /** Largest single backend range (default max(amplifyIo, 1 MiB)). */
  maxRangeBytes?: number;
  /** Do not extend the read with neighbouring chunks. */
  noAmplify?: boolean;
}

export interface PipelineOptions {
  cache: BlobCacheManager;
  sources: ChunkSource[];
  metrics: FetchMetrics;
  /** Bytes of read amplification (amplify_io); 0 disables it. */
  amplifyIo: number;
  /** Re-check the digest of cached chunks on every read (digest_validate), not just the first. */
  validateCache?: boolean;
}

/** A chunk no source delivered correctly; the FUSE layer answers EIO. */
export class ChunkFetchError extends Error {
  readonly code = 'EIO';
  constructor(
    message: string,
    public readonly digestMismatch: boolean,
  ) {
    super(message);
    this.name = 'ChunkFetchError';
  }
}

interface Deferred {
  promise: Promise<Buffer>;
  resolve(b: Buffer): void;
  reject(e: Error): void;
}

function deferred(): Deferred {
  let resolve!: (b: Buffer) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<Buffer>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Amplified chunks may have no waiter; their failure must not become an unhandled rejection.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

function hex(b: Buffer): string {
  return b.toString('hex');
}

export class ChunkPipeline {
  private sourceList: ChunkSource[];
  private readonly inflight = new Map<string, Deferred>();
  /** Chunks no source delivered correctly, until when to fail them without asking again. */
  private readonly poisoned = new Map<string, { until: number; error: ChunkFetchError }>();
  /** Uncompressed bytes delivered for prefetch reads (blobcache metrics). */
  prefetchBytes = 0;
  prefetchRequests = 0;

  constructor(private readonly opts: PipelineOptions) {
    this.sourceList = [...opts.sources];
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
    const out: Promise<Buffer>[] = new Array(wanted.length);
    const sliced: boolean[] = new Array(wanted.length).fill(false);
    const missing: ChunkInfo[] = [];
    for (let i = 0; i < wanted.length; i++) {
      const c = wanted[i];
      const key = `${bc.blob.blobId}:${c.index}`;
      const running = this.inflight.get(key);
      const bad = this.poisoned.get(key);
      if (bad && bad.until > Date.now()) {
        out[i] = Promise.reject(bad.error);
      } else if (running) {
        out[i] = running.promise;
      } else if (spans && cf.isReady(c) && cf.verified(c) && !this.opts.validateCache) {
        // Fast path of warm reads: a FUSE read wants 128 KiB, not the whole (1 MiB) chunk.
        const { from, to } = spans[i];
        sliced[i] = true;
        out[i] = cf.read(c, from, to).then((b) => (b ? this.hit(b) : this.readCached(bc, cf, c, ro).then((full) => full.subarray(from, to))));
      } else if (cf.isReady(c)) {
        out[i] = this.readCached(bc, cf, c, ro);
      } else {
        const d = deferred();
        this.inflight.set(key, d);
        missing.push(c);
        out[i] = d.promise;
      }
    }
    if (missing.length > 0) {
      this.opts.cache.stats.misses += missing.length;
      const all = ro.noAmplify ? missing : this.amplify(bc, cf, missing);
      this.fetchAll(bc, cf, all, ro).catch((e: Error) => {
        // An unexpected failure must not leave readers waiting forever.
        for (const c of all) this.take(bc.blob.blobId, c)?.reject(new ChunkFetchError(`blob ${bc.blob.blobId} chunk ${c.index}: ${e.message}`, false));
      });
    }
    if (spans) {
      for (let i = 0; i < out.length; i++) {
        if (!sliced[i]) out[i] = out[i].then((b) => b.subarray(spans[i].from, spans[i].to));
      }
    }
    return Promise.all(out);
  }

  private async readCached(bc: BlobChunks, cf: BlobCacheFile, c: ChunkInfo, ro: ReadOptions): Promise<Buffer> {
    const data = await cf.read(c);
    if (data && !this.opts.validateCache && cf.verified(c)) return this.hit(data);
    if (data && chunkDigest(bc.blob.digester, data).equals(c.digest)) {
      cf.markVerified(c);
      return this.hit(data);
    }
    log.warn({ blob: bc.blob.blobId, chunk: c.index }, 'cached chunk failed verification, refetching');
    cf.invalidate(c);
    const [fresh] = await this.read(bc, [c], { ...ro, noAmplify: true });
    return fresh;
  }

  private hit(data: Buffer): Buffer {
    this.opts.cache.stats.hits++;
    this.opts.cache.stats.hitBytes += data.length;
    return data;
  }

  /** Adds the chunks that follow the last missing one, not cached and not in flight, up to amplifyIo. */
  private amplify(bc: BlobChunks, cf: BlobCacheFile, missing: ChunkInfo[]): ChunkInfo[] {
    if (this.opts.amplifyIo <= 0) return missing;
    const target = Math.max(this.opts.amplifyIo, MIN_AMPLIFY);
    const sorted = [...missing].sort((a, b) => a.compressedOffset - b.compressedOffset);
    const start = sorted[0].compressedOffset;
    const last = sorted[sorted.length - 1];
    const extra: ChunkInfo[] = [];
    for (let p = bc.position(last) + 1; p > 0 && p < bc.ordered.length; p++) {
      const c = bc.ordered[p];
      const cEnd = c.compressedOffset + c.compressedSize;
      if (cEnd - start > target) break;
      const key = `${bc.blob.blobId}:${c.index}`;
      // A chunk that failed verification is fetched again only when a read asks for it.
      if (cf.isReady(c) || this.inflight.has(key) || this.poisoned.has(key)) break;
      const d = deferred();
      this.inflight.set(key, d);
      extra.push(c);
    }
    return extra.length ? [...sorted, ...extra] : sorted;
  }

  /** Groups chunks (compressed-offset order) into contiguous ranges bounded in size. */
  private group(chunks: ChunkInfo[], maxBytes: number): ChunkInfo[][] {
    const gapOk = Math.max(this.opts.amplifyIo >> 7, 0);
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

  private async fetchAll(bc: BlobChunks, cf: BlobCacheFile, chunks: ChunkInfo[], ro: ReadOptions): Promise<void> {
    const maxBytes = ro.maxRangeBytes ?? Math.max(this.opts.amplifyIo, 1 << 20);
    const sources = this.sourceList;
    await Promise.all(this.group(chunks, maxBytes).map((g) => this.fetchGroup(bc, cf, g, sources, ro)));
  }

  private async fetchGroup(bc: BlobChunks, cf: BlobCacheFile, chunks: ChunkInfo[], sources: ChunkSource[], ro: ReadOptions): Promise<void> {
    const blobId = bc.blob.blobId;
    const problem = decompressorProblem(bc.blob.compressor);
    if (problem) {
      for (const c of chunks) this.take(blobId, c)?.reject(new ChunkFetchError(`blob ${blobId} chunk ${c.index}: ${problem}`, false));
      return;
    }
    let pending = chunks;
    let lastError = 'no chunk source configured';
    let mismatch = false;
    for (const src of sources) {
      if (pending.length === 0) break;
      const start = Math.min(...pending.map((c) => c.compressedOffset));
      const end = Math.max(...pending.map((c) => c.compressedOffset + c.compressedSize));
      const range: BlobRange = { blobId, offset: start, length: end - start };
      const t0 = performance.now();
      let raw: Buffer;
      try {
        raw = await src.read(range, { signal: ro.signal, prefetch: ro.prefetch, chunkDigests: pending.map((c) => hex(c.digest)) });
        if (raw.length !== range.length) throw new Error(`short answer: ${raw.length} of ${range.length} bytes`);
      } catch (e) {
        const unavailable = e instanceof SourceUnavailableError;
        this.opts.metrics.record(src.name, { ms: performance.now() - t0, error: !unavailable, unavailable });
        lastError = `${src.name}: ${(e as Error).message}`;
        if (!unavailable) log.warn({ source: src.name, blob: blobId, offset: range.offset, length: range.length, err: (e as Error).message }, 'source read failed');
        continue;
      }
      this.opts.metrics.record(src.name, { ms: performance.now() - t0, bytes: raw.length });
      const bad: ChunkInfo[] = [];
      for (const c of pending) {
        const piece = raw.subarray(c.compressedOffset - start, c.compressedOffset - start + c.compressedSize);
        let data: Buffer | undefined;
        try {
          data = decompressChunk(bc.blob.compressor, piece, c.uncompressedSize, (c.flags & CHUNK_COMPRESSED) !== 0);
        } catch {
          data = undefined;
        }
        if (!data || data.length !== c.uncompressedSize || !chunkDigest(bc.blob.digester, data).equals(c.digest)) {
          bad.push(c);
          continue;
        }
        await this.deliver(bc, cf, c, data, ro);
      }
      if (bad.length) {
        mismatch = true;
        this.opts.metrics.digestFailure(src.name, bad.length);
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
      if (mismatch) this.poisoned.set(`${blobId}:${c.index}`, { until: Date.now() + POISON_HOLD_MS, error: err });
      this.take(blobId, c)?.reject(err);
    }
  }

  private take(blobId: string, c: ChunkInfo): Deferred | undefined {
    const key = `${blobId}:${c.index}`;
    const d = this.inflight.get(key);
    this.inflight.delete(key);
    return d;
  }

  /**
   * Hands verified bytes to the waiters at once, then writes them to the cache. The in-flight entry
   * stays until the write is done, so a read arriving meanwhile joins it instead of refetching.
   */
  private async deliver(bc: BlobChunks, cf: BlobCacheFile, c: ChunkInfo, data: Buffer, ro: ReadOptions): Promise<void> {
    const key = `${bc.blob.blobId}:${c.index}`;
    const d = this.inflight.get(key);
    this.poisoned.delete(key);
    if (ro.prefetch) {
      this.prefetchBytes += data.length;
      this.prefetchRequests++;
    }
    d?.resolve(data);
    try {
      await cf.write(c, data);
      cf.markVerified(c);
    } catch (e) {
      // The bytes are verified; a full disk costs a refetch later, not this read.
      log.warn({ blob: bc.blob.blobId, chunk: c.index, err: (e as Error).message }, 'cache write failed');
    } finally {
      if (this.inflight.get(key) === d) this.inflight.delete(key);
    }
  }
}
