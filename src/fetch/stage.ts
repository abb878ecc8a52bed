/**
 * The shape of the fetch stages (`pipeline.ts` composes them), after undici's interceptors: each
 * stage is a function of the next one's dispatch and returns its own.
 *
 * Reader side (`ReadDispatch`): one promise per wanted chunk, same order, each resolving with the
 * chunk's verified uncompressed bytes (only [from, to) when the request has spans) or rejecting
 * with ChunkFetchError. Fetch side (`FetchDispatch`): the chunks of the request are claimed in the
 * shared `ChunkClaims` by the caller; the dispatch settles every claim it was given (deliver or fail)
 * and resolves when it is done, rejecting only on an unexpected fault.
 */
import type { ChunkInfo } from '../format/model';
import type { BlobCacheFile } from '../cache/blob-cache';
import type { BlobChunks } from './blob-chunks';
import type { ChunkSource } from './source';

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

export interface ChunkRequest {
  bc: BlobChunks;
  cf: BlobCacheFile;
  chunks: ChunkInfo[];
  ro: ReadOptions;
  /** The source list as it was when the read started. */
  sources: readonly ChunkSource[];
  /** Per chunk, the bytes wanted (reader side only). */
  spans?: ChunkSpan[];
}

export type ReadDispatch = (req: ChunkRequest) => Promise<Buffer>[];
export type FetchDispatch = (req: ChunkRequest) => Promise<void>;
