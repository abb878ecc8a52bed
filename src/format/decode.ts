/**
 * Reads a RAFS v6 bootstrap (ours or upstream nydus-image's) into the image model; a RAFS v5
 * bootstrap ("RAFS" magic at offset 0) goes to decode-v5.ts. `decodeBootstrap` reads the whole
 * tree at once (builder, check, inspect, merge); `openBootstrap` gives the same tree read on demand
 * (nydusd's mount), with the same checks made when each part is first reached.
 *
 * Contract: returns a complete model or throws FormatError naming the structure and byte offset.
 * Every offset and count read from the input is checked against the buffer before it is used, so
 * the work and memory are bounded by the input size: each directory is read once (a directory
 * reached twice is a cycle), a non-directory nid reached twice is a hard link to the same Inode
 * (on demand: when its stored link count says it has several names), and arrays are only allocated
 * after their end was found inside the buffer.
 */
import { BLOB_INLINED_FS_META, BlobInfo, CHUNK_COMPRESSED, ChunkInfo, Compressor, Digester, FormatError, INLINED_BLOB_ID_PLACEHOLDER, Inode, InodeKind, NO_XATTRS, RafsImage } from './model';
import * as L from './layout';
import { decodeXattrs, xattrSize } from './xattr';
import { parseDir } from './dirent';
import { decodeBootstrapV5, isRafsV5 } from './decode-v5';
import type { BlobMetaChunk } from './blob-meta';
import { u64, within } from './bytes';
import { ChunkRows, chunkKey, readChunkTable } from './chunk-rows';
import { ByteArena, FileChunkIndexes, FileRows, OnDemandDir, OnDemandFile } from './on-demand-nodes';

const KIND_OF_IFMT = new Map<number, InodeKind>([
  [L.S_IFREG, 'file'],
  [L.S_IFDIR, 'dir'],
  [L.S_IFLNK, 'symlink'],
  [L.S_IFCHR, 'chardev'],
  [L.S_IFBLK, 'blockdev'],
  [L.S_IFIFO, 'fifo'],
  [L.S_IFSOCK, 'socket'],
]);
const FT_OF_KIND: Record<InodeKind, number> = {
  file: L.FT_REG_FILE, dir: L.FT_DIR, chardev: L.FT_CHRDEV, blockdev: L.FT_BLKDEV,
  fifo: L.FT_FIFO, socket: L.FT_SOCK, symlink: L.FT_SYMLINK,
};

interface Super {
  rootNid: number;
  metaAddr: number;
  buildTime: number;
  buildTimeNsec: number;
  chunkSize: number;
  compressor: Compressor;
  digester: Digester;
  blobs: BlobInfo[];
  chunks: ChunkRows;
  prefetchNids: number[];
}

/**
 * Chunk details of a blob from outside the bootstrap: its blob meta (CI array) and, when the blob
 * carries them (INLINED_CHUNK_DIGEST), its chunk digests, 32 bytes per chunk index.
 */
export interface ExternalChunks {
  chunks: BlobMetaChunk[];
  digests?: Buffer;
}

export interface DecodeOptions {
  /**
   * Asked (once per blob) for a chunk the bootstrap's chunk info table does not hold: images from
   * before the table existed (nydus-image before 2022-02) keep chunk details only in the blob meta.
   * Returns undefined when the blob is not at hand.
   */
  externalChunks?(blob: BlobInfo, blobIndex: number): ExternalChunks | undefined;
  /** Maps each entry name as it is decoded (nydusd interns them: images side by side share one copy). */
  name?(s: string): string;
}

export function decodeBootstrap(buf: Buffer, opts: DecodeOptions = {}): RafsImage {
  if (isRafsV5(buf)) return decodeBootstrapV5(buf);
  const sb = readSuper(buf);
  const tree = new TreeReader(buf, sb, opts);
  const root = tree.read();
  const prefetch = tree.prefetchPaths(root);
  return {
    root,
    blobs: sb.blobs,
    chunkSize: sb.chunkSize,
    digester: sb.digester,
    compressor: sb.compressor,
    prefetch,
    buildTime: sb.buildTime,
  };
}

/**
 * A RAFS v6 bootstrap as an image whose tree is decoded on demand, for a mount that must answer
 * before it has read 10k inodes: the superblock, blob table and chunk info table are read and
 * checked here; a directory's entries (and their inodes) the first time its `children` is read, a
 * file's chunk rows each time a range of them is asked for (`chunkSlice`), the prefetch table's
 * paths the first time `prefetch` is read. Every check `decodeBootstrap` makes is made, when the
 * part is reached: a malformed directory throws FormatError from `children`, not here. Inodes carry
 * their stored link count (`nlink`); regular files are read-only nodes. Chunk rows are shared,
 * read-only objects. What the tree needs after a directory is listed is copied out of `buf` (files'
 * attributes and chunk index arrays), so once every directory has been listed the chunk rows move to
 * a copy of the chunk table and the image no longer references `buf`. RAFS v5 is refused: decode it
 * with `decodeBootstrap`.
 */
