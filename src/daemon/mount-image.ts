/**
 * The image a rafs instance mounts, from the file nydusd is given as its bootstrap: a RAFS v5 or v6
 * bootstrap, or a data blob carrying its bootstrap in its ToC (`--blob-inline-meta --features
 * blob-toc`; taken out by builder/load.ts, as `nydus-image check` does).
 *
 * A v6 bootstrap from before the chunk info table existed keeps chunk details only in each blob's
 * blob meta, and the digests in the blob's `blob.digest` ToC section (INLINED_CHUNK_DIGEST). Like
 * upstream nydusd, the blob meta comes from the cache work dir (`<blob id>.blob.meta`, upstream's
 * cache-file form) or else from the blob through the instance's sources, and is then kept there;
 * the ToC is checked against the bootstrap's `blob_toc_digest` and the digest section against its
 * ToC entry before use.
 *
 * A v6 bootstrap whose chunk info table has rows for every blob (what builders write since 2022) is
 * opened on demand (`openBootstrap`): the mount answers after reading the superblock and the chunk
 * table, and the tree is decoded as it is used. Anything else (RAFS v5, a table missing a blob) is
 * decoded whole before the mount answers, fetching blob metas as below.
 *
 * Contract: resolves with the decoded image, or rejects with one line naming what is missing or
 * wrong. Chunk data is never read here; a chunk without a digest from a verified place is refused
 * by the decoder (docs/format.md §18), so every served byte stays digest-checked.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BLOB_FEATURE, BlobMeta, parseBlobMetaCacheFile, readBlobMeta, BLOB_META_HEADER_SIZE, MAX_CI_BYTES } from '../format/blob-meta';
import { chunkRowsPerBlob, decodeBootstrap, ExternalChunks, openBootstrap } from '../format/decode';
import type { BlobInfo, RafsImage } from '../format/model';
import { extractTocEntry, MAX_TOC_SECTION, parseToc, TOC_BLOB_DIGEST, TOC_MAX_TAIL } from '../format/toc';
import { nameBlobsFromFile, readBootstrapBytes } from '../builder/load';
import type { ChunkSource } from '../fetch/source';
import { isRafsV5 } from '../format/decode-v5';
import { internName } from './intern-name';

/** A ToC is a few 128-byte entries and a tar header; a bootstrap claiming more is refused. */
const MAX_TOC_BYTES = 1 << 20;

/** Thrown through the decoder when it asks for a blob whose details are not fetched yet. */
const NOT_FETCHED = new Error('blob meta not fetched yet');

export async function loadMountImage(file: string, sources: readonly ChunkSource[], workDir: string): Promise<RafsImage> {
  const { boot, blobFile } = readBootstrapBytes(file);
  const fromBlob = blobFile !== undefined;
  if (!isRafsV5(boot)) {
    const image = openBootstrap(boot, { name: internName });
    const rows = image.blobs.map(() => 0);
    for (const c of image.chunkRows()) rows[c.blobIndex]++;
    if (rows.length > 0 && rows.every((n) => n > 0)) {
      nameBlobsFromFile(image.blobs, file, fromBlob);
      return image;
    }
  }
  // Fetched under the id the blob is served by (an inlined blob is named after its file).
  const blobs = chunkRowsPerBlob(boot).map(({ blob, rows }) => ({ blob: { ...blob }, rows }));
  nameBlobsFromFile(blobs.map((b) => b.blob), file, fromBlob);
  const fetched = new Map<number, ExternalChunks | Error | null>();
  // Blob metas are fetched only when the decoder asks: an image whose chunk table leaves out chunks
  // it does not use (chunk dicts, merged layers) mounts without a request. Each round fetches at
  // least one more blob, so there are at most blobs + 1 rounds.
  for (;;) {
    let asked: number | undefined;
    try {
      const image = decodeBootstrap(boot, {
        externalChunks: (_blob, index) => {
          if (!fetched.has(index)) {
            asked = index;
            throw NOT_FETCHED;
          }
          const got = fetched.get(index);
          if (got instanceof Error) throw got;
          return got ?? undefined;
        },
      });
      nameBlobsFromFile(image.blobs, file, fromBlob);
      return image;
    } catch (e) {
      if (e !== NOT_FETCHED || asked === undefined) throw e;
    }
    // An image from before the chunk table has no rows for any blob: fetch all of those at once.
    const round = new Set([asked, ...blobs.flatMap((b, i) => (b.rows === 0 && b.blob.ciUncompressedSize > 0 ? [i] : []))]);
    await Promise.all(
      [...round].filter((i) => !fetched.has(i)).map(async (i) => {
        try {
          fetched.set(i, await externalChunks(blobs[i].blob, sources, workDir));
        } catch (e) {
          fetched.set(i, e as Error);
        }
      }),
    );
  }
}

