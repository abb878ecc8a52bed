/**
 * Background prefetch after mount, as nydusd does it:
 *  1. the files of the prefetch list (the API's `prefetch_files`, else the image's prefetch table;
 *     directories mean their whole subtree), in list order;
 *  2. then, when the table is exactly ["/"] or `prefetch_all` is set, every chunk of every blob in
 *     blob order — unless the list named "/" among other entries (upstream's "root found" rule).
 * Chunks are merged into requests of up to `merging_size`, run by `threads_count` workers, and
 * paced to `bandwidth_rate` bytes/s over all workers. Already cached chunks are skipped. Errors are
 * logged, never fatal: a later on-demand read will try again.
 */
import { OnDemandImage } from '../format/decode';
import type { ChunkInfo, Inode } from '../format/model';
import { BlobChunks } from '../fetch/pipeline';
import type { PrefetchConfig } from './config';
import type { RafsInstance } from './rafs';
import { logger } from '../util/log';

const log = logger('prefetch');

interface Batch {
  bc: BlobChunks;
  chunks: ChunkInfo[];
  bytes: number;
}

export interface PrefetchProgress {
  beginMs: number;
  endMs: number;
  bytes: number;
  batches: number;
  errors: number;
}

export class Prefetcher {
  readonly progress: PrefetchProgress = { beginMs: 0, endMs: 0, bytes: 0, batches: 0, errors: 0 };
  private readonly abort = new AbortController();
  private done?: Promise<void>;

  constructor(
    private readonly rafs: RafsInstance,
    private readonly cfg: PrefetchConfig,
    private readonly files?: string[],
  ) {}

  start(): void {
    if (!this.cfg.enable || this.done) return;
    this.done = this.run().catch((e) => log.warn({ err: (e as Error).message }, 'prefetch stopped'));
  }

  /** Stops issuing requests and waits for the ones in flight. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }

  /** Resolves when prefetch has finished (or immediately when it is disabled). */
  finished(): Promise<void> {
    return this.done ?? Promise.resolve();
  }

  private batches(): Batch[] {
    // The image's own table on an image decoded on demand is read by nid: naming its entries would
    // decode most directories of the tree first (a walk that cost a quarter of a second of a cold
    // start while the container's first reads waited). A table of regular files names no "/".
    const image = this.rafs.image;
    const direct = !this.files && image instanceof OnDemandImage ? image.prefetchFiles() : undefined;
    const list = direct ? [] : (this.files ?? image.prefetch);
    const inlayAll = list.length === 1 && list[0] === '/';
    const rootAmongOthers = list.length > 1 && list.includes('/');
    const seen = new Set<string>();
    const chunksByBlob = new Map<number, ChunkInfo[]>();
    const batches: Batch[] = [];
    const flush = () => {
      for (const [bi, cs] of chunksByBlob) batches.push(...this.split(this.rafs.blobs[bi], cs));
      chunksByBlob.clear();
    };
    if (!inlayAll) {
      for (const f of direct ?? list.flatMap((p) => this.rafs.filesUnder(p))) {
        for (const c of f.chunks ?? []) {
          const key = `${c.blobIndex}:${c.index}`;
          if (seen.has(key)) continue;
          seen.add(key);
          const l = chunksByBlob.get(c.blobIndex) ?? [];
          l.push(c);
          chunksByBlob.set(c.blobIndex, l);
        }
      }
      flush();
    }
    if ((inlayAll || this.cfg.prefetchAll) && !rootAmongOthers) {
      this.rafs.blobs.forEach((bc) => batches.push(...this.split(bc, bc.ordered.filter((c) => !seen.has(`${c.blobIndex}:${c.index}`)))));
    }
    return batches;
  }

  /** Chunks of one blob in compressed order, cut into batches of at most merging_size bytes. */
  private split(bc: BlobChunks, chunks: ChunkInfo[]): Batch[] {
    const limit = Math.max(this.cfg.mergingSize, 1);
    const sorted = [...chunks].sort((a, b) => a.compressedOffset - b.compressedOffset);
    const out: Batch[] = [];
    let cur: Batch | undefined;
    for (const c of sorted) {
      if (!cur || cur.bytes + c.compressedSize > limit) {
        cur = { bc, chunks: [], bytes: 0 };
        out.push(cur);
      }
      cur.chunks.push(c);
      cur.bytes += c.compressedSize;
    }
    return out;
  }

  private async run(): Promise<void> {
    const all = this.batches();
    this.progress.beginMs = Date.now();
    const rate = this.cfg.bandwidthRate > 0 ? Math.max(this.cfg.bandwidthRate, this.rafs.image.chunkSize) : 0;
    let nextSlot = performance.now();
    let i = 0;
    const worker = async () => {
      while (i < all.length && !this.abort.signal.aborted) {
        const b = all[i++];
        const cf = await this.rafs.pipeline.cache.get(b.bc.blob);
        const todo = b.chunks.filter((c) => !cf.isReady(c));
        if (todo.length === 0) continue;
        const bytes = todo.reduce((s, c) => s + c.compressedSize, 0);
        if (rate > 0) {
          // Token bucket over all workers: each batch reserves its share of the timeline.
          const now = performance.now();
          const wait = Math.max(0, nextSlot - now);
          nextSlot = Math.max(nextSlot, now) + (bytes / rate) * 1000;
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          if (this.abort.signal.aborted) return;
        }
        try {
          await this.rafs.pipeline.read(b.bc, todo, { prefetch: true, signal: this.abort.signal, noAmplify: true, maxRangeBytes: Math.max(this.cfg.mergingSize, 1) });
          this.progress.bytes += bytes;
          this.progress.batches++;
        } catch (e) {
          this.progress.errors++;
          log.warn({ blob: b.bc.blob.blobId, err: (e as Error).message }, 'prefetch batch failed');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.cfg.threadsCount) }, worker));
    // A read resolves once its bytes are verified, before they reach the cache file; prefetch has
    // ended (prefetch_end_time_millis) only when what it fetched is in the cache.
    for (const blob of new Set(all.map((b) => b.bc.blob))) await (await this.rafs.pipeline.cache.get(blob)).written();
    this.progress.endMs = Date.now();
    log.info({ bytes: this.progress.bytes, batches: this.progress.batches, errors: this.progress.errors, ms: this.progress.endMs - this.progress.beginMs }, 'prefetch finished');
  }
}
