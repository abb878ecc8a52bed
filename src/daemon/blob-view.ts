/**
 * The blob view: a small FUSE mount of its own per daemon holding one read-only file per blob,
 * named by blob id, whose bytes are the blob's uncompressed address space (where RAFS v6 chunk
 * indexes point). The kernel's EROFS mounts a bootstrap with these files as its devices
 * (erofs-mount.ts): lookups, stats, listings and cached pages then stay in the kernel, and only first
 * reads of data arrive here, as large sequential READs.
 *
 * Contract:
 *  - `add(owner, blob, pipeline)` puts the blob in the view (or adds an owner to it) and returns the
 *    file's path; `remove(owner)` drops the owner's blobs whose last owner it was;
 *  - a READ returns exactly the bytes asked for, clipped to the file size: chunk bytes come from
 *    an owner's `ChunkPipeline` (cache, mirrors, P2P, digest verification), bytes no chunk covers
 *    (alignment padding) are zeros; a chunk no source delivered answers EIO, never unverified bytes;
 *    the answer is the chunks' own buffers in pieces (one writev), not a copy;
 *  - files are opened with FOPEN_DIRECT_IO: the EROFS mount above caches the image's pages, so the
 *    blob file's own page cache would hold every byte a second time;
 *  - READs may be as large as the kernel's fuse max_pages_limit allows (1 MiB by default), several
 *    in flight at once (FUSE_ASYNC_DIO);
 *  - INTERRUPTs are not answered: a signal to the reader (runc's exec gets some) would otherwise
 *    end a READ with EINTR, which EROFS keeps as an I/O error of that page;
 *  - names not in the view are not cached negatively (a blob may be added a moment later).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ChunkInfo } from '../format/model';
import { BlobChunks, ChunkPipeline, ChunkSpan } from '../fetch/pipeline';
import { Fopen, Init } from '../fuse/abi';
import { Attr, DirEntry, Entry, errno, FuseError, FuseFs, FuseSession, ReadReply, SessionOptions, Statfs } from '../fuse/session';
import { cleanStaleMount } from './mounts';
import { logger } from '../util/log';

const log = logger('blob-view');

const ROOT = 1;
/** Attributes and entries are re-checked every second: the directory changes as images come and go. */
const CACHE_TIMEOUT_S = 1;
const FUSE_MAX_PAGES_LIMIT = '/proc/sys/fs/fuse/max_pages_limit';
/** Read-only zeros for the bytes no chunk covers (never written: pieces of it go to /dev/fuse). */
const ZEROS = Buffer.alloc(64 * 1024);

/** The largest READ the kernel lets a FUSE server negotiate, in pages (256 before Linux 6.13's sysctl). */
function maxPagesLimit(): number {
  try {
    const n = Number(fs.readFileSync(FUSE_MAX_PAGES_LIMIT, 'utf8').trim());
    return Number.isInteger(n) && n >= 32 ? Math.min(n, 65535) : 256;
  } catch {
    return 256;
  }
}

/** The kernel-facing settings of a blob view's FUSE session (the benchmark's transport floor uses them too). */
export function blobViewSession(): Omit<SessionOptions, 'mountpoint' | 'onActivity'> {
  return {
    source: 'nydus-blobs',
    subtype: 'nydus-blobs',
    cacheTimeoutS: CACHE_TIMEOUT_S,
    maxPages: maxPagesLimit(),
    openFlags: Fopen.DIRECT_IO,
    // Direct reads of one request may then be in flight together (EROFS submits them async).
    extraInit: Init.ASYNC_DIO,
    // A signal to the reading task must not fail the read: EROFS would keep the page as EIO.
    ignoreInterrupts: true,
    readers: { kind: 'auto', count: 2 },
    // Only root reads blob bytes (the files are 0400 root); the kernel's EROFS reads them with the
    // credentials of whatever task faults a page in, hence allow_other.
    mountOptions: ['ro', 'allow_other', 'default_permissions'],
  };
}

interface Owner {
  chunks: BlobChunks;
  pipeline: ChunkPipeline;
}

interface ViewFile {
  blobId: string;
  nodeid: number;
  size: number;
  owners: Map<object, Owner>;
  /** Every chunk any owner references, by uncompressed offset (one per chunk index). */
  chunks: ChunkInfo[];
  starts: Float64Array;
}

/** A READ not answered yet (GET /api/v1/metrics/inflight). */
export interface ViewRead {
  nodeid: number;
  blobId: string;
  offset: number;
  size: number;
  startedMs: number;
}

export class BlobView implements FuseFs {
  private session?: FuseSession;
  private starting?: Promise<void>;
  private readonly files = new Map<string, ViewFile>();
  private readonly byNode = new Map<number, ViewFile>();
  /** Node ids stay with a blob id for the daemon's lifetime, so a re-added blob is the same file. */
  private readonly nodeIds = new Map<string, number>();
  private nextNode = ROOT + 1;
  private changedAt = Math.floor(Date.now() / 1000);
  private readCounter = 0;
  readonly inflight = new Map<number, ViewRead>();
  /** READs served and bytes returned, for metrics and tests. */
  readonly stats = { reads: 0, bytes: 0, errors: 0 };

