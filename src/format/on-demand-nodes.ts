/**
 * The nodes of a RAFS v6 tree decoded on demand (decode.ts `openBootstrap`): a directory lists its
 * entries the first time they are asked for; a regular file is one row of `FileRows` (its
 * attributes in typed arrays) and finds its chunk rows through the `TreeReader` on each request;
 * `ByteArena` holds the files' chunk index arrays once the bootstrap is let go. Contract: the nodes
 * are read-only views; every check is the TreeReader's, made when the part is first reached.
 */
import type { RawInode, TreeReader } from './decode';
import { ChunkInfo, Inode, NO_XATTRS } from './model';

/** A directory of an on-demand tree: its entries are read and checked the first time they are asked for. */
export class OnDemandDir implements Inode {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimeNsec: number;
  size: number;
  xattrs: Map<string, Buffer>;
  ino?: number;
  nlink?: number;
  private list?: Map<string, Inode>;
  /** Where the entries are: let go once they are listed. */
  private raw?: RawInode;

  constructor(
    private readonly tree: TreeReader,
    raw: RawInode,
    readonly nid: number,
    private readonly parentNid: number,
  ) {
    this.raw = raw;
    const i = raw.inode;
    this.mode = i.mode;
    this.uid = i.uid;
    this.gid = i.gid;
    this.mtime = i.mtime;
    this.mtimeNsec = i.mtimeNsec;
    this.size = i.size;
    this.xattrs = i.xattrs;
    this.ino = i.ino;
  }

  // Constants on the prototype, not fields: one tree holds thousands of these.
  get kind(): 'dir' {
    return 'dir';
  }
  get rdev(): number {
    return 0;
  }

  get children(): Map<string, Inode> {
    if (!this.list) {
      this.list = this.tree.listDir(this.raw!, this.nid, this.parentNid);
      this.raw = undefined;
      this.tree.dirListed();
    }
    return this.list;
  }
}

/**
 * A regular file of an on-demand tree: its attributes are a row of the tree's FileRows, its chunk
 * rows are looked up (and checked) per request. Read-only: the attributes have no setters.
 */
export class OnDemandFile implements Inode {
  constructor(
    private readonly tree: TreeReader,
    private readonly row: number,
  ) {}

  get kind(): 'file' {
    return 'file';
  }
  get rdev(): number {
    return 0;
  }
  get mode(): number {
    return this.tree.files.u32At(this.row, U32.mode);
  }
  get uid(): number {
    return this.tree.files.u32At(this.row, U32.uid);
  }
  get gid(): number {
    return this.tree.files.u32At(this.row, U32.gid);
  }
  get mtime(): number {
    return this.tree.files.f64At(this.row, F64.mtime);
  }
  get mtimeNsec(): number {
    return this.tree.files.u32At(this.row, U32.mtimeNsec);
  }
  get size(): number {
    return this.tree.files.f64At(this.row, F64.size);
  }
  get ino(): number {
    return this.tree.files.u32At(this.row, U32.ino);
  }
  get nlink(): number {
    return this.tree.files.u32At(this.row, U32.nlink);
  }
  get xattrs(): Map<string, Buffer> {
    return this.tree.files.xattrsOf(this.row);
  }

  get chunks(): ChunkInfo[] {
    return this.chunkSlice(0, this.tree.files.u32At(this.row, U32.count));
  }

  chunkSlice(from: number, to: number): ChunkInfo[] {
    const f = this.tree.files;
    const end = Math.min(to, f.u32At(this.row, U32.count));
    const out: ChunkInfo[] = new Array(Math.max(0, end - from));
    const where = `inode nid ${f.u32At(this.row, U32.nid)}`;
    const at = f.u32At(this.row, U32.at);
    const start = f.u32At(this.row, U32.start);
    const size = this.size;
    for (let k = from; k < end; k++) out[k - from] = this.tree.fileChunkAt(at, start, k, size, where);
    return out;
  }
}

