/**
 * The chunk info table of a RAFS v6 bootstrap as nydusd keeps it while an image is mounted: every
 * row checked once against the blob table (`readChunkTable`), then found by key (`chunkKey`: blob
 * index and chunk index) by halving two sorted arrays, each row read from the bootstrap (or, after
 * `ChunkRows.detach`, from a copy of the table alone) on access. Contract: `readChunkTable` throws
 * FormatError naming the row's offset for a row outside its blob, a blob index not in the table, or
 * two different rows for one chunk; rows it returns need no further checks.
 */
import { BlobInfo, ChunkInfo, FormatError } from './model';
import * as L from './layout';
import { u53, u64 } from './bytes';

export function chunkKey(blobIndex: number, index: number): number {
  return blobIndex * L.MAX_CHUNK_INDEX + index;
}

export function readChunkTable(buf: Buffer, off: number, size: number, blobs: BlobInfo[]): ChunkRows {
  const n = size / L.CHUNK_INFO_SIZE;
  const keys = new Float64Array(n);
  const rows: ChunkRow[] = new Array(n);
  let ascending = true;
  for (let i = 0; i < n; i++) {
    const r = off + i * L.CHUNK_INFO_SIZE;
    const where = (): string => `chunk info @${r}`;
    // The offsets first: the row's getters read them without this check.
    const uOff = u64(buf, r + L.CHUNK.uncompressedOffset, 'chunk info');
    const cOff = u64(buf, r + L.CHUNK.compressedOffset, 'chunk info');
    const c = new ChunkRow(buf, r);
    const blobIndex = c.blobIndex;
    const uSize = c.uncompressedSize;
    const cSize = c.compressedSize;
    const blob = blobs[blobIndex];
    if (!blob) throw new FormatError(`blob index ${blobIndex} not in the blob table`, where());
    if (c.index >= L.MAX_CHUNK_INDEX) throw new FormatError(`chunk index ${c.index} exceeds 24 bits`, where());
    if (uOff % L.BLOCK_SIZE !== 0 || uOff + uSize > blob.uncompressedSize) {
      throw new FormatError(`uncompressed range ${uOff}+${uSize} outside blob ${blobIndex}`, where());
    }
    if (cOff + cSize > blob.compressedSize) {
      throw new FormatError(`compressed range ${cOff}+${cSize} outside blob ${blobIndex}`, where());
    }
    keys[i] = chunkKey(blobIndex, c.index);
    rows[i] = c;
    if (i > 0 && keys[i] <= keys[i - 1]) ascending = false;
  }
  // Builders write the rows in key order, each once: then there is nothing to sort or collapse.
  if (ascending) return new ChunkRows(keys, rows, buf, off, size);
  const order = Array.from(rows.keys()).sort((a, b) => keys[a] - keys[b] || a - b);
  const uniqueKeys: number[] = [];
  const unique: ChunkRow[] = [];
  let conflict = -1;
  for (const i of order) {
    const last = unique.length - 1;
    if (last < 0 || uniqueKeys[last] !== keys[i]) {
      uniqueKeys.push(keys[i]);
      unique.push(rows[i]);
    } else if (!sameRow(buf, unique[last], rows[i]) && (conflict < 0 || i < conflict)) {
      // The same chunk twice must be the same row; the first row (in table order) that differs is named.
      conflict = i;
    }
  }
  if (conflict >= 0) {
    const c = rows[conflict];
    throw new FormatError(`two different rows for chunk ${c.index} of blob ${c.blobIndex}`, `chunk info @${c.at}`);
  }
  return new ChunkRows(Float64Array.from(uniqueKeys), unique, buf, off, size);
}

function sameRow(buf: Buffer, a: ChunkRow, b: ChunkRow): boolean {
  return buf.compare(buf, a.at + L.CHUNK.digest, a.at + L.CHUNK.digest + 32, b.at + L.CHUNK.digest, b.at + L.CHUNK.digest + 32) === 0 &&
    a.uncompressedOffset === b.uncompressedOffset && a.compressedOffset === b.compressedOffset && a.compressedSize === b.compressedSize &&
    a.uncompressedSize === b.uncompressedSize && a.flags === b.flags;
}

/**
 * The chunk table's rows by key (`chunkKey`), held in two arrays sorted by key and searched by
 * halving: a mounted image keeps them as long as it is mounted, and a Map costs several times the
 * memory per row. The rows read the bootstrap until `detach` moves them to a copy of the table.
 */
export class ChunkRows {
  private readonly keys: Float64Array;
  private readonly rows: ChunkRow[];

  /** Where the rows read now, until `detach`. */
  private table?: { buf: Buffer; off: number; size: number };

  /** `keys` ascending, each once; `rows[i]` is the row of `keys[i]`. */
  constructor(keys: Float64Array, rows: ChunkRow[], buf: Buffer, off: number, size: number) {
    this.keys = keys;
    this.rows = rows;
    this.table = { buf, off, size };
  }

  /** Moves every row to a copy of the table, so that the bootstrap around it can go. */
  detach(): void {
    if (!this.table) return;
    const { buf, off, size } = this.table;
    const copy = Buffer.from(buf.subarray(off, off + size));
    for (const r of this.rows) r.moveTo(copy, r.at - off);
    this.table = undefined;
  }

  get(key: number): ChunkInfo | undefined {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    return this.keys[lo] === key ? this.rows[lo] : undefined;
  }

  values(): IterableIterator<ChunkInfo> {
    return this.rows.values();
  }
}

/**
 * One row of the chunk info table, read from the bootstrap (or, once `ChunkRows.detach` has moved
 * it, from a copy of the table) on each access: two fields per row, as a mounted image keeps one
 * per chunk for as long as it is mounted. `readChunkTable` has checked every field before a row is
 * handed out, so the getters read without checking again. The digest is a view, not a copy; the
 * decoded tree gets plain copies.
 */
class ChunkRow implements ChunkInfo {
  constructor(
    private buf: Buffer,
    public at: number,
  ) {}

  moveTo(buf: Buffer, at: number): void {
    this.buf = buf;
    this.at = at;
  }

  get digest(): Buffer {
    return this.buf.subarray(this.at + L.CHUNK.digest, this.at + L.CHUNK.digest + 32);
  }
  get blobIndex(): number {
    return this.buf.readUInt32LE(this.at + L.CHUNK.blobIndex);
  }
  get index(): number {
    return this.buf.readUInt32LE(this.at + L.CHUNK.index);
  }
  get flags(): number {
    return this.buf.readUInt32LE(this.at + L.CHUNK.flags);
  }
  get compressedOffset(): number {
    return u53(this.buf, this.at + L.CHUNK.compressedOffset);
  }
  get compressedSize(): number {
    return this.buf.readUInt32LE(this.at + L.CHUNK.compressedSize);
  }
  get uncompressedOffset(): number {
    return u53(this.buf, this.at + L.CHUNK.uncompressedOffset);
  }
  get uncompressedSize(): number {
    return this.buf.readUInt32LE(this.at + L.CHUNK.uncompressedSize);
  }
}
