/**
 * The blob table of the bootstrap being built: blobs get an index on first reference, so a blob of
 * the chunk dict that no chunk uses never appears, and the layer's own blob appears only when it
 * holds data.
 */
import { BlobInfo } from '../format/model';

export class BlobTable {
  readonly blobs: BlobInfo[] = [];
  private readonly index = new Map<BlobInfo, number>();

  indexOf(blob: BlobInfo): number {
    let i = this.index.get(blob);
    if (i === undefined) {
      i = this.blobs.length;
      if (i >= 254) throw new Error('more than 254 blobs referenced (the RAFS v6 device index is a byte)');
      this.blobs.push(blob);
      this.index.set(blob, i);
    }
    return i;
  }
}
