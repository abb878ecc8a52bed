/**
 * A rafs instance: one mounted image. It joins a decoded bootstrap (the tree), the blob cache and a
 * chunk pipeline, and answers the questions the FUSE layer asks: which inode is at this path, what
 * are its attributes, and what are bytes [offset, offset+length) of this file.
 *
 * Contract:
 *  - the image is immutable: an image decoded on demand (`OnDemandImage`, what nydusd mounts for a
 *    RAFS v6 bootstrap with a chunk info table) is taken as it is, its directories and chunk rows
 *    read from the bootstrap when first asked for, so a mount costs the superblock and the chunk
 *    table, not the tree; any other image is indexed once here (compact file nodes, link counts);
 *  - `read()` returns exactly the requested bytes clipped to the file size, every one of them from a
 *    digest-verified chunk, as the chunks' own slices in file order (the FUSE session writes them
 *    with one writev); a chunk nobody could deliver rejects with `ChunkFetchError` (EIO);
 *  - access statistics (per-file reads and first-access order) are kept for the metrics API;
 *  - an image with a blob whose chunks this process cannot decompress (its compressor, or a feature
 *    such as ZRAN or BATCH) is refused here, at mount, with one line naming blob and reason: it is
 *    never half-served;
 *  - the bootstrap may be a data blob with its bootstrap in its ToC, and a v6 bootstrap may lack the
 *    chunk info table (chunk details then come from the blobs' blob meta: mount-image.ts);
 *  - RAFS v5 and v6 images are served alike (the model hides the format); without
 *    EXPLICIT_UID_GID every inode shows this process's euid/egid, like upstream.
 */
import { ChunkInfo, Inode, NO_XATTRS, RafsImage } from '../format/model';
import { OnDemandImage } from '../format/decode';
import { decompressorProblem } from '../format/codec';
import { blobFeatureProblem } from '../format/blob-meta';
import { BlobChunks, ChunkPipeline } from '../fetch/pipeline';
import { LATENCY_BUCKETS_MS } from '../fetch/metrics';
import { ChunkTable, FileNode } from './chunk-table';
import { loadMountImage } from './mount-image';
import { internName } from './intern-name';

export interface FileAccess {
  ino: number;
  path: string;
  nrRead: number;
  bytes: number;
  /** Wall-clock time of the first read, seconds and nanoseconds. */
  firstSecs: number;
  firstNanos: number;
  /** Order of first access (0 = first file read). */
  order: number;
}

export interface FsStats {
  reads: number;
  readBytes: number;
  readErrors: number;
  readLatencyMsTotal: number;
  readLatencyDist: number[];
  opens: number;
}

