/**
 * Blob meta (upstream's "blob compression context", `storage/src/meta/`): a 4 KiB header plus the
 * chunk info (CI) array describing where every chunk of a blob sits, compressed and uncompressed.
 * Upstream nydusd looks chunks up here; a RAFS v6 bootstrap's blob table entry points at it
 * (`ci_offset`, `ci_compressed_size`, `ci_uncompressed_size`, `ci_compressor`). docs/format.md §17
 * specifies the structures.
 *
 * Contract: `parseBlobMetaHeader` / `decodeChunkInfoArray` / `readBlobMeta` return the decoded
 * structures or throw FormatError naming what was wrong; every size is checked before allocation
 * (the CI array is at most 24 B × 2^24 chunks, as upstream's limits).
 */
import { decompressAny } from './codec';
import { BlobInfo, Compressor, FormatError } from './model';
import { COMPRESSION_ALGOS } from './layout';
import { u64 } from './bytes';

export const BLOB_META_MAGIC = 0xb10bb10b;
export const BLOB_META_HEADER_SIZE = 0x1000;
/** BlobFeatures bits that shape the blob meta. */
export const BLOB_FEATURE = {
  ALIGNED: 0x1,
  INLINED_FS_META: 0x2,
  CHUNK_INFO_V2: 0x4,
  ZRAN: 0x8,
  SEPARATE: 0x10,
  INLINED_CHUNK_DIGEST: 0x20,
  TARFS: 0x40,
  BATCH: 0x80,
  ENCRYPTED: 0x100,
  IS_CHUNKDICT_GENERATED: 0x200,
  EXTERNAL: 0x800,
  HAS_TAR_HEADER: 0x1000_0000,
  HAS_TOC: 0x2000_0000,
  CAP_TAR_TOC: 0x4000_0000,
} as const;
/**
 * Blob features whose chunks cannot be read as plain (optionally compressed) byte ranges of the
 * blob, and why; docs/format.md §19. An image with such a blob is refused before any read, so no
 * source is blamed for bytes we could not have decoded.
 */
const UNREADABLE_FEATURES: Array<[number, string]> = [
  [BLOB_FEATURE.ZRAN, 'ZRAN (an OCI gzip layer read in place through inflate contexts) is not supported'],
  [BLOB_FEATURE.BATCH, 'BATCH (small chunks compressed together) is not supported'],
  [BLOB_FEATURE.ENCRYPTED, 'ENCRYPTED blobs are not supported'],
  [BLOB_FEATURE.TARFS, 'TARFS blobs are not supported'],
  [BLOB_FEATURE.EXTERNAL, 'EXTERNAL (data in another storage backend) is not supported'],
];

/** Why the chunks of a blob with these features cannot be read here, or null. */
export function blobFeatureProblem(features: number): string | null {
  const hit = UNREADABLE_FEATURES.find(([bit]) => features & bit);
  return hit ? hit[1] : null;
}

/** RAFS_MAX_CHUNKS_PER_BLOB. */
const MAX_CHUNKS = 1 << 24;
/** The largest CI data (compressed or not) read: 24 B for each of RAFS_MAX_CHUNKS_PER_BLOB chunks. */
export const MAX_CI_BYTES = 24 * MAX_CHUNKS;

export interface BlobMetaHeader {
  features: number;
  ciCompressor: Compressor;
  ciEntries: number;
  ciOffset: number;
  ciCompressedSize: number;
  ciUncompressedSize: number;
  zranOffset: number;
  zranSize: number;
  zranCount: number;
}

/** One CI entry. `zran`/`batch` chunks need context this reader does not decode (see §17). */
export interface BlobMetaChunk {
  compressedOffset: number;
  compressedSize: number;
  uncompressedOffset: number;
  uncompressedSize: number;
  compressed: boolean;
  zran: boolean;
  batch: boolean;
  encrypted: boolean;
}

export interface BlobMeta {
  header: BlobMetaHeader;
  chunks: BlobMetaChunk[];
  /** v2 with ZRAN: the inflate contexts and dictionaries after the CI array, undecoded. */
  zranContexts?: Buffer;
  /** The same blob meta in upstream's cache-file form (`parseBlobMetaCacheFile`). */
  cacheFile(): Buffer;
}

