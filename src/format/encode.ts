/**
 * Writes a RAFS v6 bootstrap from the image model (layout: see layout.ts and docs/format.md).
 *
 * Three passes: collect inodes breadth-first (hard links are one Inode object reachable by several
 * names), place every inode in the meta area (which fixes its nid), then write inodes, dirents,
 * tables and the superblocks into one zeroed buffer. Side effects on the model: `ino` is assigned
 * on every inode, `size` is set on directories and symlinks.
 */
import { BLOB_INLINED_FS_META, ChunkInfo, FormatError, INLINED_BLOB_ID_PLACEHOLDER, Inode, RafsImage } from './model';
import * as L from './layout';
import { encodeXattrs, xattrIcount } from './xattr';
import { DirEntry, planDirBlocks, renderDir } from './dirent';
import { lookup } from './walk';
import { DIGEST_SIZE } from './digest';

interface Node {
  inode: Inode;
  path: string;
  parent: Node;
  nlink: number;
  isPyc: boolean;
  xattrs: Buffer;
  extended: boolean;
  /** dirs: sorted child names incl. `.` and `..`, and the block plan */
  dirNames?: Buffer[];
  dirCounts?: number[];
  /** dirs and symlinks: data inline after the inode (tail) or in plain blocks only */
  inline: boolean;
  plainBlocks: number;
  rawBlkaddr: number;
  offset: number;
  nid: number;
}

const FILE_TYPE: Record<Inode['kind'], number> = {
  file: L.FT_REG_FILE,
  dir: L.FT_DIR,
  chardev: L.FT_CHRDEV,
  blockdev: L.FT_BLKDEV,
  fifo: L.FT_FIFO,
  socket: L.FT_SOCK,
  symlink: L.FT_SYMLINK,
};

const S_IFMT_OF: Record<Inode['kind'], number> = {
  file: L.S_IFREG,
  dir: L.S_IFDIR,
  chardev: L.S_IFCHR,
  blockdev: L.S_IFBLK,
  fifo: L.S_IFIFO,
  socket: L.S_IFSOCK,
  symlink: L.S_IFLNK,
};

const COMPRESSOR_FLAG = {
  none: L.SUPER_FLAGS.COMPRESSION_NONE,
  lz4_block: L.SUPER_FLAGS.COMPRESSION_LZ4,
  gzip: L.SUPER_FLAGS.COMPRESSION_GZIP,
  zstd: L.SUPER_FLAGS.COMPRESSION_ZSTD,
} as const;

const U16 = 0xffff;
const U32 = 0xffffffff;

export function encodeBootstrap(image: RafsImage): Buffer {
  checkImage(image);
  const nodes = collect(image);
  const byInode = new Map(nodes.map((n) => [n.inode, n]));
  const { buildTime, buildTimeNsec } = chooseBuildTime(image, nodes);
  for (const n of nodes) prepare(n, buildTime, buildTimeNsec);

  // Fixed tables first: they decide where the meta area starts.
  const nblobs = image.blobs.length;
  const blobTableOffset = L.alignUp(L.DEVTABLE_OFFSET + nblobs * L.DEVSLOT_SIZE, L.BLOCK_SIZE);
  const blobTableSize = nblobs * L.BLOB_ENTRY_SIZE;
  const prefetchTableOffset = blobTableOffset + blobTableSize;
  const prefetchTableSize = image.prefetch.length * 4;
  const metaAddr = L.alignUp(prefetchTableOffset + prefetchTableSize, L.BLOCK_SIZE);

  let cursor = metaAddr + L.BLOCK_SIZE; // root lands on nid 128, never 0 (glibc hides ino 0)
  for (const n of nodes) cursor = place(n, cursor, metaAddr, image.chunkSize);
  let dataCursor = L.alignUp(cursor, L.BLOCK_SIZE);
  for (const n of nodes) {
    if (n.plainBlocks > 0) {
      n.rawBlkaddr = dataCursor / L.BLOCK_SIZE;
      dataCursor += n.plainBlocks * L.BLOCK_SIZE;
    }
  }
  const rows = chunkRows(image, nodes);
  const chunkTableOffset = dataCursor;
  const chunkTableSize = rows.length * L.CHUNK_INFO_SIZE;
  const total = L.alignUp(chunkTableOffset + chunkTableSize, L.BLOCK_SIZE);
  if (metaAddr / L.BLOCK_SIZE > U32 || total / L.BLOCK_SIZE > U32) throw new FormatError('image too large', 'bootstrap');

  const buf = Buffer.alloc(total);
  for (const n of nodes) writeInode(buf, n, image, byInode);
  writeChunkTable(buf, chunkTableOffset, rows);
  writePrefetchTable(buf, prefetchTableOffset, image, byInode);
  writeBlobTable(buf, blobTableOffset, image);
  writeSuperblocks(buf, {
    image,
    inos: nodes.length,
    rootNid: nodes[0].nid,
    metaBlkaddr: metaAddr / L.BLOCK_SIZE,
    buildTime,
    buildTimeNsec,
    blobTableOffset,
    blobTableSize,
    chunkTableOffset,
    chunkTableSize,
    prefetchTableOffset: prefetchTableSize > 0 ? prefetchTableOffset : 0,
    prefetchTableSize,
    hasXattr: nodes.some((n) => n.inode.xattrs.size > 0),
    bootstrapSize: total,
  });
  return buf;
}

