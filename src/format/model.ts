/**
 * The in-memory model of a RAFS v6 image: what the builder produces, what the bootstrap encoder
 * writes, what the decoder gives back to the daemon, merge and unpack.
 *
 * A bootstrap describes one filesystem tree. Regular files are lists of chunks; each chunk lives in
 * one blob of the blob table. The model is independent of byte layout: `encode.ts` / `decode.ts`
 * translate it to and from the on-disk structures specified in docs/format.md.
 */

export type Compressor = 'none' | 'zstd' | 'lz4_block' | 'gzip';
export type Digester = 'sha256' | 'blake3';

/** One data blob of the image (one EROFS device, one RAFS v6 blob table entry). */
export interface BlobInfo {
  /** 64 lowercase hex chars; for blobs we write, the sha256 of the whole blob file. */
  blobId: string;
  compressor: Compressor;
  digester: Digester;
  chunkSize: number;
  chunkCount: number;
  /** Bytes of chunk data in the blob file (compressed address space). */
  compressedSize: number;
  /** Size of the uncompressed (4 KiB aligned) address space: what a blob cache file holds. */
  uncompressedSize: number;
  /** BlobFeatures bits as stored on disk (ALIGNED, CAP_TAR_TOC, ...). Kept verbatim on decode. */
  features: number;
  /** Upstream blob-meta ("CI array") location inside the blob; 0 for blobs we write. */
  ciOffset: number;
  ciCompressedSize: number;
  ciUncompressedSize: number;
  ciCompressor: Compressor;
  /** The blob's ToC: sha256 (hex) of its entries plus tar header, and that byte count (v6 blob table). */
  tocDigest?: string;
  tocSize?: number;
}

/** BlobFeatures.INLINED_FS_META: the bootstrap is inside the blob. */
export const BLOB_INLINED_FS_META = 0x2;
/**
 * The blob id upstream's builder writes into a bootstrap inlined in its own blob (the blob's sha256
 * is not known yet); readers take the real id from the blob's file name.
 */
export const INLINED_BLOB_ID_PLACEHOLDER = 'x'.repeat(64);

/** Chunk flags (BlobChunkFlags). */
export const CHUNK_COMPRESSED = 0x1;

/** One chunk: a piece of a file's data, identified by the digest of its uncompressed bytes. */
export interface ChunkInfo {
  /** Raw digest bytes (32) of the uncompressed chunk, with the blob's digester. */
  digest: Buffer;
  /** Index into the bootstrap's blob table. */
  blobIndex: number;
  /** The chunk's index inside its blob (the 24-bit "CI index"). */
  index: number;
  flags: number;
  compressedOffset: number;
  compressedSize: number;
  /** Offset in the blob's uncompressed address space: 4 KiB aligned in RAFS v6, any in v5. */
  uncompressedOffset: number;
  uncompressedSize: number;
}

export type InodeKind = 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo' | 'socket';

/**
 * An inode. Hard links are several directory entries pointing at the same Inode object.
 * `mode` holds permission bits only (including setuid/setgid/sticky: mask 0o7777); the type is
 * `kind`.
 */
export interface Inode {
  kind: InodeKind;
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  mtimeNsec: number;
  /** File size in bytes (regular files), target length (symlinks); directories: computed on encode. */
  size: number;
  /** Device number for char/block devices, as Linux `new_encode_dev` encodes it. */
  rdev: number;
  /** Extended attributes, full names (e.g. `user.foo`, `security.capability`). */
  xattrs: Map<string, Buffer>;
  /** Symlink target. */
  target?: string;
  /** Regular files: chunks in file order; chunk i covers [i*chunkSize, min(size,(i+1)*chunkSize)). */
  chunks?: ChunkInfo[];
  /** Directories: children by name (no `.` / `..`). */
  children?: Map<string, Inode>;
  /** Inode number as stored (i_ino); assigned by the encoder, filled by the decoder. */
  ino?: number;
  /** Link count as stored; set only by the on-demand decoder (`openBootstrap`), computed otherwise. */
  nlink?: number;
  /**
   * Regular files kept compactly (a mounted image's nodes): chunks [from, to) without building the
   * whole list, as `chunks.slice(from, to)` would give them.
   */
  chunkSlice?(from: number, to: number): ChunkInfo[];
}

/** One shared, never mutated map for the many inodes without xattrs. */
export const NO_XATTRS: Map<string, Buffer> = new Map();

/** A whole image: tree plus tables. */
export interface RafsImage {
  root: Inode;
  blobs: BlobInfo[];
  /** Chunk size of the image (superblock); every blob uses the same. */
  chunkSize: number;
  digester: Digester;
  compressor: Compressor;
  /** Absolute paths of files/dirs to prefetch, in order. */
  prefetch: string[];
  /** Build time written into the superblock (seconds). */
  buildTime?: number;
  /** On-disk format the image was decoded from; unset means RAFS v6 (all images we write). */
  rafsVersion?: 5 | 6;
  /**
   * false when the superblock lacks EXPLICIT_UID_GID: the stored owners are not meaningful and
   * nydusd shows its own euid/egid for every inode (upstream `RafsSuper` does the same).
   */
  explicitUidGid?: boolean;
}

/** OCI whiteout names, recorded as ordinary entries in a layer bootstrap and applied by merge. */
export const WHITEOUT_PREFIX = '.wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';

export function newInode(kind: InodeKind, mode: number, fields: Partial<Inode> = {}): Inode {
  const inode: Inode = {
    kind,
    mode: mode & 0o7777,
    uid: 0,
    gid: 0,
    mtime: 0,
    mtimeNsec: 0,
    size: 0,
    rdev: 0,
    xattrs: new Map(),
    ...fields,
  };
  if (kind === 'dir' && !inode.children) inode.children = new Map();
  if (kind === 'file' && !inode.chunks) inode.chunks = [];
  return inode;
}

/** A clear, one-line error about malformed input; `where` names the structure and offset. */
export class FormatError extends Error {
  constructor(
    message: string,
    public readonly where: string,
  ) {
    super(`${where}: ${message}`);
    this.name = 'FormatError';
  }
}
