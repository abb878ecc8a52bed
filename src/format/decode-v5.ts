/**
 * Reads a RAFS v5 bootstrap (upstream nydus-image's legacy format, "RAFS" magic at offset 0) into
 * the same image model the v6 decoder produces, so inspect, check, unpack and nydusd (FUSE) serve
 * both. docs/format.md §15 specifies the structures.
 *
 * Contract: returns a complete model (`rafsVersion: 5`) or throws FormatError naming the structure
 * and byte offset. Every offset and count is checked against the buffer before use; each inode
 * table slot is read at most once (a slot reached twice is a cycle or a shared child and an error),
 * so work and memory are bounded by the input size. Files are chunk lists without holes, as in the
 * model: a file whose chunks do not tile it from offset 0 is refused, never served with gaps.
 */
import { BlobInfo, ChunkInfo, Compressor, Digester, FormatError, Inode, InodeKind, RafsImage } from './model';
import {
  CHUNK, CHUNK_INFO_SIZE, MAX_CHUNK_INDEX, MAX_NAME, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, SUPER_FLAGS,
} from './layout';
import { DIGEST_SIZE } from './digest';
import { u64, within } from './bytes';

export const RAFS_V5_MAGIC = 0x52414653;
const V5 = {
  version: 0x500,
  sbSize: 8192,
  align: 8,
  extBlobEntrySize: 64,
  inodeSize: 128,
  rootIno: 1,
} as const;

/** Superblock fields (RafsV5SuperBlock), byte offsets from 0. */
const SB = {
  magic: 0, //                u32 "RAFS"
  version: 4, //              u32 0x500
  sbSize: 8, //               u32 8192
  blockSize: 12, //           u32 chunk size
  flags: 16, //               u64 RafsSuperFlags
  inodesCount: 24, //         u64 distinct inodes
  inodeTableOffset: 32, //    u64
  prefetchTableOffset: 40, // u64
  blobTableOffset: 48, //     u64
  inodeTableEntries: 56, //   u32
  prefetchTableEntries: 60, // u32
  blobTableSize: 64, //       u32 bytes
  extBlobTableEntries: 68, // u32
  extBlobTableOffset: 72, //  u64
} as const;

/** Inode record (RafsV5Inode, 128 B), then name, symlink target, xattrs, chunk infos. */
const INO = {
  digest: 0, //      u8[32]
  parent: 32, //     u64
  ino: 40, //        u64
  uid: 48, //        u32
  gid: 52, //        u32
  projid: 56, //     u32
  mode: 60, //       u32
  size: 64, //       u64
  blocks: 72, //     u64
  flags: 80, //      u64 RafsInodeFlags
  nlink: 88, //      u32
  childIndex: 92, // u32 dirs: first child's inode table slot (1-based)
  childCount: 96, // u32 dirs: children; regular files: chunk infos
  nameSize: 100, //  u16
  symlinkSize: 102, // u16
  rdev: 104, //      u32
  mtimeNsec: 108, // u32
  mtime: 112, //     u64
} as const;
const INODE_FLAG_XATTR = 0x4;
const INODE_FLAG_HAS_HOLE = 0x8;
const KNOWN_INODE_FLAGS = 0xf;
/** Every RafsSuperFlags bit upstream defines (validate() refuses others). */
const KNOWN_SUPER_FLAGS = 0x3ff | 0x0300_0000 | 0xfc00_0000;

const KIND_OF_IFMT = new Map<number, InodeKind>([
  [S_IFREG, 'file'], [S_IFDIR, 'dir'], [S_IFLNK, 'symlink'], [S_IFCHR, 'chardev'],
  [S_IFBLK, 'blockdev'], [S_IFIFO, 'fifo'], [S_IFSOCK, 'socket'],
]);

const align8 = (n: number): number => Math.ceil(n / V5.align) * V5.align;

export function isRafsV5(buf: Buffer): boolean {
  return buf.length >= 4 && buf.readUInt32LE(0) === RAFS_V5_MAGIC;
}

interface V5Record {
  inode: Inode;
  ino: number;
  nlink: number;
  childIndex: number;
  childCount: number;
  name: string;
}