  constructor(
    public readonly dir: string,
    private readonly onActivity: () => void = () => undefined,
  ) {}

  get fuseSession(): FuseSession | undefined {
    return this.session;
  }

  /** Mounts the view (once, also when called concurrently); a dead view left by a killed daemon is detached first. */
  start(): Promise<void> {
    this.starting ??= this.mount().catch((e: Error) => {
      this.starting = undefined;
      throw e;
    });
    return this.starting;
  }

  private async mount(): Promise<void> {
    if (cleanStaleMount(this.dir) === 'live') throw new Error(`${this.dir}: something is already mounted there (another nydusd's blob view?)`);
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const s = new FuseSession(this, { ...blobViewSession(), mountpoint: this.dir, onActivity: this.onActivity });
    await s.mount();
    this.session = s;
    log.info({ dir: this.dir, maxPages: s.negotiated?.maxPages }, 'blob view mounted');
  }

  async stop(): Promise<void> {
    const s = this.session;
    this.session = undefined;
    this.starting = undefined;
    await s?.unmount();
    try {
      if (s) fs.rmdirSync(this.dir); // empty once unmounted; never recurse into a mount that stayed
    } catch (e) {
      log.warn({ dir: this.dir, err: (e as Error).message }, 'blob view directory left behind');
    }

  }

  /** Adds `owner`'s use of a blob and returns the path of its file. */
  add(owner: object, chunks: BlobChunks, pipeline: ChunkPipeline): string {
    const id = chunks.blob.blobId;
    let f = this.files.get(id);
    if (!f) {
      let nodeid = this.nodeIds.get(id);
      if (nodeid === undefined) {
        nodeid = this.nextNode++;
        this.nodeIds.set(id, nodeid);
      }
      f = { blobId: id, nodeid, size: chunks.blob.uncompressedSize, owners: new Map(), chunks: [], starts: new Float64Array(0) };
      this.files.set(id, f);
      this.byNode.set(nodeid, f);
      this.changedAt = Math.floor(Date.now() / 1000);
    }
    f.owners.set(owner, { chunks, pipeline });
    this.index(f);
    return this.pathOf(id);
  }

  /** Drops every blob use of `owner`. */
  remove(owner: object): void {
    for (const f of [...this.files.values()]) {
      if (!f.owners.delete(owner)) continue;
      if (f.owners.size === 0) {
        this.files.delete(f.blobId);
        this.byNode.delete(f.nodeid);
        this.changedAt = Math.floor(Date.now() / 1000);
      } else {
        this.index(f);
      }
    }
  }

  pathOf(blobId: string): string {
    return path.join(this.dir, blobId);
  }

  /** Blob ids in the view now. */
  blobIds(): string[] {
    return [...this.files.keys()];
  }

  /** The union of the owners' chunks, sorted by uncompressed offset, for the READ lookup. */
  private index(f: ViewFile): void {
    const byIndex = new Map<number, ChunkInfo>();
    for (const o of f.owners.values()) for (const c of o.chunks.ordered) if (!byIndex.has(c.index)) byIndex.set(c.index, c);
    f.chunks = [...byIndex.values()].sort((a, b) => a.uncompressedOffset - b.uncompressedOffset);
    f.starts = Float64Array.from(f.chunks, (c) => c.uncompressedOffset);
    for (const c of f.chunks) f.size = Math.max(f.size, c.uncompressedOffset + c.uncompressedSize);
  }

  // ---------------------------------------------------------------------------------- FuseFs

  private attr(nodeid: number): Attr {
    if (nodeid === ROOT) return { ino: ROOT, size: 0, blocks: 0, mtime: this.changedAt, mtimensec: 0, mode: 0o040500, nlink: 2, uid: 0, gid: 0, rdev: 0, blksize: 4096 };
    const f = this.file(nodeid);
    return { ino: nodeid, size: f.size, blocks: Math.ceil(f.size / 512), mtime: this.changedAt, mtimensec: 0, mode: 0o100400, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 1 << 20 };
  }

  private file(nodeid: number): ViewFile {
    const f = this.byNode.get(nodeid);
    if (!f) throw new FuseError(errno.ENOENT, `blob view node ${nodeid} is gone`);
    return f;
  }

  lookup(parent: number, name: string): Entry | undefined {
    if (parent !== ROOT) throw new FuseError(errno.ENOTDIR);
    if (name === '.' || name === '..') return { nodeid: ROOT, attr: this.attr(ROOT) };
    const f = this.files.get(name);
    // ENOENT rather than a cached negative entry: the blob may be added later.
    if (!f) throw new FuseError(errno.ENOENT);
    return { nodeid: f.nodeid, attr: this.attr(f.nodeid) };
  }

