/**
 * Compact chunk records for a mounted image. A decoded bootstrap holds one plain object per chunk
 * (eight numbers and its own 32-byte digest Buffer: ~220 bytes of heap); a shared daemon keeps many
 * images for as long as they are mounted, so a rafs instance moves the fields into typed arrays and
 * keeps one small view object per chunk.
 *
 * `FileNode` goes one step further for regular files: no per-file chunk array at all.
 *
 * Contract: `add(c)` returns a `ChunkInfo` whose every field reads back equal to `c`'s (`digest` as
 * a Buffer view into one packed buffer, equal by content). The records are immutable. View objects
 * are not unique per record (`FileNode.chunks` makes fresh ones): key chunks by blob and index,
 * never by object identity.
 */
import type { ChunkInfo, Inode } from '../format/model';

const DIGEST_BYTES = 32;

export class ChunkTable {
  private n = 0;
  private readonly blobIndex: Uint32Array;
  private readonly chunkIndex: Uint32Array;
  private readonly flags: Uint32Array;
  private readonly compressedOffset: Float64Array;
  private readonly compressedSize: Uint32Array;
  private readonly uncompressedOffset: Float64Array;
  private readonly uncompressedSize: Uint32Array;
  private readonly digests: Buffer;

  constructor(readonly capacity: number) {
    this.blobIndex = new Uint32Array(capacity);
    this.chunkIndex = new Uint32Array(capacity);
    this.flags = new Uint32Array(capacity);
    this.compressedOffset = new Float64Array(capacity);
    this.compressedSize = new Uint32Array(capacity);
    this.uncompressedOffset = new Float64Array(capacity);
    this.uncompressedSize = new Uint32Array(capacity);
    this.digests = Buffer.alloc(capacity * DIGEST_BYTES);
  }

  /** Records added so far. */
  get length(): number {
    return this.n;
  }

  /** A view of record `i`. */
  ref(i: number): ChunkInfo {
    if (i < 0 || i >= this.n) throw new RangeError(`chunk record ${i} out of range (${this.n} records)`);
    return new ChunkRef(this, i);
  }

  add(c: ChunkInfo): ChunkInfo {
    if (this.n >= this.capacity) throw new Error(`chunk table full (${this.capacity} records)`);
    if (c.digest.length !== DIGEST_BYTES) throw new Error(`chunk ${c.index} of blob ${c.blobIndex}: digest of ${c.digest.length} bytes, expected ${DIGEST_BYTES}`);
    const i = this.n++;
    this.blobIndex[i] = c.blobIndex;
    this.chunkIndex[i] = c.index;
    this.flags[i] = c.flags;
    this.compressedOffset[i] = c.compressedOffset;
    this.compressedSize[i] = c.compressedSize;
    this.uncompressedOffset[i] = c.uncompressedOffset;
    this.uncompressedSize[i] = c.uncompressedSize;
    c.digest.copy(this.digests, i * DIGEST_BYTES);
    return new ChunkRef(this, i);
  }

  digestAt(i: number): Buffer {
    return this.digests.subarray(i * DIGEST_BYTES, (i + 1) * DIGEST_BYTES);
  }
  blobIndexAt(i: number): number {
    return this.blobIndex[i];
  }
  indexAt(i: number): number {
    return this.chunkIndex[i];
  }
  flagsAt(i: number): number {
    return this.flags[i];
  }
  compressedOffsetAt(i: number): number {
    return this.compressedOffset[i];
  }
  compressedSizeAt(i: number): number {
    return this.compressedSize[i];
  }
  uncompressedOffsetAt(i: number): number {
    return this.uncompressedOffset[i];
  }
  uncompressedSizeAt(i: number): number {
    return this.uncompressedSize[i];
  }
}

/**
 * A regular file of a mounted image, with its chunk list kept as a run of ChunkTable records instead
 * of an array of objects: `chunks` builds fresh view objects on each read (cheap, short-lived).
 */
export class FileNode implements Inode {
  readonly kind = 'file' as const;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  size: number;
  rdev: number;
  xattrs: Map<string, Buffer>;
  ino?: number;
  private readonly first: number;
  private readonly count: number;

  constructor(
    from: Inode,
    private readonly table: ChunkTable,
  ) {
    this.mode = from.mode;
    this.uid = from.uid;
    this.gid = from.gid;
    this.mtime = from.mtime;
    this.mtimeNsec = from.mtimeNsec;
    this.size = from.size;
    this.rdev = from.rdev;
    this.xattrs = from.xattrs;
    this.ino = from.ino;
    const chunks = from.chunks ?? [];
    this.first = table.length;
    this.count = chunks.length;
    for (const c of chunks) table.add(c);
  }

  get chunks(): ChunkInfo[] {
    return this.chunkSlice(0, this.count);
  }

  /** Chunks [from, to) of the file: a read needs a few, not the whole list of a big file. */
  chunkSlice(from: number, to: number): ChunkInfo[] {
    const end = Math.min(to, this.count);
    const out: ChunkInfo[] = new Array(Math.max(0, end - from));
    for (let k = from; k < end; k++) out[k - from] = this.table.ref(this.first + k);
    return out;
  }
}

/** One record of a ChunkTable, read through getters (two fields per chunk instead of nine). */
class ChunkRef implements ChunkInfo {
  constructor(
    private readonly t: ChunkTable,
    private readonly i: number,
  ) {}
  get digest(): Buffer {
    return this.t.digestAt(this.i);
  }
  get blobIndex(): number {
    return this.t.blobIndexAt(this.i);
  }
  get index(): number {
    return this.t.indexAt(this.i);
  }
  get flags(): number {
    return this.t.flagsAt(this.i);
  }
  get compressedOffset(): number {
    return this.t.compressedOffsetAt(this.i);
  }
  get compressedSize(): number {
    return this.t.compressedSizeAt(this.i);
  }
  get uncompressedOffset(): number {
    return this.t.uncompressedOffsetAt(this.i);
  }
  get uncompressedSize(): number {
    return this.t.uncompressedSizeAt(this.i);
  }
}
