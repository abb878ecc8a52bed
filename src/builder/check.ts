/**
 * `checkBootstrap`: decode (which validates every on-disk structure), then check the model's
 * invariants (chunk counts and sizes per file, blob indexes, offsets inside each blob), and with the
 * blobs at hand read and digest-verify every distinct chunk, and check that each blob's blob meta
 * (upstream's chunk info array, when the blob has one) describes every chunk as the bootstrap does.
 * The image may come from a bootstrap file or from a data blob carrying it (see load.ts); such a
 * blob is its own chunk source unless a blob directory is given.
 * `inspectBootstrap`: superblock-level facts, the blob table, counts, sizes and the tree listing.
 */
import { blobFeatureProblem, BlobMetaChunk, readBlobMeta } from '../format/blob-meta';
import { BlobInfo, CHUNK_COMPRESSED, ChunkInfo, Inode, InodeKind, RafsImage } from '../format/model';
import { BlobReader } from './blob-reader';
import { byBytes } from './dir-source';
import { BuildError } from './errors';
import { loadBootstrap } from './load';

export interface CheckReport {
  bootstrap: string;
  inodes: number;
  files: number;
  /** Distinct chunks referenced by the tree. */
  chunks: number;
  /** Chunks whose bytes were read and digest-verified (0 without a blob dir). */
  verifiedChunks: number;
  /** Chunks found described identically in their blob's blob meta (0 when no blob has one). */
  blobMetaChunks: number;
  blobs: Array<{ blobId: string; compressor: string; digester: string; chunkCount: number; compressedSize: number }>;
}

export interface TreeEntry {
  path: string;
  kind: InodeKind;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Number of names of this inode in the tree. */
  nlink: number;
  target?: string;
  rdev?: number;
  xattrs?: string[];
  chunks?: number;
}

export interface InspectReport {
  bootstrap: string;
  bootstrapSize: number;
  /** On-disk format: 5 (legacy RAFS v5) or 6. */
  rafsVersion: 5 | 6;
  chunkSize: number;
  digester: string;
  compressor: string;
  buildTime: number | null;
  blobs: BlobInfo[];
  counts: Record<InodeKind, number> & { inodes: number; entries: number; hardlinkedInodes: number; chunks: number; uniqueChunks: number };
  /** Sum of regular file sizes (each inode once). */
  fileBytes: number;
  prefetch: string[];
  tree: TreeEntry[];
}


export async function checkBootstrap(file: string, blobDir?: string): Promise<CheckReport> {
  const { image, blobFile } = loadBootstrap(file, blobDir);
  const inodes = new Set<Inode>();
  const chunks = new Set<string>();
  const distinct: ChunkInfo[] = [];
  let files = 0;
  const own = blobFile && !blobDir && image.blobs.length === 1 ? new Map([[image.blobs[0].blobId, blobFile]]) : undefined;
  if (blobDir || own) {
    for (const b of image.blobs) {
      const problem = blobFeatureProblem(b.features);
      if (problem) throw new BuildError(`${file}: blob ${b.blobId}`, `its chunks cannot be read: ${problem}`);
    }
  }
  const reader = blobDir || own ? new BlobReader(image, blobDir, own) : null;
  let verified = 0;
  let metaChecked = 0;
  try {
    for (const [p, inode] of entries(image.root)) {
      if (inodes.has(inode)) continue;
      inodes.add(inode);
      if (inode.kind !== 'file') continue;
      files++;
      const want = Math.ceil(inode.size / image.chunkSize);
      if (inode.chunks!.length !== want) throw new BuildError(`${file}: inode of '${p}'`, `${inode.chunks!.length} chunks for ${inode.size} bytes, expected ${want}`);
      inode.chunks!.forEach((c, i) => {
        const where = `${file}: chunk ${i} of '${p}'`;
        const blob = image.blobs[c.blobIndex];
        if (!blob) throw new BuildError(where, `blob index ${c.blobIndex} is not in the blob table (${image.blobs.length} blobs)`);
        const size = Math.min(image.chunkSize, inode.size - i * image.chunkSize);
        if (c.uncompressedSize !== size) throw new BuildError(where, `uncompressed size ${c.uncompressedSize}, expected ${size}`);
        // RAFS v6 addresses chunks in 4 KiB blocks; v5 chunks sit at any byte offset.
        if (image.rafsVersion !== 5 && c.uncompressedOffset % 4096 !== 0) throw new BuildError(where, `uncompressed offset ${c.uncompressedOffset} is not 4 KiB aligned`);
        if (blob.uncompressedSize && c.uncompressedOffset + c.uncompressedSize > blob.uncompressedSize) {
          throw new BuildError(where, `uncompressed range ends beyond blob ${blob.blobId} (${blob.uncompressedSize} bytes)`);
        }
        if (blob.compressedSize && c.compressedOffset + c.compressedSize > blob.compressedSize && blob.ciOffset === 0) {
          throw new BuildError(where, `compressed range ends beyond blob ${blob.blobId} (${blob.compressedSize} bytes)`);
        }
        const key = `${c.blobIndex}:${c.index}:${c.compressedOffset}`;
        if (chunks.has(key)) return;
        chunks.add(key);
        distinct.push(c);
        if (reader) {
          reader.read(c);
          verified++;
        }
      });
    }
    if (reader) metaChecked = checkBlobMetas(file, image, distinct, reader);
  } finally {
    reader?.close();
  }
  return {
    bootstrap: file,
    inodes: inodes.size,
    files,
    chunks: chunks.size,
    verifiedChunks: verified,
    blobMetaChunks: metaChecked,
    blobs: image.blobs.map((b) => ({ blobId: b.blobId, compressor: b.compressor, digester: b.digester, chunkCount: b.chunkCount, compressedSize: b.compressedSize })),
  };
}

