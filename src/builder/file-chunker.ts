/**
 * Cuts one file's data, arriving in pieces of any size, into fixed-size chunks (the last one
 * shorter) and hands each to the blob writer with the file's prefetch rank (hot-files.ts; -1: not
 * on the prefetch list).
 * Holds at most one chunk in memory.
 */
import { ChunkInfo } from '../format/model';
import { BlobWriter } from './blob-writer';

export class FileChunker {
  readonly chunks: ChunkInfo[] = [];
  private buf: Buffer | null = null;
  private fill = 0;
  size = 0;

  constructor(
    private readonly writer: BlobWriter,
    private readonly chunkSize: number,
    private readonly rank = 0,
  ) {}

  push(data: Buffer): void {
    this.size += data.length;
    let off = 0;
    // Whole chunks straight from the input avoid a copy.
    while (this.fill === 0 && data.length - off >= this.chunkSize) {
      this.chunks.push(this.writer.add(data.subarray(off, off + this.chunkSize), this.rank));
      off += this.chunkSize;
    }
    while (off < data.length) {
      if (!this.buf) this.buf = Buffer.allocUnsafe(this.chunkSize);
      const n = Math.min(this.chunkSize - this.fill, data.length - off);
      data.copy(this.buf, this.fill, off, off + n);
      this.fill += n;
      off += n;
      if (this.fill === this.chunkSize) this.flush();
    }
  }

  /** Pushes `n` zero bytes (holes of sparse tar entries). */
  pushZeros(n: number): void {
    const zeros = Buffer.alloc(Math.min(n, this.chunkSize));
    while (n > 0) {
      const piece = Math.min(n, zeros.length);
      this.push(zeros.subarray(0, piece));
      n -= piece;
    }
  }

  /** Emits the last partial chunk; returns the file's chunks. */
  end(): ChunkInfo[] {
    this.flush();
    return this.chunks;
  }

  private flush(): void {
    if (this.fill === 0) return;
    this.chunks.push(this.writer.add(this.buf!.subarray(0, this.fill), this.rank));
    this.fill = 0;
  }
}