  forget(): void {
    // Node ids are kept per blob id, not per lookup: nothing to drop.
  }

  getattr(nodeid: number): Attr {
    return this.attr(nodeid);
  }

  readlink(): Buffer {
    throw new FuseError(errno.EINVAL);
  }

  open(nodeid: number): number {
    if (nodeid === ROOT) throw new FuseError(errno.EISDIR);
    this.file(nodeid);
    return nodeid;
  }

  release(): void {
    // No per-open state.
  }

  opendir(nodeid: number): number {
    if (nodeid !== ROOT) throw new FuseError(errno.ENOTDIR);
    return ROOT;
  }

  readdir(): readonly DirEntry[] {
    return [
      { name: '.', ino: ROOT, type: 4 },
      { name: '..', ino: ROOT, type: 4 },
      ...[...this.files.values()].map((f) => ({ name: f.blobId, ino: f.nodeid, type: 8 })),
    ];
  }

  releasedir(): void {
    // No per-open state.
  }

  statfs(): Statfs {
    let bytes = 0;
    for (const f of this.files.values()) bytes += f.size;
    return { blocks: Math.ceil(bytes / 4096), files: this.files.size + 1, bsize: 4096, namelen: 255 };
  }

  getxattr(): Buffer {
    throw new FuseError(errno.ENODATA);
  }

  listxattr(): Buffer {
    return Buffer.alloc(0);
  }

  access(): void {
    // default_permissions: the kernel checks modes itself.
  }

  async read(nodeid: number, _fh: number, offset: number, size: number): Promise<ReadReply> {
    const f = this.byNode.get(nodeid);
    if (!f) {
      log.warn({ nodeid, offset, size }, 'READ of a blob no longer in the view');
      throw new FuseError(errno.ENOENT);
    }
    log.debug({ blob: f.blobId, offset, size }, 'blob view READ');
    const end = Math.min(f.size, offset + size);
    if (offset >= end) return Buffer.alloc(0);
    const n = ++this.readCounter;
    this.inflight.set(n, { nodeid, blobId: f.blobId, offset, size, startedMs: Date.now() });
    try {
      const out = await this.readRange(f, offset, end);
      this.stats.reads++;
      this.stats.bytes += end - offset;
      return out;
    } catch (e) {
      this.stats.errors++;
      log.warn({ blob: f.blobId, offset, size, err: (e as Error).message }, 'blob view read failed');
      throw new FuseError(errno.EIO, (e as Error).message);
    } finally {
      this.inflight.delete(n);
    }
  }

  /**
   * Bytes [offset, end) of the blob's uncompressed space, in pieces: chunk bytes where chunks are
   * (slices of the pipeline's buffers), zeros elsewhere.
   */
  private async readRange(f: ViewFile, offset: number, end: number): Promise<Buffer[]> {
    // The first chunk that may overlap: the last one starting at or before `offset`.
    let lo = 0;
    let hi = f.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (f.starts[mid] <= offset) lo = mid + 1;
      else hi = mid;
    }
    // Chunks grouped by the owner that reads them (the first owner that knows the chunk); `at` is
    // each chunk's piece's place in the answer.
    const groups = new Map<Owner, { chunks: ChunkInfo[]; spans: ChunkSpan[]; at: number[] }>();
    const pieces: Buffer[] = [];
    let pos = offset;
    for (let k = Math.max(0, lo - 1); k < f.chunks.length && f.starts[k] < end; k++) {
      const c = f.chunks[k];
      const from = Math.max(pos, c.uncompressedOffset);
      const to = Math.min(end, c.uncompressedOffset + c.uncompressedSize);
      if (from >= to) continue;
      let owner: Owner | undefined;
      for (const o of f.owners.values()) {
        if (o.chunks.position(c) >= 0) {
          owner = o;
          break;
        }
      }
      if (!owner) throw new Error(`chunk ${c.index} of blob ${f.blobId} has no owner`);
      zeros(pieces, from - pos);
      let g = groups.get(owner);
      if (!g) groups.set(owner, (g = { chunks: [], spans: [], at: [] }));
      g.chunks.push(c);
      g.spans.push({ from: from - c.uncompressedOffset, to: to - c.uncompressedOffset });
      g.at.push(pieces.length);
      pieces.push(ZEROS.subarray(0, 0)); // its place; filled below
      pos = to;
    }
    zeros(pieces, end - pos);
    await Promise.all(
      [...groups].map(async ([o, g]) => {
        const got = await o.pipeline.read(o.chunks, g.chunks, {}, g.spans);
        got.forEach((b, i) => (pieces[g.at[i]] = b));
      }),
    );
    return pieces;
  }
}

/** Appends `n` zero bytes as pieces of ZEROS. */
function zeros(pieces: Buffer[], n: number): void {
  for (; n > 0; n -= ZEROS.length) pieces.push(ZEROS.subarray(0, Math.min(n, ZEROS.length)));
}