export function openBootstrap(buf: Buffer, opts: DecodeOptions = {}): OnDemandImage {
  if (isRafsV5(buf)) throw new FormatError('RAFS v5 bootstrap: no on-demand decoding', 'bootstrap');
  return new OnDemandImage(new TreeReader(buf, readSuper(buf), opts, true), buf);
}

/** The image `openBootstrap` returns. */
export class OnDemandImage implements RafsImage {
  readonly root: Inode;
  readonly blobs: BlobInfo[];
  readonly chunkSize: number;
  readonly digester: Digester;
  readonly compressor: Compressor;
  readonly buildTime: number;
  /** Distinct inodes, as the superblock counts them. */
  readonly inodeCount: number;
  private paths?: string[];

  constructor(private readonly tree: TreeReader, buf: Buffer) {
    const sb = tree.sb;
    this.root = tree.rootInode().inode;
    this.blobs = sb.blobs;
    this.chunkSize = sb.chunkSize;
    this.digester = sb.digester;
    this.compressor = sb.compressor;
    this.buildTime = sb.buildTime;
    // Only reported (statfs), never used to size anything: not checked.
    this.inodeCount = Number(buf.readBigUInt64LE(L.SB_OFFSET + L.SB.inos));
  }

  /** The prefetch table as paths: the first read walks the tree until every listed inode is reached. */
  get prefetch(): string[] {
    this.paths ??= this.tree.prefetchPaths(this.root);
    return this.paths;
  }

  /**
   * The prefetch table's inodes read straight from their nids, with no walk of the tree to name
   * them: what a prefetcher needs right after the mount. Undefined when the table names something
   * other than a regular file (a directory's subtree needs the walk `prefetch` makes).
   */
  prefetchFiles(): Inode[] | undefined {
    const files: Inode[] = [];
    for (const nid of this.tree.sb.prefetchNids) {
      const f = this.tree.fileAt(nid);
      if (!f) return undefined;
      files.push(f);
    }
    return files;
  }

  /** Rows of file attributes held: one per regular file reached so far (memory). */
  get fileRows(): number {
    return this.tree.files.length;
  }

  /** Every row of the chunk info table (each chunk of each blob the image uses, once). */
  chunkRows(): IterableIterator<ChunkInfo> {
    return this.tree.sb.chunks.values();
  }
}

/**
 * Each blob of a RAFS v6 bootstrap with the number of rows its chunk info table holds for it, so a
 * caller that fetches blob metas asynchronously (nydusd) can tell an image from before the table
 * existed (no rows at all) before `decodeBootstrap` asks `externalChunks`. RAFS v5 keeps chunk
 * infos in its inodes: empty. Throws FormatError like `decodeBootstrap`.
 */
export function chunkRowsPerBlob(buf: Buffer): Array<{ blob: BlobInfo; rows: number }> {
  if (isRafsV5(buf)) return [];
  const sb = readSuper(buf);
  const rows = new Array<number>(sb.blobs.length).fill(0);
  for (const c of sb.chunks.values()) rows[c.blobIndex]++;
  return sb.blobs.map((blob, i) => ({ blob, rows: rows[i] }));
}

