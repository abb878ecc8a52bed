/**
 * Reads chunks back from local blob files (`<blobDir>/<blobId>`, or a file named explicitly for a
 * blob id), decompresses them and verifies each chunk's digest before returning it: bytes that do
 * not verify are an error, never data. `readRaw` gives unverified blob bytes for metadata that
 * carries its own checks (blob meta).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ChunkInfo, RafsImage } from '../format/model';
import { ChunkProblem, openChunk } from '../format/digest';
import { BuildError, errorMessage } from './errors';

export class BlobReader {
  private readonly fds = new Map<number, { fd: number; size: number }>();

  constructor(
    private readonly image: RafsImage,
    private readonly blobDir: string | undefined,
    /** blob id -> file, for blobs not named by their id (a blob that carries its own bootstrap). */
    private readonly files: ReadonlyMap<string, string> = new Map(),
  ) {}

  /** Bytes [offset, offset + length) of blob `blobIndex`'s file, as stored. */
  readRaw(blobIndex: number, offset: number, length: number): Buffer {
    const blob = this.image.blobs[blobIndex];
    if (!blob) throw new BuildError(`blob index ${blobIndex}`, 'not in the blob table');
    const { fd, size } = this.open(blobIndex, blob.blobId);
    if (offset + length > size) throw new BuildError(`blob ${blob.blobId}`, `range ${offset}+${length} ends beyond the blob file (${size} bytes)`);
    const raw = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const n = fs.readSync(fd, raw, got, length - got, offset + got);
      if (n === 0) throw new BuildError(`blob ${blob.blobId}`, 'blob file is truncated');
      got += n;
    }
    return raw;
  }

  /** The verified uncompressed bytes of `chunk`. */
  read(chunk: ChunkInfo): Buffer {
    const blob = this.image.blobs[chunk.blobIndex];
    if (!blob) throw new BuildError(`chunk #${chunk.index}`, `blob index ${chunk.blobIndex} is not in the blob table`);
    const where = `blob ${blob.blobId} chunk #${chunk.index} at offset ${chunk.compressedOffset}`;
    const { size } = this.open(chunk.blobIndex, blob.blobId);
    if (chunk.compressedOffset + chunk.compressedSize > size) throw new BuildError(where, `chunk ends beyond the blob file (${size} bytes)`);
    const raw = this.readRaw(chunk.blobIndex, chunk.compressedOffset, chunk.compressedSize);
    const data = openChunk(blob, chunk, raw);
    if (data instanceof ChunkProblem) throw new BuildError(where, data.message);
    return data;
  }

  close(): void {
    for (const { fd } of this.fds.values()) fs.closeSync(fd);
    this.fds.clear();
  }

  private open(index: number, blobId: string): { fd: number; size: number } {
    let entry = this.fds.get(index);
    if (!entry) {
      const file = this.files.get(blobId) ?? (this.blobDir !== undefined ? path.join(this.blobDir, blobId) : undefined);
      if (file === undefined) throw new BuildError(`blob ${blobId}`, 'no blob directory given and no file for this blob');
      try {
        const fd = fs.openSync(file, 'r');
        entry = { fd, size: fs.fstatSync(fd).size };
      } catch (err) {
        throw new BuildError(`blob ${blobId}`, `cannot open ${file}: ${errorMessage(err)}`);
      }
      this.fds.set(index, entry);
    }
    return entry;
  }
}
