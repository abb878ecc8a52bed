/**
 * A rafs instance: one mounted image. It joins a decoded bootstrap (the tree), the blob cache and a
 * chunk pipeline, and answers the questions the FUSE layer asks: which inode is at this path, what
 * are its attributes, and what are bytes [offset, offset+length) of this file.
 *
 * Contract:
 *  - the image is immutable, so every answer about the tree is computed once at load;
 *  - `read()` returns exactly the requested bytes clipped to the file size, every one of them from a
 *    digest-verified chunk; a chunk nobody could deliver rejects with `ChunkFetchError` (EIO);
 *  - access statistics (per-file reads and first-access order) are kept for the metrics API.
 */
import * as fs from 'node:fs';
import type { ChunkInfo, Inode, RafsImage } from '../format/model';
import { decodeBootstrap } from '../format/decode';
import { BlobChunks, ChunkPipeline } from '../fetch/pipeline';
import { LATENCY_BUCKETS_MS } from '../fetch/metrics';

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
  readonly byPath = new Map<string, Inode>();
  readonly pathOf = new Map<Inode, string>();
  readonly nlink = new Map<Inode, number>();
  readonly blobs: BlobChunks[];
  readonly stats: FsStats = { reads: 0, readBytes: 0, readErrors: 0, readLatencyMsTotal: 0, readLatencyDist: new Array(LATENCY_BUCKETS_MS.length + 1).fill(0), opens: 0 };
  private readonly access = new Map<Inode, FileAccess>();
  private nextIno = 1;
  private readonly inos = new Map<Inode, number>();
  readonly fileCount: number;

  constructor(
    public readonly image: RafsImage,
    public readonly pipeline: ChunkPipeline,
  ) {
    const perBlob: ChunkInfo[][] = image.blobs.map(() => []);
    let files = 0;
    // Inodes without a stored number (hand-built images) get numbers above every stored one.
    for (const inode of this.allInodes()) if (inode.ino) this.nextIno = Math.max(this.nextIno, inode.ino + 1);
    const visit = (inode: Inode, p: string): void => {
      const seen = this.nlink.has(inode);
      this.nlink.set(inode, (this.nlink.get(inode) ?? 0) + 1);
      this.byPath.set(p, inode);
      if (seen) return;
      this.pathOf.set(inode, p);
      if (!this.inos.has(inode)) this.inos.set(inode, inode.ino || this.nextIno++);
      if (inode.kind === 'file') {
        files++;
        for (const c of inode.chunks ?? []) perBlob[c.blobIndex]?.push(c);
      }
      if (inode.kind === 'dir') {
        let subdirs = 0;
        for (const [name, child] of inode.children ?? []) {
          if (child.kind === 'dir') subdirs++;
          visit(child, p === '/' ? `/${name}` : `${p}/${name}`);
        }
        this.nlink.set(inode, 2 + subdirs);
      }
    };
    visit(image.root, '/');
    this.fileCount = files;
    this.blobs = image.blobs.map((b, i) => BlobChunks.fromChunks(b, perBlob[i]));
  }

  private *allInodes(): Generator<Inode> {
    const stack: Inode[] = [this.image.root];
    const seen = new Set<Inode>();
    for (let n = stack.pop(); n; n = stack.pop()) {
      if (seen.has(n)) continue;
      seen.add(n);
      yield n;
      for (const c of n.children?.values() ?? []) stack.push(c);
    }
  }

  /** Loads a bootstrap file and builds an instance over it. */
  static load(bootstrapPath: string, pipeline: ChunkPipeline): RafsInstance {
    return new RafsInstance(decodeBootstrap(fs.readFileSync(bootstrapPath)), pipeline);
  }

  lookup(p: string): Inode | undefined {
    return this.byPath.get(p);
  }

  inodeNumber(inode: Inode): number {
    return this.inos.get(inode) ?? 0;
  }

  /** Bytes [offset, offset+length) of a regular file, clipped to its size. */
  async read(inode: Inode, offset: number, length: number, opts: { prefetch?: boolean } = {}): Promise<Buffer> {
    const end = Math.min(inode.size, offset + length);
    if (inode.kind !== 'file' || offset >= end) return Buffer.alloc(0);
    const t0 = performance.now();
    try {
      const out = await this.readRange(inode, offset, end, opts.prefetch ?? false);
      if (!opts.prefetch) this.recordRead(inode, out.length, performance.now() - t0);
      return out;
    } catch (e) {
      if (!opts.prefetch) this.stats.readErrors++;
      throw e;
    }
  }

  private async readRange(inode: Inode, offset: number, end: number, prefetch: boolean): Promise<Buffer> {
    const cs = this.image.chunkSize;
    const chunks = inode.chunks ?? [];
    const first = Math.floor(offset / cs);
    const last = Math.min(chunks.length - 1, Math.floor((end - 1) / cs));
    const wanted = chunks.slice(first, last + 1);
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
    if (datas.length === 1 && datas[0].length === end - offset) return datas[0];
    const out = Buffer.allocUnsafe(end - offset);
    let pos = 0;
    for (const d of datas) pos += d.copy(out, pos);
    if (pos !== out.length) throw new Error(`file is shorter than its size: got ${pos} of ${out.length} bytes at ${offset}`);
    return out;
  }

  private recordRead(inode: Inode, bytes: number, ms: number): void {
    this.stats.reads++;
    this.stats.readBytes += bytes;
    this.stats.readLatencyMsTotal += ms;
    let b = LATENCY_BUCKETS_MS.findIndex((ub) => ms <= ub);
    if (b < 0) b = LATENCY_BUCKETS_MS.length;
    this.stats.readLatencyDist[b]++;
    let a = this.access.get(inode);
    if (!a) {
      const now = Date.now();
      a = { ino: this.inodeNumber(inode), path: this.pathOf.get(inode) ?? '', nrRead: 0, bytes: 0, firstSecs: Math.floor(now / 1000), firstNanos: (now % 1000) * 1_000_000, order: this.access.size };
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