function readSuper(buf: Buffer): Super {
  if (buf.length < L.BLOCK_SIZE || buf.length % L.BLOCK_SIZE !== 0) {
    throw new FormatError(`size ${buf.length} is not a non-zero multiple of ${L.BLOCK_SIZE}`, 'bootstrap');
  }
  const s = L.SB_OFFSET;
  const at = (f: number) => `superblock @${s + f}`;
  if (buf.readUInt32LE(s + L.SB.magic) !== L.EROFS_MAGIC) throw new FormatError('bad EROFS magic', at(L.SB.magic));
  if (buf.readUInt32LE(s + L.SB.checksum) !== 0) throw new FormatError('non-zero checksum', at(L.SB.checksum));
  if ((buf.readUInt32LE(s + L.SB.featureCompat) & L.FEATURE_COMPAT_RAFS_V6) === 0) {
    throw new FormatError('RAFS v6 compat feature missing', at(L.SB.featureCompat));
  }
  if (buf.readUInt8(s + L.SB.blkszbits) !== L.BLOCK_BITS) throw new FormatError('block size is not 4096', at(L.SB.blkszbits));
  if (buf.readUInt8(s + L.SB.extslots) !== 0) throw new FormatError('extra superblock slots', at(L.SB.extslots));
  if (buf.readUInt32LE(s + L.SB.featureIncompat) !== (L.FEATURE_INCOMPAT_CHUNKED_FILE | L.FEATURE_INCOMPAT_DEVICE_TABLE)) {
    throw new FormatError('incompat features are not CHUNKED_FILE|DEVICE_TABLE', at(L.SB.featureIncompat));
  }
  if (buf.readUInt32LE(s + L.SB.xattrBlkaddr) !== 0) throw new FormatError('shared xattr area not supported', at(L.SB.xattrBlkaddr));
  if (buf.readUInt16LE(s + L.SB.devtSlotoff) * L.DEVSLOT_SIZE !== L.DEVTABLE_OFFSET) {
    throw new FormatError('device table not at 1408', at(L.SB.devtSlotoff));
  }
  const ndev = buf.readUInt16LE(s + L.SB.extraDevices);
  if (ndev > L.MAX_BLOBS || !within(buf, L.DEVTABLE_OFFSET, ndev * L.DEVSLOT_SIZE)) {
    throw new FormatError(`${ndev} devices`, at(L.SB.extraDevices));
  }
  const metaAddr = buf.readUInt32LE(s + L.SB.metaBlkaddr) * L.BLOCK_SIZE;
  if (metaAddr >= buf.length) throw new FormatError('meta block address past the end', at(L.SB.metaBlkaddr));

  const x = L.EXT_SB_OFFSET;
  const xat = (f: number) => `extended superblock @${x + f}`;
  const flags = Number(buf.readBigUInt64LE(x + L.EXT.flags) & 0xffffffffn);
  const comp = ([
    [L.SUPER_FLAGS.COMPRESSION_NONE, 'none'], [L.SUPER_FLAGS.COMPRESSION_LZ4, 'lz4_block'],
    [L.SUPER_FLAGS.COMPRESSION_GZIP, 'gzip'], [L.SUPER_FLAGS.COMPRESSION_ZSTD, 'zstd'],
  ] as const).filter(([bit]) => flags & bit);
  if (comp.length !== 1) throw new FormatError('not exactly one compression flag', xat(L.EXT.flags));
  const hash = ([[L.SUPER_FLAGS.HASH_BLAKE3, 'blake3'], [L.SUPER_FLAGS.HASH_SHA256, 'sha256']] as const).filter(([bit]) => flags & bit);
  if (hash.length !== 1) throw new FormatError('not exactly one digest flag', xat(L.EXT.flags));
  const chunkSize = buf.readUInt32LE(x + L.EXT.chunkSize);
  if (chunkSize < L.BLOCK_SIZE || chunkSize > 16 << 20 || (chunkSize & (chunkSize - 1)) !== 0) {
    throw new FormatError(`chunk size ${chunkSize}`, xat(L.EXT.chunkSize));
  }
  const devEnd = L.DEVTABLE_OFFSET + ndev * L.DEVSLOT_SIZE;
  const btOff = u64(buf, x + L.EXT.blobTableOffset, 'extended superblock');
  const btSize = buf.readUInt32LE(x + L.EXT.blobTableSize);
  if (btOff % L.BLOCK_SIZE !== 0 || btOff < L.BLOCK_SIZE || btOff < devEnd || btSize % L.BLOB_ENTRY_SIZE !== 0 || !within(buf, btOff, btSize)) {
    throw new FormatError(`blob table ${btOff}+${btSize}`, xat(L.EXT.blobTableOffset));
  }
  if (btSize / L.BLOB_ENTRY_SIZE !== ndev) throw new FormatError(`${btSize / L.BLOB_ENTRY_SIZE} blobs but ${ndev} devices`, xat(L.EXT.blobTableSize));
  const ctOff = u64(buf, x + L.EXT.chunkTableOffset, 'extended superblock');
  const ctSize = u64(buf, x + L.EXT.chunkTableSize, 'extended superblock');
  if (ctSize > 0 && (ctOff % L.BLOCK_SIZE !== 0 || ctOff < devEnd || ctSize % L.CHUNK_INFO_SIZE !== 0 || !within(buf, ctOff, ctSize) ||
    (ctOff < btOff + btSize && btOff < ctOff + ctSize))) {
    throw new FormatError(`chunk table ${ctOff}+${ctSize}`, xat(L.EXT.chunkTableOffset));
  }
  const ptOff = u64(buf, x + L.EXT.prefetchTableOffset, 'extended superblock');
  const ptSize = buf.readUInt32LE(x + L.EXT.prefetchTableSize);
  const prefetchNids: number[] = [];
  // Legacy images may have a size with a zero offset: that means no table.
  if (ptSize > 0 && ptOff !== 0) {
    if (ptOff < devEnd || ptSize % 4 !== 0 || !within(buf, ptOff, ptSize)) {
      throw new FormatError(`prefetch table ${ptOff}+${ptSize}`, xat(L.EXT.prefetchTableOffset));
    }
    for (let p = ptOff; p < ptOff + ptSize; p += 4) prefetchNids.push(buf.readUInt32LE(p));
  }

  const blobs: BlobInfo[] = [];
  for (let i = 0; i < ndev; i++) blobs.push(readBlob(buf, btOff + i * L.BLOB_ENTRY_SIZE, i, L.DEVTABLE_OFFSET + i * L.DEVSLOT_SIZE));
  return {
    rootNid: buf.readUInt16LE(s + L.SB.rootNid),
    metaAddr,
    buildTime: u64(buf, s + L.SB.buildTime, 'superblock'),
    buildTimeNsec: buf.readUInt32LE(s + L.SB.buildTimeNsec),
    chunkSize,
    compressor: comp[0][1],
    digester: hash[0][1],
    blobs,
    chunks: readChunkTable(buf, ctOff, ctSize, blobs),
    prefetchNids,
  };
}

