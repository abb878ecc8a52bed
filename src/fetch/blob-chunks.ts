/**
 * A blob plus all the chunks an image references in it, in compressed-offset order: what read
 * amplification walks along and what the peer server looks ranges up in. Duplicate references
 * (the same chunk index twice) collapse to one entry.
 */
import type { BlobInfo, ChunkInfo } from '../format/model';

export class BlobChunks {
  /** Position in `ordered` of each chunk index. */
  private readonly pos: Int32Array;

  constructor(
    public readonly blob: BlobInfo,
    public readonly ordered: ChunkInfo[],
  ) {
    let n = blob.chunkCount;
    for (const c of ordered) if (c.index >= n) n = c.index + 1;
    this.pos = new Int32Array(n).fill(-1);
    ordered.forEach((c, i) => (this.pos[c.index] = i));
  }

  /** Builds the table from every chunk the image references in this blob (duplicates collapse). */
  static fromChunks(blob: BlobInfo, chunks: ChunkInfo[]): BlobChunks {
    // A builder appends chunks to a blob as it numbers them, and a chunk table lists each once in
    // index order: then the rows are already the answer (one pass, no map, no sort at mount).
    let inOrder = true;
    for (let i = 1; i < chunks.length && inOrder; i++) {
      inOrder = chunks[i].index > chunks[i - 1].index && chunks[i].compressedOffset >= chunks[i - 1].compressedOffset;
    }
    if (inOrder) return new BlobChunks(blob, chunks);
    const byIndex = new Map<number, ChunkInfo>();
    for (const c of chunks) if (!byIndex.has(c.index)) byIndex.set(c.index, c);
    const ordered = [...byIndex.values()].sort((a, b) => a.compressedOffset - b.compressedOffset);
    return new BlobChunks(blob, ordered);
  }

  position(chunk: ChunkInfo): number {
    return chunk.index < this.pos.length ? this.pos[chunk.index] : -1;
  }
}