export function decodeBootstrapV5(buf: Buffer): RafsImage {
  const at = (f: number): string => `v5 superblock @${f}`;
  if (buf.length <= V5.sbSize) throw new FormatError(`bootstrap of ${buf.length} bytes is not larger than the 8192-byte superblock`, 'v5 superblock');
  const version = buf.readUInt32LE(SB.version);
  if (version !== V5.version) throw new FormatError(`version 0x${version.toString(16)}, only 0x500 is supported`, at(SB.version));
  if (buf.readUInt32LE(SB.sbSize) !== V5.sbSize) throw new FormatError(`superblock size ${buf.readUInt32LE(SB.sbSize)}`, at(SB.sbSize));
  const chunkSize = buf.readUInt32LE(SB.blockSize);
  if (chunkSize < 4096 || chunkSize > 16 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new FormatError(`chunk size ${chunkSize}`, at(SB.blockSize));
  }
  const flagsBig = buf.readBigUInt64LE(SB.flags);
  if (flagsBig >> 32n !== 0n || (Number(flagsBig) & ~KNOWN_SUPER_FLAGS) !== 0) {
    throw new FormatError(`unknown superblock flags 0x${flagsBig.toString(16)}`, at(SB.flags));
  }
  const flags = Number(flagsBig);
  if (flags & SUPER_FLAGS.TARTFS_MODE) throw new FormatError('tarfs mode images are not supported', at(SB.flags));
  if (flags & 0x0200_0000) throw new FormatError('encrypted images are not supported', at(SB.flags));
  const compressor = compressorOf(flags);
  const digester: Digester = flags & SUPER_FLAGS.HASH_BLAKE3 ? 'blake3' : flags & SUPER_FLAGS.HASH_SHA256 ? 'sha256' : 'blake3';

  const itOff = u64(buf, SB.inodeTableOffset, 'v5 superblock');
  const itEntries = buf.readUInt32LE(SB.inodeTableEntries);
  if (itOff < V5.sbSize || !within(buf, itOff, itEntries * 4)) {
    throw new FormatError(`inode table ${itOff}+${itEntries * 4} outside the bootstrap`, at(SB.inodeTableOffset));
  }
  const blobs = readBlobTable(buf, compressor, digester, chunkSize);
  const slots = new Uint32Array(itEntries);
  for (let i = 0; i < itEntries; i++) slots[i] = buf.readUInt32LE(itOff + i * 4);

  const reader = new TreeReader(buf, slots, blobs, chunkSize);
  const root = reader.read();
  const prefetch = readPrefetch(buf, reader);
  fillBlobSizes(blobs, reader.chunks);
  return {
    root,
    blobs,
    chunkSize,
    digester,
    compressor,
    prefetch,
    rafsVersion: 5,
    explicitUidGid: (flags & SUPER_FLAGS.EXPLICIT_UID_GID) !== 0,
  };
}

/** Upstream's order of precedence; no bit at all means lz4_block (`From<RafsSuperFlags>`). */
function compressorOf(flags: number): Compressor {
  if (flags & SUPER_FLAGS.COMPRESSION_NONE) return 'none';
  if (flags & SUPER_FLAGS.COMPRESSION_LZ4) return 'lz4_block';
  if (flags & SUPER_FLAGS.COMPRESSION_GZIP) return 'gzip';
  if (flags & SUPER_FLAGS.COMPRESSION_ZSTD) return 'zstd';
  return 'lz4_block';
}

/**
 * Blob table: entries of u32 readahead offset, u32 readahead size, blob id bytes, separated by one
 * NUL (none after the last). The extended blob table (64 B per blob) adds chunk count, features and
 * sizes; images from before it existed have none, and the sizes are then derived from the chunks.
 */