function readBlob(buf: Buffer, e: number, i: number, slot: number): BlobInfo {
  const where = `blob table entry ${i} @${e}`;
  const id = buf.toString('latin1', e + L.BLOB.blobId, e + L.BLOB.blobId + 64);
  const inlined = id === INLINED_BLOB_ID_PLACEHOLDER && (buf.readUInt32LE(e + L.BLOB.features) & BLOB_INLINED_FS_META) !== 0;
  if (!inlined && !/^[0-9a-f]{64}$/.test(id)) throw new FormatError('blob id is not 64 lowercase hex chars', where);
  const devId = buf.toString('latin1', slot + L.DEVSLOT.blobId, slot + L.DEVSLOT.blobId + 64);
  if (devId !== id) throw new FormatError(`device slot blob id differs from blob table entry ${i}`, `device slot ${i} @${slot}`);
  if (buf.readUInt32LE(e + L.BLOB.blobIndex) !== i) throw new FormatError('blob index differs from its position', where);
  const algo = <T>(names: readonly T[], off: number, what: string): T => {
    const v = buf.readUInt32LE(e + off);
    if (v >= names.length) throw new FormatError(`unknown ${what} ${v}`, `${where} +${off}`);
    return names[v];
  };
  return {
    blobId: id,
    compressor: algo(L.COMPRESSION_ALGOS, L.BLOB.compressionAlgo, 'compression algorithm'),
    digester: algo(L.DIGEST_ALGOS, L.BLOB.digestAlgo, 'digest algorithm'),
    chunkSize: buf.readUInt32LE(e + L.BLOB.chunkSize),
    chunkCount: buf.readUInt32LE(e + L.BLOB.chunkCount),
    compressedSize: u64(buf, e + L.BLOB.compressedSize, where),
    uncompressedSize: u64(buf, e + L.BLOB.uncompressedSize, where),
    features: buf.readUInt32LE(e + L.BLOB.features),
    ciOffset: u64(buf, e + L.BLOB.ciOffset, where),
    ciCompressedSize: u64(buf, e + L.BLOB.ciCompressedSize, where),
    ciUncompressedSize: u64(buf, e + L.BLOB.ciUncompressedSize, where),
    ciCompressor: algo(L.COMPRESSION_ALGOS, L.BLOB.ciCompressor, 'CI compressor'),
    ...tocFields(buf, e),
  };
}

/** blob_toc_digest / blob_toc_size when the entry records a ToC (all zeros otherwise). */
function tocFields(buf: Buffer, e: number): Pick<BlobInfo, 'tocDigest' | 'tocSize'> {
  const digest = buf.subarray(e + L.BLOB.blobTocDigest, e + L.BLOB.blobTocDigest + 32);
  const size = buf.readUInt32LE(e + L.BLOB.blobTocSize);
  return digest.some((b) => b !== 0) || size !== 0 ? { tocDigest: digest.toString('hex'), tocSize: size } : {};
}

/** A chunk as the decoded model holds it: its own fields and its own digest bytes. */
function plainChunk(c: ChunkInfo): ChunkInfo {
  return {
    digest: Buffer.from(c.digest),
    blobIndex: c.blobIndex,
    index: c.index,
    flags: c.flags,
    compressedOffset: c.compressedOffset,
    compressedSize: c.compressedSize,
    uncompressedOffset: c.uncompressedOffset,
    uncompressedSize: c.uncompressedSize,
  };
}

export interface RawInode {
  inode: Inode;
  layout: number;
  /** i_u: raw block address, rdev or chunk format */
  u: number;
  /** offset of the first byte after the inode and its xattrs */
  bodyOff: number;
}

/** Reads inodes and directories of one bootstrap, whole or on demand (the nodes of on-demand-nodes.ts call back into it). */
export class TreeReader {
  /** nid -> (parent dir nid, name) of the first entry that reached it; paths are built on demand
   * because building every path eagerly costs O(depth) per entry. */
  private readonly reachedBy = new Map<number, [parent: number, name: string]>();
  private readonly dirPaths = new Map<number, string>();
  private readonly leaves = new Map<number, Inode>();
  private readonly dirsSeen = new Set<number>();
  /** On demand: files `fileAt` read before their directory was listed; the listing takes them over. */
  private readonly readEarly = new Map<number, Inode>();

  private readonly external = new Map<number, ExternalChunks | undefined>();

  /** The bootstrap; an on-demand tree lets go of it once every directory has been listed. */
  private held?: Buffer;
  /** On demand: directories made but not listed yet. */
  private unlisted = 0;
  /** On demand: the files' chunk index arrays, copied out as their directories are listed. */
  private readonly addrs = new ByteArena();
  /** On demand: the files' attributes. */
  readonly files = new FileRows();
  /** On demand: the prefetch table's nids, whose first path is remembered when they are reached. */
  private readonly prefetchNids: Set<number>;

  constructor(
    buf: Buffer,
    readonly sb: Super,
    private readonly opts: DecodeOptions,
    /** Directories list their entries and files their chunks on first use (openBootstrap). */
    private readonly onDemand = false,
  ) {
    this.held = buf;
    this.prefetchNids = new Set(onDemand ? sb.prefetchNids : []);
  }

  private get buf(): Buffer {
    if (!this.held) throw new Error('bootstrap already released: every directory was listed');
    return this.held;
  }

