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
 *
 * Staging (`stagePath`): the prefetch list's data must sit first in the blob, in list order, but a
 * tar delivers files in its own order. Chunks are then written to two side files, hot (rank >= 0)
 * and cold; `sealData` (called before the tail, or implicitly by `append`/`finish`) writes the hot
 * chunks into the blob by rank (arrival order within a rank), then appends the cold file in 1 MiB
 * pieces (memory stays bounded), and gives every chunk its final offsets and index. Until then a
 * staged chunk's offsets and index are provisional.
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
  /** Prefix of the side files for staged chunks (`.hot`, `.cold`); without it every chunk is written in arrival order. */
  stagePath?: string;
}

/** Where chunk data is being written: the blob itself, or a side file of staged (hot or cold) chunks. */
interface Segment {
  path: string;
  fd: number | null;
  compressedEnd: number;
  uncompressedEnd: number;
  chunks: ChunkInfo[];
  /** Hot side file: each chunk's rank. */
  ranks: number[];
}

const COPY_PIECE = 1 << 20;

export interface WrittenBlob {
  blob: BlobInfo;
  tempPath: string;
}

export class BlobWriter {
  /** The layer's own blob; it enters the blob table with its first stored chunk. */
  private readonly blob: BlobInfo;
  private readonly own = new Map<string, ChunkInfo>();
  private readonly fromDict = new Map<ChunkInfo, ChunkInfo>();
  private readonly hash: Hash = createHash('sha256');
  private readonly main: Segment;
  private staged: { hot: Segment; cold: Segment } | null;
  /** Digest of an all-zero full chunk, computed once: sparse and zero-filled files are common. */
  private zeroChunk: { data: Buffer; digest: Buffer } | null = null;
  /** Bytes of chunk data handed in, and bytes that dedup (own blob or dict) saved from storing. */
  stats = { inputBytes: 0, dedupBytes: 0, dictBytes: 0 };