function checkImage(image: RafsImage): void {
  const cs = image.chunkSize;
  if (!Number.isInteger(cs) || cs < L.BLOCK_SIZE || cs > 16 << 20 || (cs & (cs - 1)) !== 0) {
    throw new FormatError(`chunk size ${cs} is not a power of two in 4 KiB..16 MiB`, 'image');
  }
  if (image.blobs.length > L.MAX_BLOBS) throw new FormatError(`${image.blobs.length} blobs, at most ${L.MAX_BLOBS}`, 'image');
  image.blobs.forEach((b, i) => {
    const placeholder = b.blobId === INLINED_BLOB_ID_PLACEHOLDER && (b.features & BLOB_INLINED_FS_META) !== 0;
    if (!placeholder && !/^[0-9a-f]{64}$/.test(b.blobId)) throw new FormatError(`blob id ${JSON.stringify(b.blobId)} is not 64 hex chars`, `blob ${i}`);
    if (!L.COMPRESSION_ALGOS.includes(b.compressor)) throw new FormatError(`unknown compressor ${b.compressor}`, `blob ${i}`);
    if (!L.DIGEST_ALGOS.includes(b.digester)) throw new FormatError(`unknown digester ${b.digester}`, `blob ${i}`);
    if (!L.COMPRESSION_ALGOS.includes(b.ciCompressor)) throw new FormatError(`unknown CI compressor ${b.ciCompressor}`, `blob ${i}`);
    for (const f of ['chunkSize', 'chunkCount', 'features'] as const) {
      if (!Number.isInteger(b[f]) || b[f] < 0 || b[f] > U32) throw new FormatError(`${f} ${b[f]} is not a u32`, `blob ${i}`);
    }
    for (const f of ['compressedSize', 'uncompressedSize', 'ciOffset', 'ciCompressedSize', 'ciUncompressedSize'] as const) {
      if (!Number.isSafeInteger(b[f]) || b[f] < 0) throw new FormatError(`${f} ${b[f]} is not a non-negative integer`, `blob ${i}`);
    }
    if (Math.ceil(b.uncompressedSize / L.BLOCK_SIZE) > U32) throw new FormatError('blob too large', `blob ${i}`);
  });
  if (!Object.hasOwn(COMPRESSOR_FLAG, image.compressor)) throw new FormatError(`unknown compressor ${image.compressor}`, 'image');
  if (image.digester !== 'sha256' && image.digester !== 'blake3') throw new FormatError(`unknown digester ${image.digester}`, 'image');
  if (image.buildTime !== undefined && (!Number.isSafeInteger(image.buildTime) || image.buildTime < 0)) {
    throw new FormatError(`build time ${image.buildTime}`, 'image');
  }
  if (image.root.kind !== 'dir') throw new FormatError('root is not a directory', 'image');
}