  /** An on-demand directory was listed: with none left to list, nothing reads the bootstrap again. */
  dirListed(): void {
    if (--this.unlisted > 0) return;
    this.held = undefined;
    this.sb.chunks.detach();
    this.addrs.trim();
    this.files.trim();
  }

  private names(name: string): string {
    return this.opts.name ? this.opts.name(name) : name;
  }

  /**
   * A chunk missing from the chunk info table, from the blob's own metadata. Its digest must come
   * from the blob too: a chunk without a digest could never be verified, so it is an error.
   */
  private externalChunk(blobIndex: number, index: number, at: string): ChunkInfo {
    if (!this.external.has(blobIndex)) this.external.set(blobIndex, this.opts.externalChunks?.(this.sb.blobs[blobIndex], blobIndex));
    const ext = this.external.get(blobIndex);
    const blob = this.sb.blobs[blobIndex];
    if (!ext) {
      throw new FormatError(`chunk ${index} of blob ${blobIndex} missing from the chunk table${blob.ciUncompressedSize ? ' (its details are in the blob meta: give the blobs)' : ''}`, at);
    }
    const m = ext.chunks[index];
    if (!m) throw new FormatError(`chunk ${index} not in the blob meta of blob ${blobIndex} (${ext.chunks.length} entries)`, at);
    if (m.zran || m.batch || m.encrypted) throw new FormatError(`chunk ${index} of blob ${blobIndex} is a ${m.zran ? 'zran' : m.batch ? 'batch' : 'encrypted'} chunk, which is not supported`, at);
    if (!ext.digests || ext.digests.length < (index + 1) * 32) {
      throw new FormatError(`no digest for chunk ${index} of blob ${blobIndex}: neither the chunk table nor the blob (INLINED_CHUNK_DIGEST) has one, so it cannot be verified`, at);
    }
    if (m.compressedOffset + m.compressedSize > blob.compressedSize || m.uncompressedOffset + m.uncompressedSize > blob.uncompressedSize) {
      throw new FormatError(`blob meta entry ${index} lies outside blob ${blobIndex}`, at);
    }
    return {
      digest: Buffer.from(ext.digests.subarray(index * 32, index * 32 + 32)),
      blobIndex,
      index,
      flags: m.compressed ? CHUNK_COMPRESSED : 0,
      compressedOffset: m.compressedOffset,
      compressedSize: m.compressedSize,
      uncompressedOffset: m.uncompressedOffset,
      uncompressedSize: m.uncompressedSize,
    };
  }

  /** The whole tree, every directory read once (breadth first). */
  read(): Inode {
    const root = this.rootInode();
    const queue: Array<[RawInode, number, number]> = [[root, this.sb.rootNid, this.sb.rootNid]];
    for (let q = 0; q < queue.length; q++) {
      const [dir, nid, parentNid] = queue[q];
      dir.inode.children = this.listDir(dir, nid, parentNid, (raw, childNid) => {
        if (raw.inode.kind === 'dir') queue.push([raw, childNid, nid]);
      });
    }
    return root.inode;
  }

  /** The root directory, marked seen. */
  rootInode(): RawInode {
    const rootNid = this.sb.rootNid;
    const root = this.readInode(rootNid);
    if (root.inode.kind !== 'dir') throw new FormatError('root is not a directory', `inode nid ${rootNid}`);
    this.dirsSeen.add(rootNid);
    return root;
  }

  /**
   * The checked entries of directory `nid`. A child read here for the first time is passed to
   * `reached` (the whole-tree walk queues directories); a non-directory reached again is the same
   * Inode (hard link); a directory reached again is a cycle.
   */
  listDir(dir: RawInode, nid: number, parentNid: number, reached: (raw: RawInode, nid: number) => void = () => undefined): Map<string, Inode> {
    const entries = this.dirEntries(dir, nid);
    const children = new Map<string, Inode>();
    let sawDot = false;
    let sawDotDot = false;
    for (const e of entries) {
      const name = e.name.toString('utf8');
      const where = (): string => `dirent ${JSON.stringify(name)} of ${this.pathOf(nid)} (directory nid ${nid}) @${e.at}`;
      if (name === '.' || name === '..') {
        const want = name === '.' ? nid : parentNid;
        if (e.nid !== want || (name === '.' ? sawDot : sawDotDot)) throw new FormatError(`${name} points to nid ${e.nid}`, where());
        if (name === '.') sawDot = true;
        else sawDotDot = true;
        continue;
      }
      if (name.includes('/') || name.includes('\0')) throw new FormatError('name contains / or NUL', where());
      if (children.has(name)) throw new FormatError('duplicate name', where());
      let child: Inode;
      const leaf = this.leaves.get(e.nid);
      const early = leaf ? undefined : this.readEarly.get(e.nid);
      if (leaf) {
        child = leaf;
      } else {
        if (this.dirsSeen.has(e.nid)) throw new FormatError(`directory nid ${e.nid} reached twice (cycle)`, where());
        // A prefetched file keeps its object (and its one row of `files`) when its directory lists it.
        const raw = early ? undefined : this.readInode(e.nid, nid);
        child = early ?? raw!.inode;
        this.readEarly.delete(e.nid);
        if (child.kind === 'dir') this.dirsSeen.add(e.nid);
        // A tree kept while mounted remembers only what it needs later: hard links (one Inode for
        // every name), directories (paths in messages) and the prefetch table's nids (their paths).
        else if (!this.onDemand || (child.nlink ?? 0) > 1) this.leaves.set(e.nid, child);
        if (!this.onDemand || child.kind === 'dir' || this.prefetchNids.has(e.nid)) this.reachedBy.set(e.nid, [nid, name]);
        if (raw) reached(raw, e.nid);
      }
      if (e.fileType !== FT_OF_KIND[child.kind]) throw new FormatError(`file type ${e.fileType} but inode is ${child.kind}`, where());
      children.set(this.names(name), child);
    }
    if (!sawDot || !sawDotDot) throw new FormatError('missing . or ..', `directory ${this.pathOf(nid)} (nid ${nid})`);
    return children;
  }

