/**
 * Blob table of contents (ToC): the index upstream nydus-image appends to a blob built with the
 * `blob-toc` feature. It names the sections the blob carries besides chunk data (the bootstrap
 * `image.boot`, the blob meta `blob.meta` and its header, chunk digests `blob.digest`) so a reader
 * can pull them out of the blob alone. docs/format.md §16 specifies it.
 *
 * Contract: `parseToc` takes the blob's tail and returns the entries or throws FormatError;
 * `extractTocEntry` returns a section's bytes only after its size and sha256 matched the entry
 * (output buffers are sized from the entry, bounded by MAX_TOC_SECTION).
 */
import { createHash } from 'node:crypto';
import * as binding from 'zstd-napi/binding';
import { FormatError } from './model';
import { u64 } from './bytes';

export const TOC_NAME = 'rafs.blob.toc';
/** Section names upstream writes (`storage/src/meta/toc.rs`). */
export const TOC_BOOTSTRAP = 'image.boot';
export const TOC_BLOB_META = 'blob.meta';
export const TOC_BLOB_META_HEADER = 'blob.meta.header';
export const TOC_BLOB_DIGEST = 'blob.digest';
/**
 * The chunk data itself. Upstream records the end of the data as this entry's offset (the writer's
 * position after it) and the compressed chunk bytes' sha256 as digest: it describes the data
 * region [offset − size, offset), it is not a section to extract.
 */
export const TOC_BLOB_RAW = 'image.blob';
export const TOC_ENTRY_SIZE = 128;
const TAR_HEADER = 512;
/** Upstream reads at most this much of the blob's end when it looks for the ToC. */
export const TOC_MAX_TAIL = 0x1000;
/** The largest section we extract (a bootstrap or blob meta of a very large layer). */
export const MAX_TOC_SECTION = 1 << 30;

const FLAG_NONE = 0x1;
const FLAG_ZSTD = 0x2;
const FLAG_LZ4_BLOCK = 0x4;

export interface TocEntry {
  name: string;
  /** 'none' | 'zstd' | 'lz4_block' (upstream writes no other). */
  compressor: 'none' | 'zstd' | 'lz4_block';
  /** sha256 of the uncompressed section; all zeros means "not recorded". */
  digest: Buffer;
  compressedOffset: number;
  compressedSize: number;
  uncompressedSize: number;
}

export interface Toc {
  entries: TocEntry[];
  /** sha256 of the entry array plus its tar header (what a blob table's `blob_toc_digest` holds). */
  digest: string;
  /** Bytes of entry array plus tar header (`blob_toc_size`). */
  size: number;
}

/** Octal tar number field (NUL/space padded). */
function tarOctal(b: Buffer, where: string): number {
  const s = b.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (!/^[0-7]{1,11}$/.test(s)) throw new FormatError(`bad tar size field ${JSON.stringify(s)}`, where);
  return parseInt(s, 8);
}

/**
 * Parses the ToC from `tail`, the last bytes of the blob (upstream reads min(4096, blob size rounded
 * down to 128)). The tail ends with a GNU tar header for a regular file named `rafs.blob.toc`; the
 * `size` bytes before that header are 128-byte entries.
 */