/** The blob's chunk details, or null when its blob table entry names no blob meta (the decoder says so). */
async function externalChunks(blob: BlobInfo, sources: readonly ChunkSource[], workDir: string): Promise<ExternalChunks | null> {
  if (blob.ciCompressedSize === 0 && blob.ciUncompressedSize === 0) return null;
  // SEPARATE keeps the blob meta in another blob (named by blob_meta_digest; zran and tar-ref images).
  if (blob.features & BLOB_FEATURE.SEPARATE) throw new Error(`blob ${blob.blobId} keeps its blob meta in a separate blob (SEPARATE), which is not read`);
  const meta = await blobMeta(blob, sources, workDir);
  if (!(blob.features & BLOB_FEATURE.INLINED_CHUNK_DIGEST)) return { chunks: meta.chunks };
  return { chunks: meta.chunks, digests: await chunkDigests(blob, sources) };
}

async function blobMeta(blob: BlobInfo, sources: readonly ChunkSource[], workDir: string): Promise<BlobMeta> {
  const cacheFile = path.join(workDir, `${blob.blobId}.blob.meta`);
  let cached: Buffer | undefined;
  try {
    cached = fs.readFileSync(cacheFile);
  } catch {
    cached = undefined;
  }
  if (cached) {
    try {
      return parseBlobMetaCacheFile(blob, cached);
    } catch {
      // A stale or damaged file is fetched again and replaced, as upstream does with an invalid header.
    }
  }
  // Sizes come from the bootstrap: bounded before anything is fetched.
  if (blob.ciCompressedSize > MAX_CI_BYTES) throw new Error(`blob ${blob.blobId}: blob meta of ${blob.ciCompressedSize} bytes is too large`);
  const meta = await readFromSources(sources, 'blob meta', blob.blobId, blob.ciOffset, blob.ciCompressedSize + BLOB_META_HEADER_SIZE, (b) => readBlobMeta(blob, () => b));
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, meta.cacheFile(), { mode: 0o644 });
    fs.renameSync(tmp, cacheFile);
  } catch {
    // Keeping it is an optimisation for the next mount; the image is served either way.
    fs.rmSync(tmp, { force: true });
  }
  return meta;
}

/**
 * The `blob.digest` section: the ToC at the blob's end (`blob_toc_size` bytes before
 * `compressed_size`, sha256 = `blob_toc_digest` when the bootstrap records it; else the last 4 KiB,
 * as upstream's default ToC location), then the section, checked against its entry.
 */
async function chunkDigests(blob: BlobInfo, sources: readonly ChunkSource[]): Promise<Buffer> {
  const tocLength = blob.tocSize ? blob.tocSize : Math.min(TOC_MAX_TAIL, blob.compressedSize - (blob.compressedSize % 128));
  if (tocLength > MAX_TOC_BYTES || tocLength > blob.compressedSize) throw new Error(`blob ${blob.blobId}: ToC of ${tocLength} bytes in a blob of ${blob.compressedSize}`);
  const toc = await readFromSources(sources, 'ToC', blob.blobId, blob.compressedSize - tocLength, tocLength, (b) => {
    if (blob.tocDigest && /[^0]/.test(blob.tocDigest) && blob.tocSize) {
      const got = createHash('sha256').update(b).digest('hex');
      if (got !== blob.tocDigest) throw new Error(`ToC sha256 ${got} is not the bootstrap's blob_toc_digest ${blob.tocDigest}`);
    }
    return parseToc(b);
  });
  const e = toc.entries.find((x) => x.name === TOC_BLOB_DIGEST);
  if (!e) throw new Error(`blob ${blob.blobId} has INLINED_CHUNK_DIGEST but its ToC has no ${TOC_BLOB_DIGEST} section`);
  // 32 bytes per chunk, as upstream requires of the digest file it extracts (meta/mod.rs).
  if (e.uncompressedSize !== 32 * blob.chunkCount || e.compressedSize > MAX_TOC_SECTION) {
    throw new Error(`blob ${blob.blobId}: ${TOC_BLOB_DIGEST} section of ${e.uncompressedSize} bytes (${e.compressedSize} stored) for ${blob.chunkCount} chunks`);
  }
  return readFromSources(sources, TOC_BLOB_DIGEST, blob.blobId, e.compressedOffset, e.compressedSize, (b) => extractTocEntry(e, b));
}

/**
 * Bytes [offset, offset+length) of a blob from the first source whose answer `check` accepts, the
 * sources asked in the pipeline's order; `what` names the section in the message. Metadata is not
 * attributed to a source (an image that is itself malformed would blame every mirror), so no
 * source is told `rejected`.
 */
async function readFromSources<T>(sources: readonly ChunkSource[], what: string, blobId: string, offset: number, length: number, check: (b: Buffer) => T): Promise<T> {
  const errors: string[] = [];
  for (const s of sources) {
    try {
      return check(await s.read({ blobId, offset, length }));
    } catch (e) {
      errors.push(`${s.name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`${what} of blob ${blobId} (bytes ${offset}+${length}): ${errors.length ? errors.join('; ') : 'no source configured'}`);
}
