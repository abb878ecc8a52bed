/**
 * The blob cache: for every blob, a sparse file of its uncompressed address space
 * (`<work_dir>/<blob_id>.blob.data`, each chunk at its `uncompressedOffset`) and a persistent chunk
 * map (`<blob_id>.blob.data.chunk_map`), the layout nydusd's filecache uses.
 *
 * Contract:
 *  - `write(chunk, data)` stores bytes the caller has already verified, then marks the chunk ready;
 *    the mark is on disk before the promise resolves, so a restarted daemon finds it.
 *  - `read(chunk)` returns the cached bytes of a ready chunk, or null; it does not verify them: the
 *    caller checks the digest, then calls `markVerified(chunk)` (so later reads in this process may
 *    skip the check) or `invalidate(chunk)` when they are wrong.
 *  - The cache never evicts: the snapshotter removes whole cache files with the image.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BlobInfo, ChunkInfo } from '../format/model';
import { PersistentChunkMap } from './chunk-map';

export interface CacheStats {
  /** Chunk reads served from the cache file. */
  hits: number;
  /** Chunk reads that had to go to a source. */
  misses: number;
  /** Uncompressed bytes served from the cache. */
  hitBytes: number;
  /** Uncompressed bytes written into the cache. */
  writtenBytes: number;
  /** Cached chunks whose bytes failed verification and were refetched. */
  corrupt: number;
}

export class BlobCacheFile {
  /** Chunks whose cached bytes this process has digest-checked (or written after checking). */
  private readonly checked: Uint8Array;
  /** Writes under way; flush and close wait for them. */
  private readonly pending = new Set<Promise<void>>();

  private constructor(
    public readonly blob: BlobInfo,
    public readonly dataPath: string,
    private readonly fh: fs.promises.FileHandle,
    public readonly map: PersistentChunkMap,
    private readonly stats: CacheStats,
  ) {
    this.checked = new Uint8Array(map.chunkCount);
  }

  static async open(workDir: string, blob: BlobInfo, stats: CacheStats): Promise<BlobCacheFile> {
    const dataPath = path.join(workDir, `${blob.blobId}.blob.data`);
    const fh = await fs.promises.open(dataPath, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    try {
      const st = await fh.stat();
      if (st.size < blob.uncompressedSize) await fh.truncate(blob.uncompressedSize);
      const map = PersistentChunkMap.open(`${dataPath}.chunk_map`, blob.chunkCount);
      return new BlobCacheFile(blob, dataPath, fh, map, stats);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  isReady(chunk: ChunkInfo): boolean {
    return this.map.isReady(chunk.index);
  }

  /** Bytes [from, to) of a ready chunk (the whole chunk by default), or null. */
  async read(chunk: ChunkInfo, from = 0, to = chunk.uncompressedSize): Promise<Buffer | null> {
    if (!this.map.isReady(chunk.index)) return null;
    const buf = Buffer.allocUnsafe(to - from);
    // In libuv's pool: after a restart or a page-cache drop the cache file is read from disk, and
    // the event loop must not wait for it (several READs' chunks are then read at once).
    const { bytesRead } = await this.fh.read(buf, 0, buf.length, chunk.uncompressedOffset + from);
    if (bytesRead !== buf.length) return null;
    return buf;
  }

  write(chunk: ChunkInfo, data: Buffer): Promise<void> {
    const p = this.writeNow(chunk, data);
    this.pending.add(p);
    const done = () => this.pending.delete(p);
    p.then(done, done);
    return p;
  }

  private async writeNow(chunk: ChunkInfo, data: Buffer): Promise<void> {
    let off = 0;
    while (off < data.length) {
      const { bytesWritten } = await this.fh.write(data, off, data.length - off, chunk.uncompressedOffset + off);
      off += bytesWritten;
    }
    this.map.setReady(chunk.index);
    this.stats.writtenBytes += data.length;
  }

  verified(chunk: ChunkInfo): boolean {
    return this.checked[chunk.index] === 1;
  }

  markVerified(chunk: ChunkInfo): void {
    if (chunk.index < this.checked.length) this.checked[chunk.index] = 1;
  }

  invalidate(chunk: ChunkInfo): void {
    if (chunk.index < this.checked.length) this.checked[chunk.index] = 0;
    this.map.clear(chunk.index);
    this.stats.corrupt++;
  }

  /** Resolves when the writes started so far have ended (written or failed). */
  async written(): Promise<void> {
    await Promise.allSettled([...this.pending]);
  }

  async flush(): Promise<void> {
    await this.written();
    await this.fh.datasync();
    this.map.flush();
  }

  async close(): Promise<void> {
    await this.flush().catch(() => undefined);
    this.map.close();
    await this.fh.close();
  }
}

/**
 * The cache files of one work_dir, opened once per blob and shared by every rafs instance that
 * uses the blob (shared-mode images often share base-layer blobs).
 */
export class BlobCacheManager {
  readonly stats: CacheStats = { hits: 0, misses: 0, hitBytes: 0, writtenBytes: 0, corrupt: 0 };
  private readonly files = new Map<string, Promise<BlobCacheFile>>();

  constructor(public readonly workDir: string) {
    fs.mkdirSync(workDir, { recursive: true });
  }

  get(blob: BlobInfo): Promise<BlobCacheFile> {
    let f = this.files.get(blob.blobId);
    if (!f) {
      f = BlobCacheFile.open(this.workDir, blob, this.stats);
      this.files.set(blob.blobId, f);
      f.catch(() => this.files.delete(blob.blobId));
    }
    return f;
  }

  async flush(): Promise<void> {
    for (const f of await Promise.allSettled(this.files.values())) if (f.status === 'fulfilled') await f.value.flush();
  }

  async close(): Promise<void> {
    const all = await Promise.allSettled(this.files.values());
    this.files.clear();
    for (const f of all) if (f.status === 'fulfilled') await f.value.close();
  }
}