/** Header layout (`BlobCompressionContextHeader`, 4096 B): magic at 0 and again at 4092. */
export function parseBlobMetaHeader(h: Buffer): BlobMetaHeader {
  const where = 'blob meta header';
  if (h.length !== BLOB_META_HEADER_SIZE) throw new FormatError(`${h.length} bytes, expected ${BLOB_META_HEADER_SIZE}`, where);
  if (h.readUInt32LE(0) !== BLOB_META_MAGIC || h.readUInt32LE(BLOB_META_HEADER_SIZE - 4) !== BLOB_META_MAGIC) {
    throw new FormatError('bad magic', where);
  }
  const algo = h.readUInt32LE(8);
  // Upstream maps any other value to none; we name it instead of guessing.
  if (algo >= COMPRESSION_ALGOS.length) throw new FormatError(`unknown CI compressor ${algo}`, `${where} @8`);
  return {
    features: h.readUInt32LE(4),
    ciCompressor: COMPRESSION_ALGOS[algo],
    ciEntries: h.readUInt32LE(12),
    ciOffset: u64(h, 16, where),
    ciCompressedSize: u64(h, 24, where),
    ciUncompressedSize: u64(h, 32, where),
    zranOffset: u64(h, 40, where),
    zranSize: u64(h, 48, where),
    zranCount: h.readUInt32LE(56),
  };
}

/**
 * Decodes `count` CI entries from the uncompressed CI data.
 * v1 (16 B): u64 uncomp_info = offset bits 12..43 | (size−1) low 20 bits at 44 | (size−1) high 4 bits
 * at 8..11; u64 comp_info = offset bits 0..39 | (size−1) high 4 bits at 40..43 | (size−1) low 20 bits
 * at 44. "Compressed" means the two sizes differ.
 * v2 (24 B): u64 uncomp_info = offset/4096 in bits 0..31 | (size−1) in bits 32..55 | flags in 56..63
 * (COMPRESSED 1, ZRAN 2, BATCH 4, ENCRYPTED 8, HAS_CRC32 0x10); u64 comp_info = offset bits 0..39 |
 * size bits 40..63; u64 data (zran/batch index and offset, or crc32).
 */
export function decodeChunkInfoArray(data: Buffer, count: number, v2: boolean): BlobMetaChunk[] {
  const size = v2 ? 24 : 16;
  if (count > MAX_CHUNKS || data.length < count * size) throw new FormatError(`${count} entries need ${count * size} bytes, have ${data.length}`, 'blob meta CI array');
  const out: BlobMetaChunk[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const p = i * size;
    const u = data.readBigUInt64LE(p);
    const c = data.readBigUInt64LE(p + 8);
    if (v2) {
      const flags = Number(u >> 56n);
      if (flags & ~0x1f) throw new FormatError(`unknown chunk flags 0x${flags.toString(16)}`, `blob meta CI entry ${i}`);
      out[i] = {
        uncompressedOffset: Number(u & 0xffff_ffffn) * 4096,
        uncompressedSize: Number((u >> 32n) & 0xff_ffffn) + 1,
        compressedOffset: Number(c & 0xff_ffff_ffffn),
        compressedSize: Number(c >> 40n),
        compressed: (flags & 0x1) !== 0,
        zran: (flags & 0x2) !== 0,
        batch: (flags & 0x4) !== 0,
        encrypted: (flags & 0x8) !== 0,
      };
    } else {
      const uncompressedSize = Number((u >> 44n) | ((u & 0xf00n) << 12n)) + 1;
      const compressedSize = Number((c >> 44n) | ((c & 0xf00_0000_0000n) >> 20n)) + 1;
      out[i] = {
        uncompressedOffset: Number(u & 0xfff_ffff_f000n),
        uncompressedSize,
        compressedOffset: Number(c & 0xff_ffff_ffffn),
        compressedSize,
        compressed: compressedSize !== uncompressedSize,
        zran: false,
        batch: false,
        encrypted: false,
      };
    }
  }
  return out;
}

/**
 * The blob meta of `blob`, read with `readAt(offset, length)` from the blob: the CI data at
 * `ci_offset` followed directly by the header, as upstream's reader fetches it. The header must
 * agree with the blob table entry (upstream `validate_header`); each chunk must lie inside the blob.
 */
export function readBlobMeta(blob: BlobInfo, readAt: (offset: number, length: number) => Buffer): BlobMeta {
  const where = `blob ${blob.blobId} meta`;
  if (blob.ciCompressedSize === 0 && blob.ciUncompressedSize === 0) throw new FormatError('the blob table entry names no blob meta', where);
  if (blob.ciCompressedSize > MAX_CI_BYTES || blob.ciUncompressedSize > MAX_CI_BYTES) throw new FormatError(`CI sizes ${blob.ciCompressedSize}/${blob.ciUncompressedSize}`, where);
  const raw = readAt(blob.ciOffset, blob.ciCompressedSize + BLOB_META_HEADER_SIZE);
  if (raw.length !== blob.ciCompressedSize + BLOB_META_HEADER_SIZE) throw new FormatError(`read ${raw.length} bytes at ${blob.ciOffset}`, where);
  const headerBytes = raw.subarray(blob.ciCompressedSize);
  const header = checkedHeader(blob, headerBytes, where);
  const data = blob.ciCompressedSize === blob.ciUncompressedSize && header.ciCompressor === 'none'
    ? raw.subarray(0, blob.ciCompressedSize)
    : decompressAny(header.ciCompressor, raw.subarray(0, blob.ciCompressedSize), blob.ciUncompressedSize, MAX_CI_BYTES);
  return { header, ...decodeBlobMetaData(data, header, blob.features, where), cacheFile: () => Buffer.concat([data, Buffer.alloc(align4k(data.length) - data.length), headerBytes]) };
}