export function parseToc(tail: Buffer): Toc {
  if (tail.length < TAR_HEADER) throw new FormatError(`${tail.length} bytes is too small for a ToC`, 'blob ToC');
  const h = tail.subarray(tail.length - TAR_HEADER);
  const where = `blob ToC tar header @${tail.length - TAR_HEADER} of the tail`;
  const name = h.toString('latin1', 0, 100).replace(/\0.*$/s, '');
  if (name !== TOC_NAME) throw new FormatError(`tar entry is ${JSON.stringify(name)}, not ${TOC_NAME}`, where);
  if (h[156] !== 0x30 && h[156] !== 0) throw new FormatError(`tar entry type ${h[156]} is not a regular file`, where);
  if (h.toString('latin1', 257, 265) !== 'ustar  \0') throw new FormatError('not a GNU tar header', where);
  const size = tarOctal(h.subarray(124, 136), where);
  if (size === 0 || size % TOC_ENTRY_SIZE !== 0 || size > tail.length - TAR_HEADER) {
    throw new FormatError(`ToC size ${size} (entries of ${TOC_ENTRY_SIZE} B, at most ${tail.length - TAR_HEADER})`, where);
  }
  const start = tail.length - TAR_HEADER - size;
  const entries: TocEntry[] = [];
  for (let p = start; p < start + size; p += TOC_ENTRY_SIZE) {
    const at = `blob ToC entry ${entries.length}`;
    const flags = tail.readUInt32LE(p);
    const c = flags & 0xf;
    const compressor = c === FLAG_NONE ? 'none' : c === FLAG_ZSTD ? 'zstd' : c === FLAG_LZ4_BLOCK ? 'lz4_block' : undefined;
    if (!compressor || (flags & ~0xf) !== 0) throw new FormatError(`unknown flags 0x${flags.toString(16)}`, at);
    const rawName = tail.subarray(p + 8, p + 24);
    const entryName = rawName.toString('utf8').replace(/\0+$/, '');
    entries.push({
      name: entryName,
      compressor,
      digest: Buffer.from(tail.subarray(p + 24, p + 56)),
      compressedOffset: u64(tail, p + 56, at),
      compressedSize: u64(tail, p + 64, at),
      uncompressedSize: u64(tail, p + 72, at),
    });
  }
  return { entries, digest: createHash('sha256').update(tail.subarray(start)).digest('hex'), size: size + TAR_HEADER };
}

/** How many bytes of a blob's end to read for `parseToc` (upstream's auto-detection). */
export function tocTailSize(blobSize: number): number {
  return blobSize > TOC_MAX_TAIL ? TOC_MAX_TAIL : blobSize - (blobSize % 128);
}

/**
 * The uncompressed bytes of a section, given its compressed bytes (`blob[offset, offset+size)`).
 * Size and sha256 must match the entry (a zero digest is not checked, as upstream's reader does).
 */
export function extractTocEntry(e: TocEntry, compressed: Buffer): Buffer {
  const where = `blob ToC entry ${e.name}`;
  if (e.name === TOC_BLOB_RAW) throw new FormatError('is the chunk data region, not a section', where);
  if (compressed.length !== e.compressedSize) throw new FormatError(`got ${compressed.length} bytes, the entry says ${e.compressedSize}`, where);
  if (e.uncompressedSize > MAX_TOC_SECTION) throw new FormatError(`section of ${e.uncompressedSize} bytes is too large`, where);
  let out: Buffer;
  if (e.compressor === 'none') {
    out = compressed;
  } else if (e.compressor === 'zstd') {
    // A zstd stream (possibly several frames, without a content size): decoded into exactly the
    // entry's size; one byte more room tells "longer than the entry" apart.
    const buf = Buffer.allocUnsafe(e.uncompressedSize + 1);
    let n = 0;
    let p = 0;
    try {
      const d = new binding.DCtx();
      while (p < compressed.length) {
        const frame = binding.findFrameCompressedSize(compressed.subarray(p));
        n += d.decompress(buf.subarray(n), compressed.subarray(p, p + frame));
        p += frame;
      }
    } catch (err) {
      throw new FormatError(`zstd: ${(err as Error).message}`, where);
    }
    out = buf.subarray(0, n);
  } else {
    // Upstream cannot extract lz4_block sections either (its ToC reader refuses them).
    throw new FormatError('lz4_block sections cannot be extracted', where);
  }
  if (out.length !== e.uncompressedSize) throw new FormatError(`holds ${out.length} bytes, the entry says ${e.uncompressedSize}`, where);
  if (e.digest.some((b) => b !== 0) && !createHash('sha256').update(out).digest().equals(e.digest)) {
    throw new FormatError('sha256 of the section does not match the entry', where);
  }
  return out;
}
