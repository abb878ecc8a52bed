/** Options and result of building one layer (`nydus-image create`). */
import { Digester, RafsImage } from '../format/model';

export type LayerSource = { kind: 'dir'; path: string } | { kind: 'tar'; stream: NodeJS.ReadableStream; gzip: boolean };

export interface CreateOptions {
  source: LayerSource;
  /** Where the layer bootstrap is written; not used (may be absent) with `inlineBootstrap`. */
  bootstrapPath?: string;
  /** Put the bootstrap into the blob (upstream `--blob-inline-meta`); no bootstrap file. Default false. */
  inlineBootstrap?: boolean;
  /** The blob file to write; or `blobDir`, where the blob is named by its sha256. One is required. */
  blobPath?: string;
  blobDir?: string;
  /** Default `zstd`. */
  compressor?: 'zstd' | 'none';
  /** Default 0x100000; a power of two from 4 KiB to 16 MiB. */
  chunkSize?: number;
  /** Default `sha256` (see docs/builder.md). */
  digester?: Digester;
  /** Chunks found here are referenced, not stored again. */
  chunkDict?: RafsImage;
  /**
   * Absolute paths to put in the prefetch table, in order. The data of the files they name (and of
   * files below named directories) is written first in the blob, contiguous, unless one is `/`.
   */
  prefetchFiles?: string[];
  /** Build time recorded in the bootstrap (seconds); default now, 0 for reproducible output. */
  buildTime?: number;
  /** Called with the number of source bytes consumed since the last call. */
  onProgress?: (bytes: number) => void;
}

export interface CreateResult {
  image: RafsImage;
  /** null when the bootstrap went into the blob. */
  bootstrapPath: string | null;
  /** sha256 of the blob file; null when the layer has no file data of its own. */
  blobId: string | null;
  blobPath: string | null;
  /** Bytes of the blob file, tail sections included (0 without a blob). */
  blobSize: number;
  /** Bytes of chunk data at the head of the blob (what dedup saves from). */
  dataSize: number;
  /** Bytes of the blob's uncompressed (4 KiB aligned) address space. */
  uncompressedSize: number;
  /** Bytes at the head of the blob holding the prefetch files' chunks (0 without reordering). */
  prefetchSize: number;
}

export const DEFAULT_CHUNK_SIZE = 0x100000;

export function validateChunkSize(n: number): void {
  if (!Number.isInteger(n) || n < 0x1000 || n > 0x1000000 || (n & (n - 1)) !== 0) {
    throw new Error(`chunk size ${n} is not a power of two between 0x1000 and 0x1000000`);
  }
}