/** Every chunk of a blob that has a blob meta must appear there, at its index, with equal offsets and sizes. */
function checkBlobMetas(file: string, image: RafsImage, chunks: ChunkInfo[], reader: BlobReader): number {
  let checked = 0;
  image.blobs.forEach((blob, bi) => {
    if (blob.ciCompressedSize === 0 && blob.ciUncompressedSize === 0) return;
    let meta: BlobMetaChunk[];
    try {
      meta = readBlobMeta(blob, (o, l) => reader.readRaw(bi, o, l)).chunks;
    } catch (err) {
      throw new BuildError(`${file}: blob ${blob.blobId}`, (err as Error).message);
    }
    for (const c of chunks) {
      if (c.blobIndex !== bi) continue;
      const m = meta[c.index];
      const where = `${file}: blob ${blob.blobId} chunk #${c.index}`;
      if (!m) throw new BuildError(where, `not in the blob meta (${meta.length} entries)`);
      const mine = [c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize, (c.flags & CHUNK_COMPRESSED) !== 0];
      const theirs = [m.compressedOffset, m.compressedSize, m.uncompressedOffset, m.uncompressedSize, m.compressed];
      if (mine.some((v, k) => v !== theirs[k])) {
        throw new BuildError(where, `bootstrap says ${JSON.stringify(mine)}, blob meta says ${JSON.stringify(theirs)} (compressed offset, size, uncompressed offset, size, compressed)`);
      }
      checked++;
    }
  });
  return checked;
}

export function inspectBootstrap(file: string, blobDir?: string): InspectReport {
  const { image, size } = loadBootstrap(file, blobDir);
  const counts: InspectReport['counts'] = {
    file: 0, dir: 0, symlink: 0, chardev: 0, blockdev: 0, fifo: 0, socket: 0,
    inodes: 0, entries: 0, hardlinkedInodes: 0, chunks: 0, uniqueChunks: 0,
  };
  const names = new Map<Inode, number>();
  const all = [...entries(image.root)];
  for (const [, inode] of all) names.set(inode, (names.get(inode) ?? 0) + 1);
  const unique = new Set<string>();
  let fileBytes = 0;
  for (const [inode, n] of names) {
    counts[inode.kind]++;
    counts.inodes++;
    if (n > 1) counts.hardlinkedInodes++;
    if (inode.kind === 'file') {
      fileBytes += inode.size;
      counts.chunks += inode.chunks!.length;
      for (const c of inode.chunks!) unique.add(`${c.blobIndex}:${c.index}:${c.compressedOffset}`);
    }
  }
  counts.entries = all.length;
  counts.uniqueChunks = unique.size;
  const tree: TreeEntry[] = all.map(([p, inode]) => ({
    path: p,
    kind: inode.kind,
    mode: inode.mode,
    uid: inode.uid,
    gid: inode.gid,
    size: inode.kind === 'dir' ? 0 : inode.size,
    nlink: names.get(inode)!,
    ...(inode.target !== undefined ? { target: inode.target } : {}),
    ...(inode.kind === 'chardev' || inode.kind === 'blockdev' ? { rdev: inode.rdev } : {}),
    ...(inode.xattrs.size ? { xattrs: [...inode.xattrs.keys()] } : {}),
    ...(inode.kind === 'file' ? { chunks: inode.chunks!.length } : {}),
  }));
  return {
    bootstrap: file,
    bootstrapSize: size,
    rafsVersion: image.rafsVersion ?? 6,
    chunkSize: image.chunkSize,
    digester: image.digester,
    compressor: image.compressor,
    buildTime: image.buildTime ?? null,
    blobs: image.blobs,
    counts,
    fileBytes,
    prefetch: image.prefetch,
    tree,
  };
}

/** Every (path, inode) of the tree, parents first, names in byte order; root is `/`. */
export function* entries(root: Inode): Generator<[string, Inode]> {
  const stack: Array<[string, Inode]> = [['/', root]];
  while (stack.length) {
    const [p, inode] = stack.pop()!;
    yield [p, inode];
    if (inode.kind !== 'dir') continue;
    const names = [...inode.children!.keys()].sort(byBytes).reverse();
    for (const name of names) stack.push([p === '/' ? `/${name}` : `${p}/${name}`, inode.children!.get(name)!]);
  }
}