  constructor(private readonly opts: BlobWriterOptions) {
    const segment = (p: string): Segment => ({ path: p, fd: null, compressedEnd: 0, uncompressedEnd: 0, chunks: [], ranks: [] });
    this.main = segment(opts.tempPath);
    this.staged = opts.stagePath ? { hot: segment(`${opts.stagePath}.hot`), cold: segment(`${opts.stagePath}.cold`) } : null;
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

  /** This blob's own chunks by index (what the blob meta and `blob.digest` list); complete after `sealData`. */
  get stored(): ChunkInfo[] {
    return this.main.chunks;
  }

  /**
   * Stores (or finds) one chunk of file data and returns its chunk info. When staging, `rank` is the
   * file's place on the prefetch list (-1: not on it). A chunk already stored keeps its place
   * (dedup wins over order).
   */
  add(data: Buffer, rank = 0): ChunkInfo {
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
    const seg = !this.staged ? this.main : rank >= 0 ? this.staged.hot : this.staged.cold;
    const chunk = this.store(digest, data, seg);
    if (seg === this.staged?.hot) seg.ranks.push(rank);
    this.own.set(key, chunk);
    return chunk;
  }

  /**
   * Ends the chunk data: hot chunks by rank, then the cold ones, with their final offsets and
   * indexes. Returns the hot region's size in the blob (compressed bytes; 0 without staging).
   */
  sealData(): number {
    const staged = this.staged;
    if (!staged) return 0;
    this.staged = null;
    const { hot, cold } = staged;
    try {
      const order = hot.chunks.map((_, i) => i).sort((x, y) => hot.ranks[x] - hot.ranks[y] || x - y);
      for (const i of order) {
        const c = hot.chunks[i];
        const data = Buffer.allocUnsafe(c.compressedSize);
        if (fs.readSync(hot.fd!, data, 0, data.length, c.compressedOffset) !== data.length) throw new Error(`${hot.path}: short read`);
        this.place(c, data);
      }
      const hotEnd = this.main.compressedEnd;
      if (cold.fd !== null) {
        const buf = Buffer.allocUnsafe(COPY_PIECE);
        for (let pos = 0; pos < cold.compressedEnd; ) {
          const n = fs.readSync(cold.fd, buf, 0, Math.min(buf.length, cold.compressedEnd - pos), pos);
          if (n === 0) throw new Error(`${cold.path}: ended after ${pos} of ${cold.compressedEnd} bytes`);
          this.write(this.main, buf.subarray(0, n));
          pos += n;
        }
      }
      // With compressor none both ends are 4 KiB aligned and equal, so offsets move by the same amount.
      const first = this.main.chunks.length;
      const uShift = this.main.uncompressedEnd;
      cold.chunks.forEach((c, i) => {
        c.index = first + i;
        c.compressedOffset += hotEnd;
        c.uncompressedOffset += uShift;
      });
      this.main.chunks.push(...cold.chunks);
      this.main.uncompressedEnd += cold.uncompressedEnd;
      this.blob.uncompressedSize = this.main.uncompressedEnd;
      return hotEnd;
    } finally {
      for (const seg of [hot, cold]) {
        if (seg.fd !== null) fs.closeSync(seg.fd);
        seg.fd = null;
        fs.rmSync(seg.path, { force: true });
      }
    }
  }

  /** Writes a staged chunk's stored bytes at the end of the blob and gives it its final place. */
  private place(c: ChunkInfo, stored: Buffer): void {
    const m = this.main;
    const uncompressedOffset = m.uncompressedEnd;
    if (this.opts.compressor === 'none') this.pad(m, uncompressedOffset - m.compressedEnd);
    c.compressedOffset = m.compressedEnd;
    this.write(m, stored);
    c.uncompressedOffset = uncompressedOffset;
    m.uncompressedEnd = uncompressedOffset + alignUp(c.uncompressedSize, BLOCK);
    if (this.opts.compressor === 'none') this.pad(m, m.uncompressedEnd - m.compressedEnd);
    c.index = m.chunks.length;
    m.chunks.push(c);
  }

  /** Closes the blob file; null when no chunk was stored (the file is removed). */
  finish(): WrittenBlob | null {
    this.sealData();
    if (this.main.fd === null) return null;
    fs.closeSync(this.main.fd);
    this.main.fd = null;
    this.blob.blobId = this.hash.digest('hex');
    this.blob.compressedSize ||= this.main.compressedEnd;
    return { blob: this.blob, tempPath: this.opts.tempPath };
  }

  /** The blob being written (null before its first chunk); its table fields may be set before `finish`. */
  get current(): BlobInfo | null {
    return this.blob.chunkCount === 0 ? null : this.blob;
  }

  /** Bytes written so far to the blob (chunk data and appended sections; cold chunks after `sealData`). */
  get position(): number {
    return this.main.compressedEnd;
  }

  /** sha256 of everything written so far. */
  digestSoFar(): Buffer {
    return this.hash.copy().digest();
  }

  /** Adds bytes after the chunk data (tail sections); they count toward the blob's sha256. */
  append(buf: Buffer): void {
    this.sealData();
    this.open(this.main);
    this.write(this.main, buf);
  }

  /** Closes and deletes a partly written blob (after an error). */
  abort(): void {
    for (const seg of [this.main, this.staged?.hot, this.staged?.cold]) {
      if (!seg) continue;
      if (seg.fd !== null) fs.closeSync(seg.fd);
      seg.fd = null;
      fs.rmSync(seg.path, { force: true });
    }
  }

  private digest(data: Buffer): Buffer {
    if (data.length === this.opts.chunkSize) {
      if (!this.zeroChunk) this.zeroChunk = { data: Buffer.alloc(data.length), digest: chunkDigest(this.opts.digester, Buffer.alloc(data.length)) };
      if (data.equals(this.zeroChunk.data)) return this.zeroChunk.digest;
    }
    return chunkDigest(this.opts.digester, data);
  }

  private open(seg: Segment): number {
    // Side files are read back by sealData, so they are opened read-write.
    if (seg.fd === null) seg.fd = fs.openSync(seg.path, seg === this.main ? 'w' : 'w+', 0o644);
    return seg.fd;
  }

  private store(digest: Buffer, data: Buffer, seg: Segment): ChunkInfo {
    this.open(seg);
    const uncompressedOffset = seg.uncompressedEnd;
    const aligned = alignUp(data.length, BLOCK);
    let stored: Buffer;
    let compressed = false;
    let compressedOffset: number;
    if (this.opts.compressor === 'none') {
      // The compressed address space is the uncompressed one: write at the aligned offset.
      this.pad(seg, uncompressedOffset - seg.compressedEnd);
      compressedOffset = uncompressedOffset;
      stored = data;
    } else {
      compressedOffset = seg.compressedEnd;
      const out = compressChunk(this.opts.compressor, data);
      stored = out.data;
      compressed = out.compressed;
    }
    this.write(seg, stored);
    seg.uncompressedEnd = uncompressedOffset + aligned;
    this.blob.uncompressedSize = this.main.uncompressedEnd + (this.staged ? this.staged.hot.uncompressedEnd + this.staged.cold.uncompressedEnd : 0);
    if (this.opts.compressor === 'none') this.pad(seg, seg.uncompressedEnd - seg.compressedEnd);
    this.blob.chunkCount++;
    const index = seg.chunks.length;
    if (this.blob.chunkCount > 1 << 24) throw new Error('more than 2^24 chunks in one blob');
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
    seg.chunks.push(chunk);
    return chunk;
  }

  private pad(seg: Segment, n: number): void {
    while (n > 0) {
      const piece = n > BLOCK ? ZEROS : ZEROS.subarray(0, n);
      this.write(seg, piece);
      n -= piece.length;
    }
  }

  /** Writes at the segment's end; only the blob itself is hashed (the cold file is hashed when appended). */
  private write(seg: Segment, buf: Buffer): void {
    const fd = this.open(seg);
    let off = 0;
    while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off, seg === this.main ? null : seg.compressedEnd + off);
    if (seg === this.main) this.hash.update(buf);
    seg.compressedEnd += buf.length;
  }
}

export function alignUp(n: number, to: number): number {
  return Math.ceil(n / to) * to;
}
