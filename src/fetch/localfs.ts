/**
 * The localfs source: blobs as files in a directory (`dir/<blob_id>`, then each of `alt_dirs`), or
 * one `blob_file` for every blob, as nydusd's localfs backend. File handles are opened on first use
 * and kept until `close()`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BlobRange, ChunkSource, ReadContext } from './source';

export interface LocalFsOptions {
  dir?: string;
  altDirs?: string[];
  blobFile?: string;
}

export class LocalFsSource implements ChunkSource {
  readonly name = 'localfs';
  private readonly handles = new Map<string, Promise<fs.promises.FileHandle>>();

  constructor(private readonly opts: LocalFsOptions) {
    if (!opts.dir && !opts.blobFile) throw new Error('localfs: one of dir or blob_file is required');
  }

  private async openBlob(blobId: string): Promise<fs.promises.FileHandle> {
    if (this.opts.blobFile) return fs.promises.open(this.opts.blobFile, 'r');
    const dirs = [this.opts.dir!, ...(this.opts.altDirs ?? [])];
    for (const d of dirs) {
      try {
        return await fs.promises.open(path.join(d, blobId), 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    throw new Error(`localfs: blob ${blobId} not found in ${dirs.join(', ')}`);
  }

  private handle(blobId: string): Promise<fs.promises.FileHandle> {
    let h = this.handles.get(blobId);
    if (!h) {
      h = this.openBlob(blobId);
      this.handles.set(blobId, h);
      h.catch(() => this.handles.delete(blobId));
    }
    return h;
  }

  async read(range: BlobRange, ctx?: ReadContext): Promise<Buffer> {
    ctx?.signal?.throwIfAborted();
    const fh = await this.handle(range.blobId);
    const buf = Buffer.allocUnsafe(range.length);
    let got = 0;
    while (got < range.length) {
      const { bytesRead } = await fh.read(buf, got, range.length - got, range.offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    if (got !== range.length) throw new Error(`localfs: blob ${range.blobId} ends before ${range.offset + range.length} (read ${got} of ${range.length} bytes at ${range.offset})`);
    return buf;
  }

  async close(): Promise<void> {
    const all = await Promise.allSettled(this.handles.values());
    this.handles.clear();
    for (const h of all) if (h.status === 'fulfilled') await h.value.close();
  }
}
