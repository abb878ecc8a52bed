/**
 * The sections upstream's builder puts after a blob's chunk data with `--features blob-toc`
 * (and `--blob-inline-meta`), in upstream's order, each followed by its tar header:
 *
 *   chunk data | image.blob hdr | CI array, blob meta header | blob.meta hdr |
 *   chunk digests | blob.digest hdr | [bootstrap (zstd) | image.boot hdr] | ToC entries | rafs.blob.toc hdr
 *
 * Sources: builder/src/core/blob.rs (`finalize_blob_data`, `dump_meta_data`), builder/src/lib.rs
 * (`dump_bootstrap`, `dump_toc`) in dragonflyoss/nydus. docs/builder.md describes the result.
 *
 * Contract: call `writeBlobMeta` once after the last chunk, optionally `appendBootstrap`, then
 * `appendToc`; they set the blob's table fields (features, ci_*, ToC digest/size) as they go.
 */
import { BLOB_FEATURE, BLOB_META_HEADER_SIZE } from '../format/blob-meta';
import { encodeBlobMetaHeader, encodeChunkInfoV1 } from '../format/blob-meta-writer';
import { compressChunk } from '../format/codec';
import { BLOB_INLINED_FS_META, BlobInfo, Compressor } from '../format/model';
import { TOC_BLOB_DIGEST, TOC_BLOB_META, TOC_BLOB_META_HEADER, TOC_BLOB_RAW, TOC_BOOTSTRAP, TOC_NAME } from '../format/toc';
import { encodeTocEntries, sha256, tarTailHeader, TocEntrySpec } from '../format/toc-writer';
import { alignUp, BlobWriter } from './blob-writer';

/** Features of a blob written with a ToC, as upstream ≥ 2.2 sets them (blob table and blob meta header). */
export function tailFeatures(inlineBootstrap: boolean): number {
  return (
    (BLOB_FEATURE.CAP_TAR_TOC | BLOB_FEATURE.HAS_TOC | BLOB_FEATURE.HAS_TAR_HEADER | BLOB_FEATURE.ALIGNED | BLOB_FEATURE.INLINED_CHUNK_DIGEST |
      (inlineBootstrap ? BLOB_INLINED_FS_META : 0)) >>>
    0
  );
}

export class BlobTail {
  private readonly entries: TocEntrySpec[] = [];

  constructor(
    private readonly w: BlobWriter,
    private readonly compressor: Compressor,
  ) {}

  /** image.blob marker, blob meta (v1 CI array + header) and the chunk digest array. */
  writeBlobMeta(blob: BlobInfo, inlineBootstrap: boolean): void {
    const w = this.w;
    const chunks = w.stored;
    const dataEnd = w.position;
    const uncompressedEnd = chunks.reduce((m, c) => Math.max(m, c.uncompressedOffset + alignUp(c.uncompressedSize, 4096)), 0);
    w.append(tarTailHeader(TOC_BLOB_RAW, dataEnd));
    // Upstream's digest here covers the data and its tar header (the blob hash at this point).
    this.entries.push({ name: TOC_BLOB_RAW, compressor: 'none', digest: w.digestSoFar(), compressedOffset: dataEnd, compressedSize: dataEnd, uncompressedSize: uncompressedEnd });

    const features = tailFeatures(inlineBootstrap);
    const ci = encodeChunkInfoV1(chunks);
    const packed = compressChunk(this.compressor, ci);
    const ciCompressor: Compressor = packed.compressed ? this.compressor : 'none';
    const ciOffset = w.position;
    const header = encodeBlobMetaHeader({
      features,
      ciCompressor,
      ciEntries: chunks.length,
      ciOffset,
      ciCompressedSize: packed.data.length,
      ciUncompressedSize: ci.length,
      zranOffset: 0,
      zranSize: 0,
      zranCount: 0,
    });
    w.append(packed.data);
    w.append(header);
    w.append(tarTailHeader(TOC_BLOB_META, packed.data.length + BLOB_META_HEADER_SIZE));
    this.entries.push({ name: TOC_BLOB_META, compressor: tocCompressor(ciCompressor), digest: sha256(ci), compressedOffset: ciOffset, compressedSize: packed.data.length, uncompressedSize: ci.length });
    this.entries.push({ name: TOC_BLOB_META_HEADER, compressor: 'none', digest: sha256(header), compressedOffset: ciOffset + packed.data.length, compressedSize: BLOB_META_HEADER_SIZE, uncompressedSize: BLOB_META_HEADER_SIZE });

    // Chunk digests in chunk index order; upstream stores them uncompressed.
    const digests = Buffer.concat(chunks.map((c) => c.digest));
    const digestOffset = w.position;
    w.append(digests);
    w.append(tarTailHeader(TOC_BLOB_DIGEST, digests.length));
    this.entries.push({ name: TOC_BLOB_DIGEST, compressor: 'none', digest: sha256(digests), compressedOffset: digestOffset, compressedSize: digests.length, uncompressedSize: digests.length });

    Object.assign(blob, { features, ciCompressor, ciOffset, ciCompressedSize: packed.data.length, ciUncompressedSize: ci.length });
  }

  /** The bootstrap, zstd-compressed when that is smaller (upstream's `image.boot`). */
  appendBootstrap(boot: Buffer): void {
    const packed = compressChunk('zstd', boot);
    const offset = this.w.position;
    this.w.append(packed.data);
    this.w.append(tarTailHeader(TOC_BOOTSTRAP, packed.data.length));
    this.entries.push({ name: TOC_BOOTSTRAP, compressor: packed.compressed ? 'zstd' : 'none', digest: sha256(boot), compressedOffset: offset, compressedSize: packed.data.length, uncompressedSize: boot.length });
  }

  /** The ToC itself; returns what the blob table records of it. */
  appendToc(): { tocDigest: string; tocSize: number } {
    const data = encodeTocEntries(this.entries);
    const header = tarTailHeader(TOC_NAME, data.length);
    this.w.append(data);
    this.w.append(header);
    return { tocDigest: sha256(data, header).toString('hex'), tocSize: data.length + header.length };
  }
}

function tocCompressor(c: Compressor): TocEntrySpec['compressor'] {
  if (c === 'none' || c === 'zstd' || c === 'lz4_block') return c;
  throw new Error(`no ToC flag for compressor ${c}`);
}
