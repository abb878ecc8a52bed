/**
 * Writer half of the blob meta (docs/format.md §17, upstream `storage/src/meta/mod.rs`
 * `BlobCompressionContextHeader` and `chunk_info_v1.rs` `BlobChunkInfoV1Ondisk`): the 4 KiB header
 * and the v1 chunk info array (16 B per chunk), which is what upstream's builder writes for
 * dir-rafs / tar-rafs / targz-rafs blobs without batch, zran or encryption.
 *
 * Contract: `encodeChunkInfoV1` and `encodeBlobMetaHeader` return exactly the on-disk bytes and throw
 * FormatError for a value outside its bit field (the same limits upstream asserts).
 */
import { BLOB_META_HEADER_SIZE, BLOB_META_MAGIC, BlobMetaHeader } from './blob-meta';
import { COMPRESSION_ALGOS } from './layout';
import { FormatError } from './model';

export interface ChunkPlacement {
  compressedOffset: number;
  compressedSize: number;
  uncompressedOffset: number;
  uncompressedSize: number;
}

/** Sizes are stored minus one in 24 bits; offsets in 40 bits (compressed) / bits 12..43 (uncompressed, 4 KiB aligned). */
export function encodeChunkInfoV1(chunks: ChunkPlacement[]): Buffer {
  const out = Buffer.alloc(chunks.length * 16);
  chunks.forEach((c, i) => {
    const at = `blob meta CI entry ${i}`;
    if (c.compressedSize < 1 || c.compressedSize > 1 << 24 || c.uncompressedSize < 1 || c.uncompressedSize > 1 << 24) {
      throw new FormatError(`chunk sizes ${c.compressedSize}/${c.uncompressedSize} outside 1..2^24`, at);
    }
    if (c.compressedOffset >= 2 ** 40) throw new FormatError(`compressed offset ${c.compressedOffset} beyond 40 bits`, at);
    if (c.uncompressedOffset % 4096 !== 0 || c.uncompressedOffset >= 2 ** 44) throw new FormatError(`uncompressed offset ${c.uncompressedOffset} not 4 KiB aligned below 2^44`, at);
    const us = BigInt(c.uncompressedSize - 1);
    const cs = BigInt(c.compressedSize - 1);
    const uncomp = ((us & 0xf_ffffn) << 44n) | BigInt(c.uncompressedOffset) | ((us & 0xf0_0000n) >> 12n);
    const comp = ((cs & 0xf_ffffn) << 44n) | ((cs & 0xf0_0000n) << 20n) | BigInt(c.compressedOffset);
    out.writeBigUInt64LE(uncomp, i * 16);
    out.writeBigUInt64LE(comp, i * 16 + 8);
  });
  return out;
}

export function encodeBlobMetaHeader(h: BlobMetaHeader): Buffer {
  const out = Buffer.alloc(BLOB_META_HEADER_SIZE);
  const algo = COMPRESSION_ALGOS.indexOf(h.ciCompressor as (typeof COMPRESSION_ALGOS)[number]);
  if (algo < 0) throw new FormatError(`CI compressor ${h.ciCompressor}`, 'blob meta header');
  out.writeUInt32LE(BLOB_META_MAGIC, 0);
  out.writeUInt32LE(h.features >>> 0, 4);
  out.writeUInt32LE(algo, 8);
  out.writeUInt32LE(h.ciEntries, 12);
  out.writeBigUInt64LE(BigInt(h.ciOffset), 16);
  out.writeBigUInt64LE(BigInt(h.ciCompressedSize), 24);
  out.writeBigUInt64LE(BigInt(h.ciUncompressedSize), 32);
  out.writeBigUInt64LE(BigInt(h.zranOffset), 40);
  out.writeBigUInt64LE(BigInt(h.zranSize), 48);
  out.writeUInt32LE(h.zranCount, 56);
  out.writeUInt32LE(BLOB_META_MAGIC, BLOB_META_HEADER_SIZE - 4);
  return out;
}
