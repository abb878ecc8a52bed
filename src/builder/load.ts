/**
 * Reading an image's bootstrap into the model, with errors that name the file. The file is either a
 * bootstrap (RAFS v5 or v6) or a data blob that carries its bootstrap as the `image.boot` section of
 * its ToC (upstream's RAFS-in-blob layout); only the blob's ends and that section are read
 * (`readBootstrapBytes`, shared with nydusd's daemon/mount-image.ts, as is `nameBlobsFromFile`).
 * With a blob directory, chunks missing from an (old) bootstrap's chunk table are looked up in the
 * blobs' own blob meta and chunk digest sections (decode.ts `externalChunks`).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BLOB_FEATURE, readBlobMeta } from '../format/blob-meta';
import { decodeBootstrap, ExternalChunks } from '../format/decode';
import { isRafsV5 } from '../format/decode-v5';
import { EROFS_MAGIC, SB_OFFSET } from '../format/layout';
import { BlobInfo, INLINED_BLOB_ID_PLACEHOLDER, RafsImage } from '../format/model';
import { extractTocEntry, parseToc, TOC_BLOB_DIGEST, TOC_BOOTSTRAP, tocTailSize } from '../format/toc';
import { BuildError, errorMessage } from './errors';

/** Larger files without a bootstrap's magic are not read whole to produce a decoder error. */
const MAX_BOOTSTRAP = 1 << 30;

export interface LoadedImage {
  image: RafsImage;
  /** Bytes of the bootstrap. */
  size: number;
  /** Set when the bootstrap came out of this data blob's ToC. */
  blobFile?: string;
}

/** A bootstrap's bytes, and the data blob they came from when it carried them in its ToC. */
export interface BootstrapBytes {
  boot: Buffer;
  blobFile?: string;
}

/**
 * The bootstrap in `file`: the file itself when it is one (RAFS v5 or v6 magic, or too small to be
 * a blob), else the `image.boot` section of the data blob's ToC (sha256-checked). Throws a plain
 * Error naming what is wrong (callers add the file name).
 */
export function readBootstrapBytes(file: string): BootstrapBytes {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const head = readAt(fd, 0, Math.min(size, SB_OFFSET + 4));
    const isBootstrap = isRafsV5(head) || (head.length === SB_OFFSET + 4 && head.readUInt32LE(SB_OFFSET) === EROFS_MAGIC);
    if (isBootstrap || size < 512) return { boot: readAt(fd, 0, size) };
    let toc;
    try {
      toc = parseToc(readAt(fd, size - tocTailSize(size), tocTailSize(size)));
    } catch {
      // Neither magic nor a ToC: the bootstrap decoder names what is wrong (bounded: no blob is read whole).
      if (size > MAX_BOOTSTRAP) throw new Error(`neither a RAFS bootstrap nor a data blob with a ToC (${size} bytes)`);
      return { boot: readAt(fd, 0, size) };
    }
    const e = toc.entries.find((x) => x.name === TOC_BOOTSTRAP);
    if (!e) throw new Error(`a data blob whose ToC has no ${TOC_BOOTSTRAP} section (pass its bootstrap instead)`);
    if (e.compressedOffset + e.compressedSize > size) throw new Error(`ToC section ${TOC_BOOTSTRAP} ends beyond the blob`);
    return { boot: extractTocEntry(e, readAt(fd, e.compressedOffset, e.compressedSize)), blobFile: file };
  } finally {
    fs.closeSync(fd);
  }
}

export function loadBootstrap(file: string, blobDir?: string): LoadedImage {
  try {
    const { boot, blobFile } = readBootstrapBytes(file);
    const image = decodeBootstrap(boot, { externalChunks: (blob) => localExternalChunks(blob, blobDir, blobFile) });
    nameBlobsFromFile(image.blobs, file, blobFile !== undefined);
    return { image, size: boot.length, blobFile };
  } catch (err) {
    throw new BuildError(file, errorMessage(err));
  }
}

/**
 * Blobs whose id comes from the file the bootstrap was read from, as upstream
 * (`RafsSuper::load_from_file`, `set_blob_id_from_meta_path`): a bootstrap inlined in its blob
 * (INLINED_FS_META) names that blob by a placeholder; and a bootstrap taken out of a blob's ToC
 * also renames blobs from before nydus 2.2 (no CAP_TAR_TOC), whose recorded id is not the blob's
 * name in the registry. The id is the file's name without extensions when that is a blob id,
 * else, for a blob (`fromBlob`), its sha256. A bootstrap file without such a name keeps the
 * placeholder (merge then needs --blob-digests).
 */
export function nameBlobsFromFile(blobs: BlobInfo[], file: string, fromBlob: boolean): void {
  const renamed = blobs.filter((b) => b.blobId === INLINED_BLOB_ID_PLACEHOLDER || (fromBlob && (b.features & (BLOB_FEATURE.INLINED_FS_META | BLOB_FEATURE.CAP_TAR_TOC)) !== BLOB_FEATURE.CAP_TAR_TOC));
  if (renamed.length === 0) return;
  const id = blobIdOfFile(file, fromBlob);
  if (id) for (const b of renamed) b.blobId = id;
}

function blobIdOfFile(file: string, hashContent: boolean): string | undefined {
  const base = path.basename(file).replace(/^sha256:/, '').replace(/(?<=.)\..*$/, '');
  if (/^[0-9a-f]{64}$/.test(base)) return base;
  if (!hashContent) return undefined;
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const h = createHash('sha256');
    for (let off = 0; off < size; off += 1 << 20) h.update(readAt(fd, off, Math.min(1 << 20, size - off)));
    return h.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, offset + got);
    if (n === 0) break;
    got += n;
  }
  return buf.subarray(0, got);
}

/**
 * Chunk details of `blob` from its file (`<blobDir>/<blobId>`, else `own`, the blob the bootstrap
 * came from): the blob meta, and the `blob.digest` ToC section when the blob has inlined digests.
 */
function localExternalChunks(blob: BlobInfo, blobDir: string | undefined, own: string | undefined): ExternalChunks | undefined {
  const inDir = blobDir !== undefined ? path.join(blobDir, blob.blobId) : undefined;
  const file = inDir !== undefined && fs.existsSync(inDir) ? inDir : own;
  if (file === undefined || (blob.ciCompressedSize === 0 && blob.ciUncompressedSize === 0)) return undefined;
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const chunks = readBlobMeta(blob, (o, l) => readAt(fd, o, l)).chunks;
    if (!(blob.features & BLOB_FEATURE.INLINED_CHUNK_DIGEST)) return { chunks };
    const toc = parseToc(readAt(fd, size - tocTailSize(size), tocTailSize(size)));
    const e = toc.entries.find((x) => x.name === TOC_BLOB_DIGEST);
    if (!e) return { chunks };
    return { chunks, digests: extractTocEntry(e, readAt(fd, e.compressedOffset, e.compressedSize)) };
  } finally {
    fs.closeSync(fd);
  }
}