  /** The prefetch table's nids as paths: the first path that reaches each, as a breadth-first walk meets them. */
  prefetchPaths(root: Inode): string[] {
    const nids = this.sb.prefetchNids;
    const found = new Map<number, string>();
    for (const nid of nids) {
      const p = this.pathOf(nid);
      if (p !== undefined) found.set(nid, p);
    }
    if (this.onDemand && root instanceof OnDemandDir && nids.some((nid) => !found.has(nid))) this.findPaths(root, new Set(nids), found);
    return nids.map((nid, i) => {
      const p = found.get(nid);
      if (p === undefined) throw new FormatError(`nid ${nid} is not an inode of the tree`, `prefetch table entry ${i}`);
      return p;
    });
  }

  /**
   * Lists an on-demand tree's directories breadth first until every wanted nid has been reached
   * (listing remembers the first entry that reaches a prefetch table nid).
   */
  private findPaths(root: OnDemandDir, wanted: Set<number>, found: Map<number, string>): void {
    const missing = [...wanted].filter((nid) => !found.has(nid));
    const queue: OnDemandDir[] = [root];
    let k = 0;
    for (let q = 0; q < queue.length; q++) {
      while (k < missing.length && this.reachedBy.has(missing[k])) k++;
      if (k === missing.length) break;
      for (const c of queue[q].children.values()) if (c instanceof OnDemandDir) queue.push(c);
    }
    for (const nid of missing) {
      const p = this.pathOf(nid);
      if (p !== undefined) found.set(nid, p);
    }
  }

  /** The first path that reached `nid`, or undefined if the tree does not contain it. */
  pathOf(nid: number): string | undefined {
    if (nid === this.sb.rootNid) return '/';
    const by = this.reachedBy.get(nid);
    if (!by) return undefined;
    // Iterative walk up to the nearest directory whose path is known (no recursion depth limit).
    const names = [by[1]];
    let cur = by[0];
    const chain: number[] = [];
    let base = cur === this.sb.rootNid ? '/' : this.dirPaths.get(cur);
    while (base === undefined) {
      const up = this.reachedBy.get(cur);
      if (!up) return undefined;
      chain.push(cur);
      names.push(up[1]);
      cur = up[0];
      base = cur === this.sb.rootNid ? '/' : this.dirPaths.get(cur);
    }
    let path = base;
    for (let i = names.length - 1; i >= 1; i--) {
      path = path === '/' ? `/${names[i]}` : `${path}/${names[i]}`;
      this.dirPaths.set(chain[i - 1], path);
    }
    return path === '/' ? `/${names[0]}` : `${path}/${names[0]}`;
  }

  /**
   * Regular file `nid` on its own, checked, before its directory is listed (the listing then takes
   * this object over); undefined for any other kind.
   */
  fileAt(nid: number): Inode | undefined {
    // Released once every directory was listed: the caller then has the paths listing recorded.
    if (!this.held) return undefined;
    // The file type first (i_mode sits at the same offset in both inode forms): reading a
    // directory's inode here would count it as one more to list, and the bootstrap would stay held.
    const off = this.sb.metaAddr + nid * L.INODE_SLOT_SIZE;
    if (!within(this.held, off, L.INODE_COMPACT_SIZE) || (this.held.readUInt16LE(off + L.COMPACT.mode) & L.S_IFMT) !== L.S_IFREG) return undefined;
    const known = this.leaves.get(nid) ?? this.readEarly.get(nid);
    if (known) return known;
    const f = this.readInode(nid).inode;
    this.readEarly.set(nid, f);
    return f;
  }