function readBlobTable(buf: Buffer, compressor: Compressor, digester: Digester, chunkSize: number): BlobInfo[] {
  const off = u64(buf, SB.blobTableOffset, 'v5 superblock');
  const size = buf.readUInt32LE(SB.blobTableSize);
  if (size > 0 && (off < V5.sbSize || !within(buf, off, size))) throw new FormatError(`blob table ${off}+${size} outside the bootstrap`, `v5 superblock @${SB.blobTableOffset}`);
  const extCount = buf.readUInt32LE(SB.extBlobTableEntries);
  const extOff = u64(buf, SB.extBlobTableOffset, 'v5 superblock');
  if (extCount > 0 && (extOff < V5.sbSize || !within(buf, extOff, extCount * V5.extBlobEntrySize))) {
    throw new FormatError(`extended blob table ${extOff}+${extCount * V5.extBlobEntrySize} outside the bootstrap`, `v5 superblock @${SB.extBlobTableOffset}`);
  }
  const blobs: BlobInfo[] = [];
  let p = off;
  const end = off + size;
  while (end - p > 8) {
    const where = `v5 blob table entry ${blobs.length} @${p}`;
    let idEnd = p + 8;
    while (idEnd < end && buf[idEnd] !== 0) idEnd++;
    const blobId = buf.toString('latin1', p + 8, idEnd);
    // The id names files (localfs, cache): only the 64-hex form upstream writes is accepted.
    if (!/^[0-9a-f]{64}$/.test(blobId)) throw new FormatError(`blob id ${JSON.stringify(blobId.slice(0, 80))} is not 64 lowercase hex chars`, where);
    const i = blobs.length;
    const blob: BlobInfo = {
      blobId, compressor, digester, chunkSize, chunkCount: 0, compressedSize: 0, uncompressedSize: 0, features: 0,
      ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none',
    };
    if (extCount > 0) {
      if (i >= extCount) throw new FormatError(`blob ${i} has no extended blob table entry (${extCount} entries)`, where);
      const e = extOff + i * V5.extBlobEntrySize;
      blob.chunkCount = buf.readUInt32LE(e);
      blob.features = buf.readUInt32LE(e + 4);
      blob.uncompressedSize = u64(buf, e + 8, `v5 extended blob entry ${i}`);
      blob.compressedSize = u64(buf, e + 16, `v5 extended blob entry ${i}`);
    }
    blobs.push(blob);
    if (blobs.length > 0xffff) throw new FormatError('more than 65535 blobs', where);
    p = idEnd + 1;
  }
  return blobs;
}

/** Without an extended blob table, a blob's sizes and chunk count come from the chunks it holds. */
function fillBlobSizes(blobs: BlobInfo[], chunks: ChunkInfo[][]): void {
  blobs.forEach((b, i) => {
    for (const c of chunks[i]) {
      b.chunkCount = Math.max(b.chunkCount, c.index + 1);
      b.uncompressedSize = Math.max(b.uncompressedSize, c.uncompressedOffset + c.uncompressedSize);
      b.compressedSize = Math.max(b.compressedSize, c.compressedOffset + c.compressedSize);
    }
  });
}

/** Prefetch table: u32 inode numbers (not slots); each maps to the first path that reaches it. */
function readPrefetch(buf: Buffer, reader: TreeReader): string[] {
  const n = buf.readUInt32LE(SB.prefetchTableEntries);
  const off = u64(buf, SB.prefetchTableOffset, 'v5 superblock');
  if (n === 0) return [];
  if (off < V5.sbSize || !within(buf, off, n * 4)) throw new FormatError(`prefetch table ${off}+${n * 4} outside the bootstrap`, `v5 superblock @${SB.prefetchTableOffset}`);
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const ino = buf.readUInt32LE(off + i * 4);
    const p = reader.pathOfIno(ino);
    if (p === undefined) throw new FormatError(`inode ${ino} is not in the tree`, `v5 prefetch table entry ${i} @${off + i * 4}`);
    out.push(p);
  }
  return out;
}

class TreeReader {
  /** Distinct chunks per blob, in first-use order (for blob sizes and index checks). */
  readonly chunks: ChunkInfo[][];
  private readonly chunkByKey: Map<string, ChunkInfo>[];
  /** Chunk indexes in use per blob. */
  private readonly indexOwner: Set<number>[];
  /** Blobs whose stored chunk indexes collided and were replaced (see `intern`). */
  private readonly renumbered = new Set<number>();
  private readonly slotSeen: Uint8Array;
  /** Hard-linked non-directories by inode number: one Inode object for all their names. */
  private readonly linked = new Map<number, Inode>();
  private readonly pathByIno = new Map<number, string>();