/** Breadth-first list of distinct inodes with link counts; rejects cycles and bad names. */
function collect(image: RafsImage): Node[] {
  const byInode = new Map<Inode, Node>();
  const nodes: Node[] = [];
  const add = (inode: Inode, path: string, parent: Node | undefined): Node => {
    const n: Node = {
      inode, path, parent: parent as Node, nlink: 1, isPyc: path.endsWith('.pyc'), xattrs: Buffer.alloc(0),
      extended: false, inline: false, plainBlocks: 0, rawBlkaddr: 0, offset: 0, nid: 0,
    };
    if (!parent) n.parent = n;
    byInode.set(inode, n);
    nodes.push(n);
    return n;
  };
  add(image.root, '/', undefined);
  for (let i = 0; i < nodes.length; i++) {
    const dir = nodes[i];
    if (dir.inode.kind !== 'dir') continue;
    const children = dir.inode.children ?? new Map<string, Inode>();
    let subdirs = 0;
    for (const name of children.keys()) {
      const child = children.get(name)!;
      const path = dir.path === '/' ? `/${name}` : `${dir.path}/${name}`;
      checkName(name, path);
      const seen = byInode.get(child);
      if (seen) {
        if (child.kind === 'dir') throw new FormatError('directory reachable by two names (cycle or dir hard link)', path);
        seen.nlink++;
        if (name.endsWith('.pyc')) seen.isPyc = true;
        continue;
      }
      add(child, path, dir);
      if (child.kind === 'dir') subdirs++;
    }
    dir.nlink = 2 + subdirs;
  }
  nodes.forEach((n, i) => (n.inode.ino = i + 1));
  return nodes;
}

function checkName(name: string, path: string): void {
  const len = Buffer.byteLength(name);
  if (len === 0 || len > L.MAX_NAME || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) {
    throw new FormatError(`invalid entry name ${JSON.stringify(name)}`, path);
  }
}

/** The superblock build time is the mtime of compact inodes; the commonest mtime saves the most space. */
function chooseBuildTime(image: RafsImage, nodes: Node[]): { buildTime: number; buildTimeNsec: number } {
  if (image.buildTime !== undefined) return { buildTime: image.buildTime, buildTimeNsec: 0 };
  const counts = new Map<string, number>();
  let best = '0:0';
  let bestCount = 0;
  for (const n of nodes) {
    const key = `${n.inode.mtime}:${n.inode.mtimeNsec}`;
    const c = (counts.get(key) ?? 0) + 1;
    counts.set(key, c);
    if (c > bestCount) [best, bestCount] = [key, c];
  }
  const [s, ns] = best.split(':').map(Number);
  return { buildTime: s, buildTimeNsec: ns };
}

/** Computes sizes, xattr body, directory plan and compact/extended choice of one inode. */
function prepare(n: Node, buildTime: number, buildTimeNsec: number): void {
  const ino = n.inode;
  const where = n.path;
  if (!Object.hasOwn(FILE_TYPE, ino.kind)) throw new FormatError(`unknown inode kind ${String(ino.kind)}`, where);
  if (!Number.isSafeInteger(ino.mtime) || ino.mtime < 0 || !Number.isInteger(ino.mtimeNsec) || ino.mtimeNsec < 0 || ino.mtimeNsec > 999_999_999) {
    throw new FormatError(`invalid mtime ${ino.mtime}.${ino.mtimeNsec}`, where);
  }
  const u32 = (v: number) => Number.isInteger(v) && v >= 0 && v <= U32;
  if (!u32(ino.uid) || !u32(ino.gid)) throw new FormatError(`uid/gid ${ino.uid}/${ino.gid} out of range`, where);
  if (!Number.isInteger(ino.mode) || ino.mode < 0) throw new FormatError(`mode ${ino.mode}`, where);
  if (ino.kind === 'dir') {
    const names = [...(ino.children?.keys() ?? []), '.', '..'].map((s) => Buffer.from(s));
    names.sort(Buffer.compare);
    const plan = planDirBlocks(names);
    n.dirNames = names;
    n.dirCounts = plan.counts;
    ino.size = plan.size;
  } else if (ino.kind === 'symlink') {
    if (typeof ino.target !== 'string') throw new FormatError('symlink without a target', where);
    const len = Buffer.byteLength(ino.target);
    if (len === 0 || len > L.MAX_SYMLINK) throw new FormatError(`symlink target of ${len} bytes`, where);
    ino.size = len;
  } else if (ino.kind === 'file') {
    if (!Number.isSafeInteger(ino.size) || ino.size < 0) throw new FormatError(`invalid size ${ino.size}`, where);
  } else {
    ino.size = 0;
  }
  if ((ino.kind === 'chardev' || ino.kind === 'blockdev') && !u32(ino.rdev)) {
    throw new FormatError(`rdev ${ino.rdev} out of range`, where);
  }
  n.xattrs = encodeXattrs(ino.xattrs, where);
  // Compact inodes have no mtime of their own (they show the build time) and 16-bit ids/nlink;
  // .pyc stays extended like upstream so Python's mtime check never depends on the build time.
  n.extended =
    ino.uid > U16 || ino.gid > U16 || n.nlink > U16 || ino.size > U32 || n.isPyc ||
    ino.mtime !== buildTime || ino.mtimeNsec !== buildTimeNsec;
}