export class RafsInstance {
  /** Link counts of regular files with more than one name (everything else is computed). */
  private readonly hardLinks = new Map<Inode, number>();
  readonly blobs: BlobChunks[];
  readonly stats: FsStats = { reads: 0, readBytes: 0, readErrors: 0, readLatencyMsTotal: 0, readLatencyDist: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0), opens: 0 };
  private readonly access = new Map<Inode, FileAccess>();
  /** Entries for statfs: names in the tree, or the superblock's inode count for an on-demand image. */
  readonly entryCount: number;

  /**
   * Indexes the image once. It keeps no per-path tables: a shared daemon holds many images, and a
   * Debian image has 13k entries, so paths are resolved through the directories' child maps.
   * Inodes without a stored number (hand-built images) get numbers above every stored one.
   */
  constructor(
    public readonly image: RafsImage,
    public readonly pipeline: ChunkPipeline,
  ) {
    for (const b of image.blobs) {
      const problem = decompressorProblem(b.compressor);
      if (problem) throw new Error(`blob ${b.blobId} uses compressor ${b.compressor}, which cannot be read: ${problem}`);
      const feature = blobFeatureProblem(b.features);
      if (feature) throw new Error(`blob ${b.blobId} cannot be read: ${feature}`);
    }
    if (image instanceof OnDemandImage) {
      // The chunk table holds each chunk the image uses once: the blobs' indexes without a walk.
      const rows: ChunkInfo[][] = image.blobs.map(() => []);
      for (const c of image.chunkRows()) rows[c.blobIndex].push(c);
      this.blobs = image.blobs.map((b, i) => BlobChunks.fromChunks(b, rows[i]));
      this.entryCount = image.inodeCount;
      return;
    }
    const owner = image.explicitUidGid === false ? { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 } : undefined;
    const perBlob: ChunkInfo[][] = image.blobs.map(() => []);
    const names = new Map<Inode, number>();
    const unique: Inode[] = [];
    let entries = 0;
    let chunkCount = 0;
    const stack: Inode[] = [image.root];
    for (let n = stack.pop(); n; n = stack.pop()) {
      entries++;
      const seen = names.get(n);
      names.set(n, (seen ?? 0) + 1);
      if (seen) continue;
      unique.push(n);
      if (n.xattrs.size === 0) n.xattrs = NO_XATTRS;
      if (owner) {
        n.uid = owner.uid;
        n.gid = owner.gid;
      }
      if (n.kind === 'file') chunkCount += n.chunks?.length ?? 0;
      for (const c of n.children?.values() ?? []) stack.push(c);
    }
    // The image stays in memory as long as it is mounted: regular files become compact FileNodes
    // whose chunk records live in one typed-array table (hard links keep sharing one node).
    const table = new ChunkTable(chunkCount);
    const compact = new Map<Inode, FileNode>();
    for (let k = 0; k < unique.length; k++) {
      const n = unique[k];
      if (n.kind !== 'file') continue;
      const f = new FileNode(n, table);
      compact.set(n, f);
      unique[k] = f;
      for (const c of f.chunks) perBlob[c.blobIndex]?.push(c);
    }
    // Names are internalized (V8's weak string table): images mounted side by side, often layers of
    // one distribution, then share one copy of each name instead of one per image.
    for (const n of unique) {
      if (n.children) n.children = new Map([...n.children].map(([name, c]) => [internName(name), compact.get(c) ?? c]));
    }
    let nextIno = 1;
    for (const n of unique) if (n.ino) nextIno = Math.max(nextIno, n.ino + 1);
    for (const n of unique) if (!n.ino) n.ino = nextIno++;
    for (const [n, count] of names) if (count > 1 && n.kind !== 'dir') this.hardLinks.set(compact.get(n) ?? n, count);
    this.entryCount = entries;
    this.blobs = image.blobs.map((b, i) => BlobChunks.fromChunks(b, perBlob[i]));
  }

  /**
   * Loads a bootstrap file (or a blob carrying one in its ToC) and builds an instance over it;
   * chunk details missing from an old bootstrap come through the pipeline's sources (mount-image.ts).
   */
  static async load(bootstrapPath: string, pipeline: ChunkPipeline): Promise<RafsInstance> {
    return new RafsInstance(await loadMountImage(bootstrapPath, pipeline.sources(), pipeline.cache.workDir), pipeline);
  }

  /** The inode at an absolute path (`/`, `/etc/passwd`). */
  lookup(p: string): Inode | undefined {
    let cur: Inode | undefined = this.image.root;
    let start = 1;
    while (cur && start < p.length) {
      let end = p.indexOf('/', start);
      if (end < 0) end = p.length;
      if (end > start) cur = cur.children?.get(p.slice(start, end));
      start = end + 1;
    }
    return cur;
  }

  inodeNumber(inode: Inode): number {
    return inode.ino ?? 0;
  }

  /** Link count: names of a file, 2 + subdirectories of a directory. */
  nlink(inode: Inode): number {
    if (inode.nlink !== undefined) return inode.nlink;
    if (inode.kind !== 'dir') return this.hardLinks.get(inode) ?? 1;
    let n = 2;
    for (const c of inode.children?.values() ?? []) if (c.kind === 'dir') n++;
    return n;
  }

  /** Bytes [offset, offset+length) of a regular file, clipped to its size, in pieces (file order). */
  async read(inode: Inode, offset: number, length: number, opts: { prefetch?: boolean; path?: string } = {}): Promise<Buffer[]> {
    const end = Math.min(inode.size, offset + length);
    if (inode.kind !== 'file' || offset >= end) return [];
    const t0 = performance.now();
    try {
      const out = await this.readRange(inode, offset, end, opts.prefetch ?? false);
      if (!opts.prefetch) this.recordRead(inode, opts.path ?? '', end - offset, performance.now() - t0);
      return out;
    } catch (e) {
      if (!opts.prefetch) this.stats.readErrors++;
      throw e;
    }
  }

  /** Chunks first..last (inclusive) of a file. */
  private chunksOf(inode: Inode, first: number, last: number): ChunkInfo[] {
    if (inode.chunkSlice) return inode.chunkSlice(first, last + 1);
    return (inode.chunks ?? []).slice(first, last + 1);
  }

  private async readRange(inode: Inode, offset: number, end: number, prefetch: boolean): Promise<Buffer[]> {
    const cs = this.image.chunkSize;
    const first = Math.floor(offset / cs);
    const wanted = this.chunksOf(inode, first, Math.floor((end - 1) / cs));
    // Group by blob (a file's chunks may sit in several blobs after dedup against a chunk dict).
    const byBlob = new Map<number, number[]>();
    wanted.forEach((c, i) => {
      const l = byBlob.get(c.blobIndex) ?? [];
      l.push(i);
      byBlob.set(c.blobIndex, l);
    });
    // The part of each chunk this read covers, in chunk-relative offsets.
    const spans = wanted.map((c, i) => {
      const chunkStart = (first + i) * cs;
      return { from: Math.max(offset, chunkStart) - chunkStart, to: Math.min(end, chunkStart + c.uncompressedSize) - chunkStart };
    });
    const datas: Buffer[] = new Array(wanted.length);
    await Promise.all(
      [...byBlob].map(async ([bi, idxs]) => {
        const bc = this.blobs[bi];
        if (!bc) throw new Error(`chunk refers to blob index ${bi}, image has ${this.blobs.length} blobs`);
        const got = await this.pipeline.read(bc, idxs.map((i) => wanted[i]), { prefetch }, idxs.map((i) => spans[i]));
        idxs.forEach((i, k) => (datas[i] = got[k]));
      }),
    );
    // A READ that straddles chunks is answered with their slices, not a copy into one buffer.
    let pos = 0;
    for (const d of datas) pos += d.length;
    if (pos !== end - offset) throw new Error(`file is shorter than its size: got ${pos} of ${end - offset} bytes at ${offset}`);
    return datas;
  }

  private recordRead(inode: Inode, path: string, bytes: number, ms: number): void {
    this.stats.reads++;
    this.stats.readBytes += bytes;
    this.stats.readLatencyMsTotal += ms;
    let b = LATENCY_BUCKETS_MS.findIndex((ub) => ms <= ub);
    if (b < 0) b = LATENCY_BUCKETS_MS.length;
    this.stats.readLatencyDist[b]++;
    let a = this.access.get(inode);
    if (!a) {
      const now = Date.now();
      a = { ino: this.inodeNumber(inode), path, nrRead: 0, bytes: 0, firstSecs: Math.floor(now / 1000), firstNanos: (now % 1000) * 1_000_000, order: this.access.size };
      this.access.set(inode, a);
    }
    a.nrRead++;
    a.bytes += bytes;
  }

  /** Files read so far, in first-access order. */
  accessPattern(): FileAccess[] {
    return [...this.access.values()].sort((x, y) => x.order - y.order).map((a) => ({ ...a }));
  }

  /** Every regular file under `p` (itself if a file), depth first, hard links once. */
  filesUnder(p: string): Inode[] {
    const start = this.lookup(p);
    const out: Inode[] = [];
    const seen = new Set<Inode>();
    const visit = (n: Inode): void => {
      if (seen.has(n)) return;
      seen.add(n);
      if (n.kind === 'file') out.push(n);
      for (const c of n.children?.values() ?? []) visit(c);
    };
    if (start) visit(start);
    return out;
  }
}
