/**
 * `createLayer`: one source (directory or layer tar stream) -> one data blob + one layer bootstrap.
 *
 *   source ──> tree (dir-source / tar-source) ──> FileChunker ──> BlobWriter (dedup, compress, sha256;
 *                                                  prefetch files' chunks first, the rest staged behind them)
 *                                                                     │
 *   blob meta, chunk digests, [bootstrap], ToC (blob-tail) ──────────>├─> temp file ─rename─> blob
 *   tree + blob table ──> encodeBootstrap ──> bootstrapPath (unless inlined)
 *
 * Nothing is written at the final paths until everything succeeded; a failed build leaves no blob
 * and no bootstrap behind.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { INLINED_BLOB_ID_PLACEHOLDER, Inode, RafsImage } from '../format/model';
import { encodeBootstrap } from '../format/encode';
import { logger } from '../util/log';
import { BlobTable } from './blob-table';
import { BlobWriter } from './blob-writer';
import { BlobTail } from './blob-tail';
import { ChunkDict } from './chunk-dict';
import { readDirectory } from './dir-source';
import { readTar } from './tar-source';
import { BuildError, errorMessage } from './errors';
import { entryComponents } from './paths';
import { hotMatcher } from './hot-files';
import { CreateOptions, CreateResult, DEFAULT_CHUNK_SIZE, validateChunkSize } from './options';

const log = logger('builder');

export async function createLayer(opts: CreateOptions): Promise<CreateResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  validateChunkSize(chunkSize);
  const compressor = opts.compressor ?? 'zstd';
  const digester = opts.digester ?? 'blake3';
  if (!opts.blobPath && !opts.blobDir) throw new Error('either a blob file or a blob directory is required');
  if (!opts.inlineBootstrap && !opts.bootstrapPath) throw new Error('a bootstrap path is required unless the bootstrap is inlined into the blob');
  const outDir = opts.blobDir ?? path.dirname(path.resolve(opts.blobPath!));
  fs.mkdirSync(outDir, { recursive: true });
  const tempPath = path.join(outDir, `.nydus-blob-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}.tmp`);
  const table = new BlobTable();
  if (opts.chunkDict && opts.chunkDict.chunkSize !== chunkSize) {
    throw new Error(`chunk dict has chunk size ${opts.chunkDict.chunkSize}, the build uses ${chunkSize}`);
  }
  const dict = opts.chunkDict ? new ChunkDict(opts.chunkDict, digester) : undefined;
  // As upstream's builder: the prefetch files' data first in the blob, contiguous.
  const hot = hotMatcher(opts.prefetchFiles);
  const writer = new BlobWriter({ compressor, digester, chunkSize, tempPath, table, dict, stagePath: hot ? tempPath : undefined });
  const ctx = { writer, chunkSize, onProgress: opts.onProgress, hot };

  let root: Inode;
  let prefetchSize: number;
  try {
    root = opts.source.kind === 'dir' ? readDirectory(opts.source.path, ctx) : await readTar(opts.source.stream, opts.source.gzip, ctx);
    prefetchSize = hot ? writer.sealData() : 0;
  } catch (err) {
    writer.abort();
    throw err;
  }
  const blob = writer.current;
  const image: RafsImage = {
    root,
    blobs: table.blobs,
    chunkSize,
    digester,
    compressor,
    prefetch: prefetchList(root, opts.prefetchFiles ?? []),
    buildTime: opts.buildTime ?? Math.floor(Date.now() / 1000),
  };
  const inline = opts.inlineBootstrap ?? false;
  const encode = (): Buffer => {
    try {
      return encodeBootstrap(image);
    } catch (err) {
      throw new BuildError(`bootstrap ${opts.bootstrapPath ?? '(inlined)'}`, errorMessage(err));
    }
  };
  const dataSize = blob ? writer.position : 0;
  let blobPath: string | null = null;
  let written: ReturnType<BlobWriter['finish']> = null;
  let boot: Buffer | null = null;
  try {
    const tail = new BlobTail(writer, compressor);
    if (blob) tail.writeBlobMeta(blob, inline);
    if (inline) {
      // As upstream: the inlined bootstrap names its blob by a placeholder (the blob's sha256 is not
      // known yet) and records the blob's size up to the bootstrap; readers take the id from the file.
      if (blob) Object.assign(blob, { blobId: INLINED_BLOB_ID_PLACEHOLDER, compressedSize: writer.position });
      tail.appendBootstrap(encode());
      const toc = tail.appendToc();
      written = writer.finish();
      if (blob) Object.assign(blob, toc);
    } else {
      if (blob) Object.assign(blob, tail.appendToc());
      written = writer.finish();
      boot = encode();
    }
    if (written) {
      blobPath = opts.blobDir ? path.join(opts.blobDir, written.blob.blobId) : path.resolve(opts.blobPath!);
      fs.renameSync(written.tempPath, blobPath);
    }
    if (boot && opts.bootstrapPath) writeFileAtomic(opts.bootstrapPath, boot);
  } catch (err) {
    writer.abort();
    fs.rmSync(tempPath, { force: true });
    throw err;
  }
  const s = writer.stats;
  log.debug({ blobId: written?.blob.blobId ?? null, chunks: written?.blob.chunkCount ?? 0, inputBytes: s.inputBytes, dedupBytes: s.dedupBytes, dictBytes: s.dictBytes }, 'layer built');
  return {
    image,
    bootstrapPath: boot ? opts.bootstrapPath! : null,
    blobId: written?.blob.blobId ?? null,
    blobPath,
    blobSize: written ? fs.statSync(blobPath!).size : 0,
    dataSize,
    uncompressedSize: blob?.uncompressedSize ?? 0,
    prefetchSize: blob ? prefetchSize : 0,
  };
}

/** Keeps the prefetch paths that exist in the tree, normalised; warns about the others. */
export function prefetchList(root: Inode, files: string[]): string[] {
  const out: string[] = [];
  for (const file of files) {
    const parts = entryComponents(file.replace(/^\/+/, '') || '.', `prefetch path '${file}'`);
    let node: Inode | undefined = root;
    for (const p of parts) node = node?.kind === 'dir' ? node.children!.get(p) : undefined;
    if (!node) {
      log.warn({ path: file }, 'prefetch path not in the layer; skipped');
      continue;
    }
    const abs = '/' + parts.join('/');
    if (!out.includes(abs)) out.push(abs);
  }
  return out;
}

/** Writes via a temp file and rename, so readers never see half a bootstrap. */
export function writeFileAtomic(file: string, data: Buffer): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new BuildError(file, (err as Error).message);
  }
}