/** Places one inode at or after `cursor`; returns the next free (32-byte aligned) offset. */
function place(n: Node, cursor: number, metaAddr: number, chunkSize: number): number {
  const isize = n.extended ? L.INODE_EXTENDED_SIZE : L.INODE_COMPACT_SIZE;
  const hdr = isize + n.xattrs.length;
  let keep = hdr <= L.BLOCK_SIZE ? hdr : isize; // bytes that must not cross a block boundary
  let total = hdr;
  const ino = n.inode;
  if (ino.kind === 'dir' || ino.kind === 'symlink') {
    const nblocks = Math.ceil(ino.size / L.BLOCK_SIZE);
    const tail = ino.size - (nblocks - 1) * L.BLOCK_SIZE;
    // The kernel wants the inline tail in the same block as the inode, and a full tail block
    // can never be inline.
    n.inline = tail < L.BLOCK_SIZE && hdr + tail <= L.BLOCK_SIZE;
    n.plainBlocks = n.inline ? nblocks - 1 : nblocks;
    if (n.inline) {
      keep = hdr + tail;
      total = hdr + tail;
    }
  } else if (ino.kind === 'file') {
    total = L.alignUp(hdr, 8) + Math.ceil(ino.size / chunkSize) * L.CHUNK_ADDR_SIZE;
  }
  if ((cursor % L.BLOCK_SIZE) + keep > L.BLOCK_SIZE) cursor = L.alignUp(cursor, L.BLOCK_SIZE);
  n.offset = cursor;
  n.nid = (cursor - metaAddr) / L.INODE_SLOT_SIZE;
  return L.alignUp(cursor + total, L.INODE_SLOT_SIZE);
}

type Row = ChunkInfo & { fileOffset: number };

function chunkKey(blobIndex: number, index: number): number {
  return blobIndex * L.MAX_CHUNK_INDEX + index;
}

/** Distinct chunks by (blob index, CI index), sorted; checks every file's chunk list. */
function chunkRows(image: RafsImage, nodes: Node[]): Row[] {
  const rows = new Map<number, Row>();
  for (const n of nodes) {
    if (n.inode.kind !== 'file') continue;
    const chunks = n.inode.chunks ?? [];
    const expect = Math.ceil(n.inode.size / image.chunkSize);
    if (chunks.length !== expect) {
      throw new FormatError(`${chunks.length} chunks for ${n.inode.size} bytes, expected ${expect}`, n.path);
    }
    chunks.forEach((c, i) => {
      const where = `${n.path} chunk ${i}`;
      const want = Math.min(image.chunkSize, n.inode.size - i * image.chunkSize);
      if (c.uncompressedSize !== want) throw new FormatError(`uncompressed size ${c.uncompressedSize}, expected ${want}`, where);
      checkChunk(c, image, where);
      const key = chunkKey(c.blobIndex, c.index);
      const prev = rows.get(key);
      if (!prev) rows.set(key, { ...c, fileOffset: i * image.chunkSize });
      else if (!sameChunk(prev, c)) throw new FormatError(`conflicts with another chunk of index ${c.index} in blob ${c.blobIndex}`, where);
    });
  }
  return [...rows.keys()].sort((a, b) => a - b).map((k) => rows.get(k)!);
}

function checkChunk(c: ChunkInfo, image: RafsImage, where: string): void {
  const blob = image.blobs[c.blobIndex];
  if (!blob) throw new FormatError(`blob index ${c.blobIndex} not in the blob table`, where);
  if (!Number.isInteger(c.index) || c.index < 0 || c.index >= L.MAX_CHUNK_INDEX) throw new FormatError(`chunk index ${c.index} out of range`, where);
  if (c.digest.length !== DIGEST_SIZE) throw new FormatError(`digest of ${c.digest.length} bytes`, where);
  if (c.uncompressedOffset % L.BLOCK_SIZE !== 0 || c.uncompressedOffset / L.BLOCK_SIZE > U32 - 1) {
    throw new FormatError(`uncompressed offset ${c.uncompressedOffset} is not a 4 KiB aligned block address`, where);
  }
  if (!(c.compressedSize >= 0 && c.compressedSize <= U32 && c.flags >= 0 && c.flags <= U32)) throw new FormatError('compressed size or flags out of range', where);
  if (!Number.isSafeInteger(c.compressedOffset) || c.compressedOffset < 0) throw new FormatError(`compressed offset ${c.compressedOffset}`, where);
}