/**
 * The blob meta of `blob` from upstream's cache-file form (`<work dir>/<blob id>.blob.meta`, what
 * nydusd keeps next to its cache and what `nydus-image create --blob-meta` writes): the uncompressed
 * CI data padded to 4 KiB, then the header (`BlobCompressionContextInfo::new`). Checked like
 * `readBlobMeta`.
 */
export function parseBlobMetaCacheFile(blob: BlobInfo, file: Buffer): BlobMeta {
  const where = `blob ${blob.blobId} meta file`;
  if (blob.ciUncompressedSize > MAX_CI_BYTES) throw new FormatError(`CI size ${blob.ciUncompressedSize}`, where);
  const aligned = align4k(blob.ciUncompressedSize);
  if (file.length !== aligned + BLOB_META_HEADER_SIZE) throw new FormatError(`${file.length} bytes, expected ${aligned + BLOB_META_HEADER_SIZE}`, where);
  const headerBytes = file.subarray(aligned);
  const header = checkedHeader(blob, headerBytes, where);
  return { header, ...decodeBlobMetaData(file.subarray(0, blob.ciUncompressedSize), header, blob.features, where), cacheFile: () => file };
}

function align4k(n: number): number {
  return Math.ceil(n / 4096) * 4096;
}

/** The header, which must agree with the blob table entry (upstream `validate_header`). */
function checkedHeader(blob: BlobInfo, headerBytes: Buffer, where: string): BlobMetaHeader {
  const header = parseBlobMetaHeader(headerBytes);
  const differs = (what: string, a: unknown, b: unknown): FormatError => new FormatError(`header ${what} ${String(a)} differs from the blob table's ${String(b)}`, where);
  if (header.ciCompressor !== blob.ciCompressor) throw differs('CI compressor', header.ciCompressor, blob.ciCompressor);
  if (header.ciOffset !== blob.ciOffset) throw differs('CI offset', header.ciOffset, blob.ciOffset);
  if (header.ciCompressedSize !== blob.ciCompressedSize) throw differs('CI compressed size', header.ciCompressedSize, blob.ciCompressedSize);
  if (header.ciUncompressedSize !== blob.ciUncompressedSize) throw differs('CI uncompressed size', header.ciUncompressedSize, blob.ciUncompressedSize);
  if (!(blob.features & BLOB_FEATURE.IS_CHUNKDICT_GENERATED) && header.ciEntries !== blob.chunkCount) throw differs('chunk count', header.ciEntries, blob.chunkCount);
  return header;
}

/**
 * The CI array (and zran contexts) from uncompressed blob meta data, sizes checked like upstream:
 * v1 exactly 16 B per chunk; v2 24 B per chunk, with ZRAN/BATCH data allowed after it.
 */
export function decodeBlobMetaData(data: Buffer, header: BlobMetaHeader, features: number, where = 'blob meta'): Omit<BlobMeta, 'header' | 'cacheFile'> {
  const v2 = (features & BLOB_FEATURE.CHUNK_INFO_V2) !== 0;
  const extra = (features & (BLOB_FEATURE.ZRAN | BLOB_FEATURE.BATCH)) !== 0;
  const need = header.ciEntries * (v2 ? 24 : 16);
  if (extra && !v2) throw new FormatError('ZRAN or BATCH without CHUNK_INFO_V2', where);
  if (extra ? data.length < need : data.length !== need) throw new FormatError(`CI data of ${data.length} bytes for ${header.ciEntries} chunks`, where);
  const chunks = decodeChunkInfoArray(data, header.ciEntries, v2);
  if (features & BLOB_FEATURE.ZRAN) {
    if (header.zranOffset !== need || header.zranOffset + header.zranSize > data.length || header.zranCount > header.ciEntries) {
      throw new FormatError(`zran contexts ${header.zranOffset}+${header.zranSize} (${header.zranCount}) do not fit the CI data`, where);
    }
    return { chunks, zranContexts: data.subarray(header.zranOffset, header.zranOffset + header.zranSize) };
  }
  return { chunks };
}
