/**
 * Writes the layer's data blob: chunks in arrival order, each stored once per blob (dedup by digest
 * and size), compressed with the layer's compressor, with the blob's sha256 computed as bytes are
 * written so the blob id is known the moment the last chunk lands.
 *
 * Layout (see docs/builder.md): chunk data first; `append` then adds the tail sections (blob meta,
 * chunk digests, inlined bootstrap, ToC: blob-tail.ts) to the same file and hash. Uncompressed
 * offsets are 4 KiB aligned.
 * With compressor `none` a chunk's compressed offset equals its uncompressed offset and the gaps
 * are zero-filled, so the blob file is directly an EROFS device the kernel can read.
 */
import { createHash, Hash } from 'node:crypto';
import * as fs from 'node:fs';
import { BlobInfo, CHUNK_COMPRESSED, ChunkInfo, Compressor, Digester } from '../format/model';
import { chunkDigest } from '../format/digest';
import { compressChunk } from '../format/codec';
import { BlobTable } from './blob-table';
import { ChunkDict, chunkKey } from './chunk-dict';

const BLOCK = 4096;
const ZEROS = Buffer.alloc(BLOCK);

export interface BlobWriterOptions {
  compressor: Compressor;
  digester: Digester;
  chunkSize: number;
  /** Where the blob is written while it is built (renamed by the caller when done). */
  tempPath: string;
  table: BlobTable;
  dict?: ChunkDict;
}

export interface WrittenBlob {
  blob: BlobInfo;
  tempPath: string;
}

export class BlobWriter {
  /** The layer's own blob; it enters the blob table with its first stored chunk. */
  private readonly blob: BlobInfo;
  private readonly own = new Map<string, ChunkInfo>();
  /** This blob's own chunks by index (what the blob meta and `blob.digest` list). */
  readonly stored: ChunkInfo[] = [];
  private readonly fromDict = new Map<ChunkInfo, ChunkInfo>();
  private readonly hash: Hash = createHash('sha256');
  private fd: number | null = null;
  private compressedEnd = 0;
  private uncompressedEnd = 0;
  /** Digest of an all-zero full chunk, computed once: sparse and zero-filled files are common. */
  private zeroChunk: { data: Buffer; digest: Buffer } | null = null;
  /** Bytes of chunk data handed in, and bytes that dedup (own blob or dict) saved from storing. */
  stats = { inputBytes: 0, dedupBytes: 0, dictBytes: 0 };

  constructor(private readonly opts: BlobWriterOptions) {
    this.blob = {
      blobId: '',
      compressor: opts.compressor,
      digester: opts.digester,
      chunkSize: opts.chunkSize,
      chunkCount: 0,
      compressedSize: 0,
      uncompressedSize: 0,
      features: 0,
      ciOffset: 0,
      ciCompressedSize: 0,
      ciUncompressedSize: 0,
      ciCompressor: 'none',
    };
  }

  /** Stores (or finds) one chunk of file data and returns its chunk info. */
  add(data: Buffer): ChunkInfo {
    const digest = this.digest(data);
    const key = chunkKey(digest, data.length);
    this.stats.inputBytes += data.length;
    const mine = this.own.get(key);
    if (mine) {
      this.stats.dedupBytes += data.length;
      return mine;
    }
    const hit = this.opts.dict?.lookup(digest, data.length);
    if (hit) {
      this.stats.dedupBytes += data.length;
      this.stats.dictBytes += data.length;
      let ref = this.fromDict.get(hit.chunk);
      if (!ref) {
        ref = { ...hit.chunk, blobIndex: this.opts.table.indexOf(hit.blob) };
        this.fromDict.set(hit.chunk, ref);
      }
      return ref;
    }
    const chunk = this.store(digest, data);
    this.own.set(key, chunk);
    return chunk;
  }

  /** Closes the blob file; null when no chunk was stored (the file is removed). */
  finish(): WrittenBlob | null {
    if (this.fd === null) return null;
    fs.closeSync(this.fd);
    this.fd = null;
    this.blob.blobId = this.hash.digest('hex');
    this.blob.compressedSize ||= this.compressedEnd;
    return { blob: this.blob, tempPath: this.opts.tempPath };
  }

  /** The blob being written (null before its first chunk); its table fields may be set before `finish`. */
  get current(): BlobInfo | null {
    return this.stored.length === 0 ? null : this.blob;
  }

  /** Bytes written so far (chunk data and appended sections). */
  get position(): number {
    return this.compressedEnd;
  }

  /** sha256 of everything written so far. */
  digestSoFar(): Buffer {
    return this.hash.copy().digest();
  }

  /** Adds bytes after the chunk data (tail sections); they count toward the blob's sha256. */
  append(buf: Buffer): void {
    if (this.fd === null) this.fd = fs.openSync(this.opts.tempPath, 'w', 0o644);
    this.write(buf);
  }

  /** Closes and deletes a partly written blob (after an error). */
  abort(): void {
    if (this.fd !== null) fs.closeSync(this.fd);
    this.fd = null;
    fs.rmSync(this.opts.tempPath, { force: true });
  }

  private digest(data: Buffer): Buffer {
    if (data.length === this.opts.chunkSize) {
      if (!this.zeroChunk) this.zeroChunk = { data: Buffer.alloc(data.length), digest: chunkDigest(this.opts.digester, Buffer.alloc(data.length)) };
      if (data.equals(this.zeroChunk.data)) return this.zeroChunk.digest;
    }
    return chunkDigest(this.opts.digester, data);
  }

  private store(digest: Buffer, data: Buffer): ChunkInfo {
    if (this.fd === null) this.fd = fs.openSync(this.opts.tempPath, 'w', 0o644);
    const uncompressedOffset = this.uncompressedEnd;
    const aligned = alignUp(data.length, BLOCK);
    let stored: Buffer;
    let compressed = false;
    let compressedOffset: number;
    if (this.opts.compressor === 'none') {
      // The compressed address space is the uncompressed one: write at the aligned offset.
      this.pad(uncompressedOffset - this.compressedEnd);
      compressedOffset = uncompressedOffset;
      stored = data;
    } else {
      compressedOffset = this.compressedEnd;
      const out = compressChunk(this.opts.compressor, data);
      stored = out.data;
      compressed = out.compressed;
    }
    this.write(stored);
    this.uncompressedEnd = uncompressedOffset + aligned;
    this.blob.uncompressedSize = this.uncompressedEnd;
    if (this.opts.compressor === 'none') this.pad(this.uncompressedEnd - this.compressedEnd);
    const index = this.blob.chunkCount++;
    if (index >= 1 << 24) throw new Error('more than 2^24 chunks in one blob');
    const chunk: ChunkInfo = {
      digest,
      blobIndex: this.opts.table.indexOf(this.blob),
      index,
      flags: compressed ? CHUNK_COMPRESSED : 0,
      compressedOffset,
      compressedSize: stored.length,
      uncompressedOffset,
      uncompressedSize: data.length,
    };
    this.stored.push(chunk);
    return chunk;
  }

  private pad(n: number): void {
    while (n > 0) {
      const piece = n > BLOCK ? ZEROS : ZEROS.subarray(0, n);
      this.write(piece);
      n -= piece.length;
    }
  }

  private write(buf: Buffer): void {
    let off = 0;
    while (off < buf.length) off += fs.writeSync(this.fd!, buf, off, buf.length - off);
    this.hash.update(buf);
    this.compressedEnd += buf.length;
  }
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