/** Columns of a FileRows row that fit 32 bits. */
const enum U32 {
  mode,
  uid,
  gid,
  mtimeNsec,
  ino,
  nlink,
  nid,
  /** Chunk index array: entries, offset in the tree's copies, offset in the bootstrap. */
  count,
  at,
  start,
  width,
}

/** Columns of a FileRows row that may not fit 32 bits. */
const enum F64 {
  mtime,
  size,
  width,
}

/**
 * The regular files of an on-demand tree, a row each in two typed arrays (a walked Debian image has
 * 10k files, each field of an object costs 8 bytes and most fit in 4); xattrs, rare, in a Map.
 */
export class FileRows {
  private n = 0;
  private u32 = new Uint32Array(0);
  private f64 = new Float64Array(0);
  private readonly xattrs = new Map<number, Map<string, Buffer>>();

  /** Rows held. */
  get length(): number {
    return this.n;
  }

  /** A row for `inode` (a decoded file, its fields checked); returns its number. */
  add(inode: Inode, nlink: number, nid: number, indexes: FileChunkIndexes): number {
    if (this.n * U32.width === this.u32.length) this.resize(Math.max(64, 2 * this.n));
    const r = this.n++;
    const u = r * U32.width;
    this.u32[u + U32.mode] = inode.mode;
    this.u32[u + U32.uid] = inode.uid;
    this.u32[u + U32.gid] = inode.gid;
    this.u32[u + U32.mtimeNsec] = inode.mtimeNsec;
    this.u32[u + U32.ino] = inode.ino ?? 0;
    this.u32[u + U32.nlink] = nlink;
    this.u32[u + U32.nid] = nid;
    this.u32[u + U32.count] = indexes.count;
    this.u32[u + U32.at] = indexes.at;
    this.u32[u + U32.start] = indexes.start;
    this.f64[r * F64.width + F64.mtime] = inode.mtime;
    this.f64[r * F64.width + F64.size] = inode.size;
    if (inode.xattrs.size > 0) this.xattrs.set(r, inode.xattrs);
    return r;
  }

  u32At(row: number, col: U32): number {
    return this.u32[row * U32.width + col];
  }
  f64At(row: number, col: F64): number {
    return this.f64[row * F64.width + col];
  }
  xattrsOf(row: number): Map<string, Buffer> {
    return this.xattrs.get(row) ?? NO_XATTRS;
  }

  /** Gives back the room kept for growth (nothing is added after this). */
  trim(): void {
    this.resize(this.n);
  }

  private resize(rows: number): void {
    const u32 = new Uint32Array(rows * U32.width);
    u32.set(this.u32.subarray(0, this.n * U32.width));
    const f64 = new Float64Array(rows * F64.width);
    f64.set(this.f64.subarray(0, this.n * F64.width));
    this.u32 = u32;
    this.f64 = f64;
  }
}

/** Where a file's chunk index array is: `count` entries at `at` in the tree's copies, at `start` in the bootstrap. */
export interface FileChunkIndexes {
  start: number;
  count: number;
  at: number;
}

/**
 * Bytes appended one run after another into one growing buffer (the files' chunk index arrays of
 * an on-demand tree: a few bytes each, too small for a Buffer apiece).
 */
export class ByteArena {
  bytes = Buffer.alloc(0);
  private used = 0;

  /** Copies `length` bytes of `src` from `start`; returns where they are in `bytes`. */
  add(src: Buffer, start: number, length: number): number {
    if (this.used + length > this.bytes.length) {
      const grown = Buffer.alloc(Math.max(4096, 2 * (this.used + length)));
      this.bytes.copy(grown, 0, 0, this.used);
      this.bytes = grown;
    }
    src.copy(this.bytes, this.used, start, start + length);
    this.used += length;
    return this.used - length;
  }

  /** Gives back the room kept for growth (nothing is added after this). */
  trim(): void {
    if (this.used < this.bytes.length) this.bytes = Buffer.from(this.bytes.subarray(0, this.used));
  }
}