  /** Inode `nid`, checked; `parentNid` is the directory that reached it (on-demand directories list `..`). */
  private readInode(nid: number, parentNid = nid): RawInode {
    const buf = this.buf;
    const off = this.sb.metaAddr + nid * L.INODE_SLOT_SIZE;
    const where = `inode nid ${nid} @${off}`;
    if (!within(buf, off, L.INODE_COMPACT_SIZE)) throw new FormatError('inode outside the bootstrap', where);
    const format = buf.readUInt16LE(off);
    if (format >> 4 !== 0) throw new FormatError(`unknown i_format bits 0x${format.toString(16)}`, where);
    const extended = (format & 1) === 1;
    const layout = (format >> 1) & 7;
    const isize = extended ? L.INODE_EXTENDED_SIZE : L.INODE_COMPACT_SIZE;
    if (!within(buf, off, isize)) throw new FormatError('inode outside the bootstrap', where);
    let mode: number, size: number, u: number, ino: number, uid: number, gid: number, mtime: number, mtimeNsec: number;
    const icount = buf.readUInt16LE(off + (extended ? L.EXTENDED.xattrIcount : L.COMPACT.xattrIcount));
    if (extended) {
      const F = L.EXTENDED;
      mode = buf.readUInt16LE(off + F.mode);
      size = u64(buf, off + F.size, where);
      u = buf.readUInt32LE(off + F.u);
      ino = buf.readUInt32LE(off + F.ino);
      uid = buf.readUInt32LE(off + F.uid);
      gid = buf.readUInt32LE(off + F.gid);
      mtime = u64(buf, off + F.mtime, where);
      mtimeNsec = buf.readUInt32LE(off + F.mtimeNsec);
    } else {
      const F = L.COMPACT;
      mode = buf.readUInt16LE(off + F.mode);
      size = buf.readUInt32LE(off + F.size);
      u = buf.readUInt32LE(off + F.u);
      ino = buf.readUInt32LE(off + F.ino);
      uid = buf.readUInt16LE(off + F.uid);
      gid = buf.readUInt16LE(off + F.gid);
      mtime = this.sb.buildTime;
      mtimeNsec = this.sb.buildTimeNsec;
    }
    if (mtimeNsec > 999_999_999) throw new FormatError(`mtime nsec ${mtimeNsec}`, where);
    const kind = KIND_OF_IFMT.get(mode & L.S_IFMT);
    if (!kind) throw new FormatError(`unknown file type in mode 0o${mode.toString(8)}`, where);
    const xsize = xattrSize(icount);
    const decoded = decodeXattrs(buf, off + isize, xsize, where);
    const xattrs = this.onDemand && decoded.size === 0 ? NO_XATTRS : decoded;
    const inode: Inode = { kind, mode: mode & 0o7777, uid, gid, mtime, mtimeNsec, size, rdev: 0, xattrs, ino };
    const raw: RawInode = { inode, layout, u, bodyOff: off + isize + xsize };
    const nlink = extended ? buf.readUInt32LE(off + L.EXTENDED.nlink) : buf.readUInt16LE(off + L.COMPACT.nlink);
    switch (kind) {
      case 'file':
        if (this.onDemand) raw.inode = new OnDemandFile(this, this.files.add(inode, nlink, nid, this.copyChunkIndexes(raw, where)));
        else inode.chunks = this.fileChunks(raw, where);
        break;
      case 'dir':
        this.checkFlat(raw, where);
        if (this.onDemand) {
          raw.inode = new OnDemandDir(this, raw, nid, parentNid);
          this.unlisted++;
        } else {
          inode.children = new Map();
        }
        break;
      case 'symlink':
        if (size === 0 || size > L.MAX_SYMLINK) throw new FormatError(`symlink size ${size}`, where);
        this.checkFlat(raw, where);
        inode.target = this.flatData(raw, where).toString('utf8');
        break;
      case 'chardev':
      case 'blockdev':
        inode.rdev = u;
        if (size !== 0) throw new FormatError(`device with size ${size}`, where);
        break;
      default:
        if (size !== 0) throw new FormatError(`${kind} with size ${size}`, where);
    }
    if (this.onDemand && kind !== 'file') raw.inode.nlink = nlink;
    return raw;
  }

  private checkFlat(raw: RawInode, where: string): void {
    if (raw.layout !== L.LAYOUT_FLAT_PLAIN && raw.layout !== L.LAYOUT_FLAT_INLINE) {
      throw new FormatError(`data layout ${raw.layout} for a ${raw.inode.kind}`, where);
    }
    const size = raw.inode.size;
    if (size > this.buf.length) throw new FormatError(`size ${size} larger than the bootstrap`, where);
    const nblocks = Math.ceil(size / L.BLOCK_SIZE);
    const plain = raw.layout === L.LAYOUT_FLAT_INLINE ? nblocks - 1 : nblocks;
    if (plain > 0 && !within(this.buf, raw.u * L.BLOCK_SIZE, plain * L.BLOCK_SIZE)) {
      throw new FormatError(`data blocks at ${raw.u} outside the bootstrap`, where);
    }
    if (raw.layout === L.LAYOUT_FLAT_INLINE) {
      const tail = size - plain * L.BLOCK_SIZE;
      if (tail <= 0 || (raw.bodyOff % L.BLOCK_SIZE) + tail > L.BLOCK_SIZE || !within(this.buf, raw.bodyOff, tail)) {
        throw new FormatError(`inline tail of ${tail} bytes crosses a block boundary`, where);
      }
    }
  }

  /** Byte offset of block i of a flat (plain or inline) inode's data. */
  private flatBlockAt(raw: RawInode, i: number): number {
    const nblocks = Math.ceil(raw.inode.size / L.BLOCK_SIZE);
    return raw.layout === L.LAYOUT_FLAT_INLINE && i === nblocks - 1 ? raw.bodyOff : (raw.u + i) * L.BLOCK_SIZE;
  }