function sameChunk(a: ChunkInfo, b: ChunkInfo): boolean {
  return a.digest.equals(b.digest) && a.flags === b.flags && a.compressedOffset === b.compressedOffset &&
    a.compressedSize === b.compressedSize && a.uncompressedOffset === b.uncompressedOffset && a.uncompressedSize === b.uncompressedSize;
}

function writeInode(buf: Buffer, n: Node, image: RafsImage, byInode: Map<Inode, Node>): void {
  const ino = n.inode;
  const off = n.offset;
  let layout = L.LAYOUT_FLAT_PLAIN;
  let u = 0;
  if (ino.kind === 'file') {
    layout = L.LAYOUT_CHUNK_BASED;
    u = L.CHUNK_FORMAT_INDEXES | (Math.log2(image.chunkSize) - L.BLOCK_BITS);
  } else if (ino.kind === 'dir' || ino.kind === 'symlink') {
    layout = n.inline ? L.LAYOUT_FLAT_INLINE : L.LAYOUT_FLAT_PLAIN;
    u = n.plainBlocks > 0 ? n.rawBlkaddr : 0;
  } else if (ino.kind === 'chardev' || ino.kind === 'blockdev') {
    u = ino.rdev;
  }
  const mode = S_IFMT_OF[ino.kind] | (ino.mode & 0o7777);
  const icount = xattrIcount(n.xattrs.length);
  if (n.extended) {
    const F = L.EXTENDED;
    buf.writeUInt16LE(1 | (layout << 1), off + F.format);
    buf.writeUInt16LE(icount, off + F.xattrIcount);
    buf.writeUInt16LE(mode, off + F.mode);
    buf.writeBigUInt64LE(BigInt(ino.size), off + F.size);
    buf.writeUInt32LE(u, off + F.u);
    buf.writeUInt32LE(ino.ino! >>> 0, off + F.ino);
    buf.writeUInt32LE(ino.uid, off + F.uid);
    buf.writeUInt32LE(ino.gid, off + F.gid);
    buf.writeBigUInt64LE(BigInt(ino.mtime), off + F.mtime);
    buf.writeUInt32LE(ino.mtimeNsec, off + F.mtimeNsec);
    buf.writeUInt32LE(n.nlink, off + F.nlink);
  } else {
    const F = L.COMPACT;
    buf.writeUInt16LE(layout << 1, off + F.format);
    buf.writeUInt16LE(icount, off + F.xattrIcount);
    buf.writeUInt16LE(mode, off + F.mode);
    buf.writeUInt16LE(n.nlink, off + F.nlink);
    buf.writeUInt32LE(ino.size, off + F.size);
    buf.writeUInt32LE(u, off + F.u);
    buf.writeUInt32LE(ino.ino! >>> 0, off + F.ino);
    buf.writeUInt16LE(ino.uid, off + F.uid);
    buf.writeUInt16LE(ino.gid, off + F.gid);
  }
  const isize = n.extended ? L.INODE_EXTENDED_SIZE : L.INODE_COMPACT_SIZE;
  n.xattrs.copy(buf, off + isize);
  const bodyOff = off + isize + n.xattrs.length;

  if (ino.kind === 'file') {
    let p = off + L.alignUp(isize + n.xattrs.length, 8);
    for (const c of ino.chunks ?? []) {
      buf.writeUInt16LE(c.index & 0xffff, p + L.CHUNK_ADDR.blobAddrLo);
      buf.writeUInt16LE(((c.index >>> 16) << 8) | (c.blobIndex + 1), p + L.CHUNK_ADDR.blobAddrHi);
      buf.writeUInt32LE(c.uncompressedOffset / L.BLOCK_SIZE, p + L.CHUNK_ADDR.blkAddr);
      p += L.CHUNK_ADDR_SIZE;
    }
    return;
  }
  let data: Buffer | undefined;
  if (ino.kind === 'symlink') data = Buffer.from(ino.target!, 'utf8');
  if (ino.kind === 'dir') data = renderDir(dirEntries(n, byInode), n.dirCounts!, ino.size);
  if (!data) return;
  const plainBytes = n.plainBlocks * L.BLOCK_SIZE;
  data.copy(buf, n.rawBlkaddr * L.BLOCK_SIZE, 0, Math.min(plainBytes, data.length));
  if (n.inline) data.copy(buf, bodyOff, plainBytes);
}