  constructor(
    private readonly buf: Buffer,
    private readonly slots: Uint32Array,
    private readonly blobs: BlobInfo[],
    private readonly chunkSize: number,
  ) {
    this.chunks = blobs.map(() => []);
    this.chunkByKey = blobs.map(() => new Map());
    this.indexOwner = blobs.map(() => new Set());
    this.slotSeen = new Uint8Array(slots.length + 1);
  }

  pathOfIno(ino: number): string | undefined {
    return this.pathByIno.get(ino);
  }

  read(): Inode {
    const root = this.readSlot(V5.rootIno, 'root');
    if (root.ino !== V5.rootIno || root.inode.kind !== 'dir') throw new FormatError(`root is inode ${root.ino} of kind ${root.inode.kind}`, 'v5 inode table slot 1');
    this.pathByIno.set(V5.rootIno, '/');
    const queue: Array<[V5Record, string]> = [[root, '/']];
    for (let q = 0; q < queue.length; q++) {
      const [dir, dirPath] = queue[q];
      if (dir.childCount === 0) continue;
      const first = dir.childIndex;
      const where = `v5 directory ${dirPath} (inode ${dir.ino})`;
      if (first < 2 || first + dir.childCount - 1 > this.slots.length) {
        throw new FormatError(`children at slots ${first}..${first + dir.childCount - 1} outside the inode table (${this.slots.length} slots)`, where);
      }
      const children = dir.inode.children!;
      for (let s = first; s < first + dir.childCount; s++) {
        const child = this.readSlot(s, where);
        const name = child.name;
        if (name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new FormatError(`bad name ${JSON.stringify(name)}`, `${where} slot ${s}`);
        if (children.has(name)) throw new FormatError(`duplicate name ${JSON.stringify(name)}`, `${where} slot ${s}`);
        const path = dirPath === '/' ? `/${name}` : `${dirPath}/${name}`;
        children.set(name, child.inode);
        if (!this.pathByIno.has(child.ino)) this.pathByIno.set(child.ino, path);
        if (child.inode.kind === 'dir') queue.push([child, path]);
      }
    }
    return root.inode;
  }

  /** Reads the record of inode table slot `slot` (1-based); each slot once. */
  private readSlot(slot: number, parent: string): V5Record {
    const where0 = `v5 inode table slot ${slot} (from ${parent})`;
    if (slot < 1 || slot > this.slots.length) throw new FormatError('slot outside the inode table', where0);
    if (this.slotSeen[slot]) throw new FormatError('slot reached twice (cycle or shared child)', where0);
    this.slotSeen[slot] = 1;
    const buf = this.buf;
    const off = this.slots[slot - 1] * 8;
    const where = `v5 inode @${off} (slot ${slot})`;
    if (off <= V5.sbSize || !within(buf, off, V5.inodeSize)) throw new FormatError('inode offset outside the bootstrap', where);
    const mode = buf.readUInt32LE(off + INO.mode);
    const kind = KIND_OF_IFMT.get(mode & S_IFMT);
    if (!kind || mode > 0xffff) throw new FormatError(`unknown file type in mode 0o${mode.toString(8)}`, where);
    const iflags = u64(buf, off + INO.flags, where);
    if (iflags & ~KNOWN_INODE_FLAGS) throw new FormatError(`unknown inode flags 0x${iflags.toString(16)}`, where);
    const ino = u64(buf, off + INO.ino, where);
    const nlink = buf.readUInt32LE(off + INO.nlink);
    const size = u64(buf, off + INO.size, where);
    const childIndex = buf.readUInt32LE(off + INO.childIndex);
    const childCount = buf.readUInt32LE(off + INO.childCount);
    const nameSize = buf.readUInt16LE(off + INO.nameSize);
    const symlinkSize = buf.readUInt16LE(off + INO.symlinkSize);
    if (ino === 0 || nlink === 0) throw new FormatError(`inode number ${ino}, link count ${nlink}`, where);
    let p = off + V5.inodeSize;
    if (nameSize === 0 || nameSize > MAX_NAME || !within(buf, p, align8(nameSize))) throw new FormatError(`name of ${nameSize} bytes`, where);
    const name = buf.toString('utf8', p, p + nameSize);
    p += align8(nameSize);
    if (!within(buf, p, align8(symlinkSize))) throw new FormatError(`symlink target of ${symlinkSize} bytes runs past the bootstrap`, where);
    const targetBytes = buf.subarray(p, p + symlinkSize);
    p += align8(symlinkSize);
    let xattrs = new Map<string, Buffer>();
    if (iflags & INODE_FLAG_XATTR) {
      if (!within(buf, p, 8)) throw new FormatError('xattr table runs past the bootstrap', where);
      const xsize = u64(buf, p, where);
      if (!within(buf, p + 8, align8(xsize))) throw new FormatError(`xattr table of ${xsize} bytes runs past the bootstrap`, where);
      xattrs = parseXattrs(buf.subarray(p + 8, p + 8 + xsize), `${where} xattrs @${p}`);
      p += 8 + align8(xsize);
    }
    const hardLinked = kind !== 'dir' && nlink > 1 ? this.linked.get(ino) : undefined;
    if (hardLinked) {
      // Another name of an inode already read: its record repeats the data; the first one counts.
      if (hardLinked.kind !== kind || hardLinked.size !== size) throw new FormatError(`hard link to inode ${ino} disagrees with its first name`, where);
      return { inode: hardLinked, ino, nlink, childIndex, childCount, name };
    }
    const inode: Inode = {
      kind,
      mode: mode & 0o7777,
      uid: buf.readUInt32LE(off + INO.uid),
      gid: buf.readUInt32LE(off + INO.gid),
      mtime: u64(buf, off + INO.mtime, where),
      mtimeNsec: buf.readUInt32LE(off + INO.mtimeNsec),
      size,
      rdev: 0,
      xattrs,
      ino,
    };
    if (inode.mtimeNsec > 999_999_999) throw new FormatError(`mtime nsec ${inode.mtimeNsec}`, where);
    switch (kind) {
      case 'dir':
        // The stored size (upstream builders write 4096 or the source's) is what stat shows.
        inode.children = new Map();
        break;
      case 'file':
        if (iflags & INODE_FLAG_HAS_HOLE) throw new FormatError('files with holes (HAS_HOLE) are not supported', where);
        inode.chunks = this.readChunks(p, childCount, size, where);
        break;
      case 'symlink':
        if (symlinkSize === 0) throw new FormatError('symlink without a target', where);
        inode.target = targetBytes.toString('utf8');
        inode.size = symlinkSize;
        break;
      case 'chardev':
      case 'blockdev':
        inode.rdev = buf.readUInt32LE(off + INO.rdev);
        inode.size = 0;
        break;
      default:
        inode.size = 0;
    }
    if (kind !== 'dir' && nlink > 1) this.linked.set(ino, inode);
    return { inode, ino, nlink, childIndex, childCount, name };
  }

  /** Chunk i of a file covers [i × chunk size, ...) exactly: the model has no holes. */
  private readChunks(start: number, count: number, size: number, where: string): ChunkInfo[] {
    const want = Math.ceil(size / this.chunkSize);
    if (count !== want) throw new FormatError(`${count} chunks for ${size} bytes, expected ${want}`, where);
    if (!within(this.buf, start, count * CHUNK_INFO_SIZE)) throw new FormatError(`${count} chunk infos run past the bootstrap`, where);
    const buf = this.buf;
    const out: ChunkInfo[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const r = start + i * CHUNK_INFO_SIZE;
      const at = `${where} chunk ${i} @${r}`;
      const c: ChunkInfo = {
        digest: Buffer.from(buf.subarray(r + CHUNK.digest, r + CHUNK.digest + DIGEST_SIZE)),
        blobIndex: buf.readUInt32LE(r + CHUNK.blobIndex),
        index: buf.readUInt32LE(r + CHUNK.index),
        flags: buf.readUInt32LE(r + CHUNK.flags),
        compressedOffset: u64(buf, r + CHUNK.compressedOffset, at),
        compressedSize: buf.readUInt32LE(r + CHUNK.compressedSize),
        uncompressedOffset: u64(buf, r + CHUNK.uncompressedOffset, at),
        uncompressedSize: buf.readUInt32LE(r + CHUNK.uncompressedSize),
      };
      const fileOffset = u64(buf, r + CHUNK.fileOffset, at);
      if (fileOffset !== i * this.chunkSize) throw new FormatError(`file offset ${fileOffset}, expected ${i * this.chunkSize}`, at);
      const expect = Math.min(this.chunkSize, size - i * this.chunkSize);
      if (c.uncompressedSize !== expect) throw new FormatError(`chunk of ${c.uncompressedSize} bytes, expected ${expect}`, at);
      // Compressed data may exceed its plain size by a little (incompressible input), never by much.
      if (c.compressedSize > c.uncompressedSize + (c.uncompressedSize >> 4) + 65536) throw new FormatError(`compressed size ${c.compressedSize} for ${c.uncompressedSize} bytes`, at);
      out[i] = this.intern(c, at);
    }
    return out;
  }

  /**
   * One ChunkInfo per distinct chunk of a blob, keyed by its bytes' location and digest. The chunk
   * index names a chunk in the blob cache, so one index must never name two different chunks:
   * early v5 builders wrote 0 for every chunk, and such a blob's chunks are numbered here instead,
   * in first-use order (docs/format.md §15).
   */
  private intern(c: ChunkInfo, at: string): ChunkInfo {
    const blob = this.blobs[c.blobIndex];
    if (!blob) throw new FormatError(`blob index ${c.blobIndex} not in the blob table (${this.blobs.length} blobs)`, at);
    const key = `${c.compressedOffset}:${c.compressedSize}:${c.uncompressedOffset}:${c.uncompressedSize}:${c.flags}:${c.digest.toString('hex')}`;
    const seen = this.chunkByKey[c.blobIndex].get(key);
    if (seen) return seen;
    if (blob.uncompressedSize > 0 && c.uncompressedOffset + c.uncompressedSize > blob.uncompressedSize) {
      throw new FormatError(`uncompressed range ${c.uncompressedOffset}+${c.uncompressedSize} outside blob ${c.blobIndex}`, at);
    }
    if (blob.compressedSize > 0 && c.compressedOffset + c.compressedSize > blob.compressedSize) {
      throw new FormatError(`compressed range ${c.compressedOffset}+${c.compressedSize} outside blob ${c.blobIndex}`, at);
    }
    const owners = this.indexOwner[c.blobIndex];
    const list = this.chunks[c.blobIndex];
    if (this.renumbered.has(c.blobIndex) || owners.has(c.index) || c.index >= MAX_CHUNK_INDEX) {
      this.renumber(c.blobIndex);
      c.index = list.length;
    }
    owners.add(c.index);
    this.chunkByKey[c.blobIndex].set(key, c);
    list.push(c);
    return c;
  }

  /** Gives the blob's chunks read so far indexes 0, 1, 2, ...; later ones continue the count. */
  private renumber(blobIndex: number): void {
    if (this.renumbered.has(blobIndex)) return;
    this.renumbered.add(blobIndex);
    const owners = this.indexOwner[blobIndex];
    owners.clear();
    this.chunks[blobIndex].forEach((c, i) => {
      c.index = i;
      owners.add(i);
    });
  }
}

/** v5 xattrs: pairs of u32 pair size, then full name, NUL, value (upstream `parse_xattr`). */
function parseXattrs(body: Buffer, where: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let p = 0;
  while (p < body.length) {
    if (p + 4 > body.length) throw new FormatError('truncated xattr pair size', where);
    const n = body.readUInt32LE(p);
    p += 4;
    if (p + n > body.length) throw new FormatError(`xattr pair of ${n} bytes runs past the table`, where);
    const pair = body.subarray(p, p + n);
    const nul = pair.indexOf(0);
    if (nul <= 0) throw new FormatError('xattr pair without a name', where);
    const name = pair.toString('utf8', 0, nul);
    if (out.has(name)) throw new FormatError(`duplicate xattr ${name}`, where);
    out.set(name, Buffer.from(pair.subarray(nul + 1)));
    p += n;
  }
  return out;
}