  /** Block i of a flat inode's data; the tail block may be short. */
  private flatBlock(raw: RawInode, i: number): Buffer {
    const start = this.flatBlockAt(raw, i);
    return this.buf.subarray(start, start + Math.min(L.BLOCK_SIZE, raw.inode.size - i * L.BLOCK_SIZE));
  }

  private flatData(raw: RawInode, where: string): Buffer {
    const nblocks = Math.ceil(raw.inode.size / L.BLOCK_SIZE);
    if (nblocks !== 1) throw new FormatError(`symlink of ${nblocks} blocks`, where);
    return this.flatBlock(raw, 0);
  }

  private dirEntries(raw: RawInode, nid: number) {
    const size = raw.inode.size;
    if (size === 0) throw new FormatError('empty directory data', `inode nid ${nid}`);
    return parseDir(size, (i) => this.flatBlock(raw, i), (i) => this.flatBlockAt(raw, i), `directory nid ${nid}`);
  }

  /** Where a chunk-based file's index array starts, checked to lie in the bootstrap. */
  private chunkIndexes(raw: RawInode, where: string): { start: number; count: number } {
    const size = raw.inode.size;
    if (raw.layout !== L.LAYOUT_CHUNK_BASED) {
      if (size === 0 && (raw.layout === L.LAYOUT_FLAT_PLAIN || raw.layout === L.LAYOUT_FLAT_INLINE)) return { start: 0, count: 0 };
      throw new FormatError(`data layout ${raw.layout} for a regular file`, where);
    }
    if ((raw.u & ~(L.CHUNK_FORMAT_INDEXES | L.CHUNK_FORMAT_BLKBITS_MASK)) !== 0 || (raw.u & L.CHUNK_FORMAT_INDEXES) === 0) {
      throw new FormatError(`chunk format 0x${raw.u.toString(16)} is not an index array`, where);
    }
    // Entry count from the superblock chunk size; the per-inode chunk bits may be larger.
    const count = Math.ceil(size / this.sb.chunkSize);
    const start = raw.bodyOff + ((8 - (raw.bodyOff % 8)) % 8);
    if (!within(this.buf, start, count * L.CHUNK_ADDR_SIZE)) {
      throw new FormatError(`${count} chunk indexes run past the bootstrap`, where);
    }
    return { start, count };
  }

  /** A chunk-based file's index array, copied out of the bootstrap (`at` in the copies, `start` in the bootstrap). */
  private copyChunkIndexes(raw: RawInode, where: string): FileChunkIndexes {
    const { start, count } = this.chunkIndexes(raw, where);
    return { start, count, at: count > 0 ? this.addrs.add(this.buf, start, count * L.CHUNK_ADDR_SIZE) : 0 };
  }

  /** Chunk `i` of an on-demand file, from its copied index array: its chunk table row, checked. */
  fileChunkAt(at: number, start: number, i: number, size: number, where: string): ChunkInfo {
    return this.chunkAt(this.addrs.bytes, at, start, i, size, where);
  }

  /**
   * Chunk `i` of a file of `size` bytes whose index array starts at `from` in `addrs` (at `start`
   * in the bootstrap, for messages): its chunk table row, checked.
   */
  private chunkAt(addrs: Buffer, from: number, start: number, i: number, size: number, where: string): ChunkInfo {
    const a = from + i * L.CHUNK_ADDR_SIZE;
    const p = start + i * L.CHUNK_ADDR_SIZE;
    const lo = addrs.readUInt16LE(a + L.CHUNK_ADDR.blobAddrLo);
    const hi = addrs.readUInt16LE(a + L.CHUNK_ADDR.blobAddrHi);
    const blk = addrs.readUInt32LE(a + L.CHUNK_ADDR.blkAddr);
    const at = (): string => `${where} chunk index ${i} @${p}`;
    const dev = hi & 0xff;
    if (dev === 0 || dev > this.sb.blobs.length) throw new FormatError(`device id ${dev} names no blob`, at());
    const index = ((hi >> 8) << 16) | lo;
    const row = this.sb.chunks.get(chunkKey(dev - 1, index)) ?? this.externalChunk(dev - 1, index, at());
    if (blk === L.NULL_ADDR || blk * L.BLOCK_SIZE !== row.uncompressedOffset) {
      throw new FormatError(`block address ${blk} disagrees with the chunk table`, at());
    }
    const want = Math.min(this.sb.chunkSize, size - i * this.sb.chunkSize);
    if (row.uncompressedSize !== want) throw new FormatError(`chunk of ${row.uncompressedSize} bytes, expected ${want}`, at());
    return row;
  }

  private fileChunks(raw: RawInode, where: string): ChunkInfo[] {
    const { start, count } = this.chunkIndexes(raw, where);
    const chunks: ChunkInfo[] = new Array(count);
    for (let i = 0; i < count; i++) chunks[i] = plainChunk(this.chunkAt(this.buf, start, start, i, raw.inode.size, where));
    return chunks;
  }
}