function dirEntries(n: Node, byInode: Map<Inode, Node>): DirEntry[] {
  return n.dirNames!.map((name) => {
    const s = name.toString('utf8');
    const target = s === '.' ? n : s === '..' ? n.parent : byInode.get(n.inode.children!.get(s)!)!;
    return { name, nid: target.nid, fileType: FILE_TYPE[target.inode.kind] };
  });
}

function writeChunkTable(buf: Buffer, off: number, rows: Row[]): void {
  for (const r of rows) {
    r.digest.copy(buf, off + L.CHUNK.digest);
    buf.writeUInt32LE(r.blobIndex, off + L.CHUNK.blobIndex);
    buf.writeUInt32LE(r.flags, off + L.CHUNK.flags);
    buf.writeUInt32LE(r.compressedSize, off + L.CHUNK.compressedSize);
    buf.writeUInt32LE(r.uncompressedSize, off + L.CHUNK.uncompressedSize);
    buf.writeBigUInt64LE(BigInt(r.compressedOffset), off + L.CHUNK.compressedOffset);
    buf.writeBigUInt64LE(BigInt(r.uncompressedOffset), off + L.CHUNK.uncompressedOffset);
    buf.writeBigUInt64LE(BigInt(r.fileOffset), off + L.CHUNK.fileOffset);
    buf.writeUInt32LE(r.index, off + L.CHUNK.index);
    off += L.CHUNK_INFO_SIZE;
  }
}

function writePrefetchTable(buf: Buffer, off: number, image: RafsImage, byInode: Map<Inode, Node>): void {
  for (const p of image.prefetch) {
    const inode = p.startsWith('/') ? lookup(image, p) : undefined;
    const n = inode && byInode.get(inode);
    if (!n) throw new FormatError(`prefetch path ${JSON.stringify(p)} is not in the tree`, 'prefetch table');
    if (n.nid > U32) throw new FormatError(`nid of ${p} exceeds u32`, 'prefetch table');
    buf.writeUInt32LE(n.nid, off);
    off += 4;
  }
}

function writeBlobTable(buf: Buffer, off: number, image: RafsImage): void {
  image.blobs.forEach((b, i) => {
    const e = off + i * L.BLOB_ENTRY_SIZE;
    buf.write(b.blobId, e + L.BLOB.blobId, 'ascii');
    buf.writeUInt32LE(i, e + L.BLOB.blobIndex);
    buf.writeUInt32LE(b.chunkSize, e + L.BLOB.chunkSize);
    buf.writeUInt32LE(b.chunkCount, e + L.BLOB.chunkCount);
    buf.writeUInt32LE(L.COMPRESSION_ALGOS.indexOf(b.compressor), e + L.BLOB.compressionAlgo);
    buf.writeUInt32LE(L.DIGEST_ALGOS.indexOf(b.digester), e + L.BLOB.digestAlgo);
    buf.writeUInt32LE(b.features >>> 0, e + L.BLOB.features);
    buf.writeBigUInt64LE(BigInt(b.compressedSize), e + L.BLOB.compressedSize);
    buf.writeBigUInt64LE(BigInt(b.uncompressedSize), e + L.BLOB.uncompressedSize);
    buf.writeUInt32LE(L.COMPRESSION_ALGOS.indexOf(b.ciCompressor), e + L.BLOB.ciCompressor);
    buf.writeBigUInt64LE(BigInt(b.ciOffset), e + L.BLOB.ciOffset);
    buf.writeBigUInt64LE(BigInt(b.ciCompressedSize), e + L.BLOB.ciCompressedSize);
    buf.writeBigUInt64LE(BigInt(b.ciUncompressedSize), e + L.BLOB.ciUncompressedSize);
    if (b.tocDigest) {
      buf.write(b.tocDigest, e + L.BLOB.blobTocDigest, 'hex');
      buf.writeUInt32LE(b.tocSize ?? 0, e + L.BLOB.blobTocSize);
    }
  });
}

