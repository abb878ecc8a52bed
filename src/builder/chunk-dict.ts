/**
 * A chunk dictionary: the chunks of earlier bootstraps, looked up by digest and uncompressed size
 * (the key upstream uses), so a new layer references them instead of storing them again.
 */
import { BlobInfo, ChunkInfo, Digester, RafsImage } from '../format/model';

export interface DictEntry {
  blob: BlobInfo;
  chunk: ChunkInfo;
}

export function chunkKey(digest: Buffer, size: number): string {
  return `${digest.toString('hex')}:${size}`;
}

export class ChunkDict {
  private readonly entries = new Map<string, DictEntry>();

  /** Indexes every chunk of `image` whose blob uses `digester` (digests of others are not comparable). */
  constructor(image: RafsImage, digester: Digester) {
    const seen = new Set<ChunkInfo>();
    const visit = (inode: RafsImage['root']): void => {
      if (inode.kind === 'dir') for (const child of inode.children!.values()) visit(child);
      if (inode.kind !== 'file') return;
      for (const chunk of inode.chunks!) {
        if (seen.has(chunk)) continue;
        seen.add(chunk);
        const blob = image.blobs[chunk.blobIndex];
        if (!blob || blob.digester !== digester) continue;
        const key = chunkKey(chunk.digest, chunk.uncompressedSize);
        if (!this.entries.has(key)) this.entries.set(key, { blob, chunk });
      }
    };
    visit(image.root);
  }

  get size(): number {
    return this.entries.size;
  }

  lookup(digest: Buffer, size: number): DictEntry | undefined {
    return this.entries.get(chunkKey(digest, size));
  }
}