interface SuperFields {
  image: RafsImage;
  inos: number;
  rootNid: number;
  metaBlkaddr: number;
  buildTime: number;
  buildTimeNsec: number;
  blobTableOffset: number;
  blobTableSize: number;
  chunkTableOffset: number;
  chunkTableSize: number;
  prefetchTableOffset: number;
  prefetchTableSize: number;
  hasXattr: boolean;
  bootstrapSize: number;
}

function writeSuperblocks(buf: Buffer, f: SuperFields): void {
  // Devices: blocks = uncompressed size in blocks; mapped_blkaddr after the bootstrap, each
  // start rounded up to 512 KiB (builder/src/core/v6.rs v6_align_mapped_blkaddr).
  let pos = f.bootstrapSize;
  let blocks = 0;
  f.image.blobs.forEach((b, i) => {
    const cnt = Math.ceil(b.uncompressedSize / L.BLOCK_SIZE);
    const mapped = L.alignUp(pos, L.MAPPED_BLKADDR_ALIGN) / L.BLOCK_SIZE;
    if (mapped + cnt > U32 || blocks + cnt > U32) throw new FormatError('too many data blocks', `blob ${i}`);
    pos = (mapped + cnt) * L.BLOCK_SIZE;
    blocks += cnt;
    const s = L.DEVTABLE_OFFSET + i * L.DEVSLOT_SIZE;
    buf.write(b.blobId, s + L.DEVSLOT.blobId, 'ascii');
    buf.writeUInt32LE(cnt, s + L.DEVSLOT.blocks);
    buf.writeUInt32LE(mapped, s + L.DEVSLOT.mappedBlkaddr);
  });

  const sb = L.SB_OFFSET;
  buf.writeUInt32LE(L.EROFS_MAGIC, sb + L.SB.magic);
  buf.writeUInt32LE(L.FEATURE_COMPAT_RAFS_V6, sb + L.SB.featureCompat);
  buf.writeUInt8(L.BLOCK_BITS, sb + L.SB.blkszbits);
  buf.writeUInt16LE(f.rootNid, sb + L.SB.rootNid);
  buf.writeBigUInt64LE(BigInt(f.inos), sb + L.SB.inos);
  buf.writeBigUInt64LE(BigInt(f.buildTime), sb + L.SB.buildTime);
  buf.writeUInt32LE(f.buildTimeNsec, sb + L.SB.buildTimeNsec);
  buf.writeUInt32LE(blocks, sb + L.SB.blocks);
  buf.writeUInt32LE(f.metaBlkaddr, sb + L.SB.metaBlkaddr);
  buf.writeUInt32LE(L.FEATURE_INCOMPAT_CHUNKED_FILE | L.FEATURE_INCOMPAT_DEVICE_TABLE, sb + L.SB.featureIncompat);
  buf.writeUInt16LE(f.image.blobs.length, sb + L.SB.extraDevices);
  buf.writeUInt16LE(L.DEVTABLE_OFFSET / L.DEVSLOT_SIZE, sb + L.SB.devtSlotoff);

  const x = L.EXT_SB_OFFSET;
  let flags = COMPRESSOR_FLAG[f.image.compressor] | L.SUPER_FLAGS.EXPLICIT_UID_GID;
  flags |= f.image.digester === 'blake3' ? L.SUPER_FLAGS.HASH_BLAKE3 : L.SUPER_FLAGS.HASH_SHA256;
  if (f.hasXattr) flags |= L.SUPER_FLAGS.HAS_XATTR;
  buf.writeBigUInt64LE(BigInt(flags), x + L.EXT.flags);
  buf.writeBigUInt64LE(BigInt(f.blobTableOffset), x + L.EXT.blobTableOffset);
  buf.writeUInt32LE(f.blobTableSize, x + L.EXT.blobTableSize);
  buf.writeUInt32LE(f.image.chunkSize, x + L.EXT.chunkSize);
  buf.writeBigUInt64LE(BigInt(f.chunkTableOffset), x + L.EXT.chunkTableOffset);
  buf.writeBigUInt64LE(BigInt(f.chunkTableSize), x + L.EXT.chunkTableSize);
  buf.writeBigUInt64LE(BigInt(f.prefetchTableOffset), x + L.EXT.prefetchTableOffset);
  buf.writeUInt32LE(f.prefetchTableSize, x + L.EXT.prefetchTableSize);
}
