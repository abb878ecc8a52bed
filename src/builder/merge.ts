/**
 * Layer merge: per-layer bootstraps (lowest first) -> one flattened image, with OCI overlay rules:
 *   - `.wh.NAME` in a layer removes NAME from the layers below it;
 *   - `.wh..wh..opq` in a directory hides everything below it in that directory;
 *   - an entry replaces a lower entry of the same name; a non-directory replacing a directory
 *     drops the lower subtree; a directory over a directory takes the upper attributes and merges.
 * Whiteout entries never reach the result. The blob table is recomputed to the blobs still
 * referenced, and every chunk's blob index is remapped to it.
 */
import * as path from 'node:path';
import { BlobInfo, ChunkInfo, INLINED_BLOB_ID_PLACEHOLDER, Inode, newInode, RafsImage, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from '../format/model';
import { encodeBootstrap } from '../format/encode';
import { loadBootstrap } from './load';
import { copyAttributes } from './tree';
import { prefetchList, writeFileAtomic } from './create';

export function mergeLayers(layers: RafsImage[]): RafsImage {
  if (layers.length === 0) throw new Error('merge needs at least one layer');
  const chunkSize = layers[0].chunkSize;
  const merged = newInode('dir', layers[0].root.mode);
  // Chunks point at BlobInfo objects while merging; indexes are assigned at the end.
  const chunkBlob = new Map<ChunkInfo, BlobInfo>();
  const blobsById = new Map<string, BlobInfo>();
  layers.forEach((layer, i) => {
    if (layer.chunkSize !== chunkSize) {
      throw new Error(`layer ${i + 1} has chunk size ${layer.chunkSize}, layer 1 has ${chunkSize}`);
    }
    const blobs = layer.blobs.map((b) => {
      const known = blobsById.get(b.blobId);
      if (known) return known;
      blobsById.set(b.blobId, b);
      return b;
    });
    const clone = new Cloner(blobs, chunkBlob, i + 1);
    copyAttributes(merged, layer.root);
    mergeDir(merged, layer.root, clone);
  });
  const blobs: BlobInfo[] = [];
  const index = new Map<BlobInfo, number>();
  const remap = (inode: Inode, seen: Set<Inode>): void => {
    if (seen.has(inode)) return;
    seen.add(inode);
    if (inode.kind === 'dir') for (const child of inode.children!.values()) remap(child, seen);
    if (inode.kind !== 'file') return;
    for (const chunk of inode.chunks!) {
      const blob = chunkBlob.get(chunk)!;
      let i = index.get(blob);
      if (i === undefined) {
        i = blobs.length;
        blobs.push(blob);
        index.set(blob, i);
      }
      chunk.blobIndex = i;
    }
  };
  remap(merged, new Set());
  const top = layers[layers.length - 1];
  return {
    root: merged,
    blobs,
    chunkSize,
    digester: layers[0].digester,
    compressor: top.compressor,
    prefetch: [...new Set(layers.flatMap((l) => l.prefetch))].filter((p) => exists(merged, p)),
    buildTime: Math.floor(Date.now() / 1000),
  };
}

/**
 * Per-source facts about each layer's own blob, as the converters pass them (upstream
 * `nydus-image merge --blob-digests/--original-blob-ids/--blob-sizes/--blob-toc-digests/--blob-toc-sizes`):
 * one entry per layer bootstrap (parent not counted); a layer's own blob is its last blob that is
 * not one of the chunk dict's.
 */
export interface MergeOptions {
  parentBootstrap?: string;
  chunkDict?: RafsImage;
  blobDigests?: string[];
  originalBlobIds?: string[];
  blobSizes?: number[];
  blobTocDigests?: string[];
  blobTocSizes?: number[];
  /** Absolute paths for the merged prefetch table (upstream's `--prefetch-policy fs` patterns); default: the layers' own. */
  prefetch?: string[];
}

/** Reads layer bootstraps, merges them and writes the result to `out`. */
export function mergeBootstraps(out: string, layerBootstraps: string[], opts: MergeOptions = {}): RafsImage {
  const layers = layerBootstraps.map((file) => loadBootstrap(file).image);
  const lists = { blobDigests: opts.blobDigests, originalBlobIds: opts.originalBlobIds, blobSizes: opts.blobSizes, blobTocDigests: opts.blobTocDigests, blobTocSizes: opts.blobTocSizes };
  for (const [name, list] of Object.entries(lists)) {
    if (list && list.length !== layers.length) throw new Error(`--${kebab(name)} has ${list.length} entries for ${layers.length} bootstraps`);
  }
  const dictIds = new Set(opts.chunkDict?.blobs.map((b) => b.blobId) ?? []);
  layers.forEach((layer, i) => {
    const own = [...layer.blobs].reverse().find((b) => !dictIds.has(b.blobId));
    if (!own) return;
    const hex = (s: string, what: string): string => {
      const h = s.replace(/^sha256:/, '');
      if (!/^[0-9a-f]{64}$/.test(h)) throw new Error(`${what} '${s}' for ${layerBootstraps[i]} is not a sha256 digest`);
      return h;
    };
    // A fresh copy: the same blob object may be shared by other layers' tables.
    const blob: BlobInfo = { ...own };
    if (opts.originalBlobIds) blob.blobId = hex(opts.originalBlobIds[i], '--original-blob-ids entry');
    if (opts.blobDigests) blob.blobId = hex(opts.blobDigests[i], '--blob-digests entry');
    if (opts.blobSizes) blob.compressedSize = opts.blobSizes[i];
    if (opts.blobTocDigests) blob.tocDigest = hex(opts.blobTocDigests[i], '--blob-toc-digests entry');
    if (opts.blobTocSizes) blob.tocSize = opts.blobTocSizes[i];
    if (blob.blobId === INLINED_BLOB_ID_PLACEHOLDER) {
      // Upstream takes the id from the bootstrap's file name when nothing else names it.
      const base = path.basename(layerBootstraps[i]).replace(/^sha256:/, '');
      if (!/^[0-9a-f]{64}$/.test(base)) throw new Error(`${layerBootstraps[i]}: its blob was inlined and has no id yet: pass --blob-digests`);
      blob.blobId = base;
    }
    layer.blobs[layer.blobs.indexOf(own)] = blob;
  });
  if (opts.parentBootstrap) layers.unshift(loadBootstrap(opts.parentBootstrap).image);
  const image = mergeLayers(layers);
  if (opts.prefetch) image.prefetch = prefetchList(image.root, opts.prefetch);
  writeFileAtomic(out, encodeBootstrap(image));
  return image;
}

function kebab(s: string): string {
  return s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/** Applies the upper directory `upper` of one layer onto the merged directory `lower`. */
function mergeDir(lower: Inode, upper: Inode, clone: Cloner): void {
  const children = upper.children!;
  if (children.has(WHITEOUT_OPAQUE)) lower.children!.clear();
  for (const name of children.keys()) {
    if (name !== WHITEOUT_OPAQUE && name.startsWith(WHITEOUT_PREFIX)) lower.children!.delete(name.slice(WHITEOUT_PREFIX.length));
  }
  for (const [name, node] of children) {
    if (name.startsWith(WHITEOUT_PREFIX)) continue;
    const existing = lower.children!.get(name);
    if (node.kind === 'dir') {
      let dir = existing;
      if (!dir || dir.kind !== 'dir') {
        dir = newInode('dir', node.mode);
        lower.children!.set(name, dir);
      }
      copyAttributes(dir, node);
      mergeDir(dir, node, clone);
    } else {
      lower.children!.set(name, clone.leaf(node));
    }
  }
}

/** Copies a layer's non-directory inodes, keeping its hard-link groups and tagging chunk blobs. */
class Cloner {
  private readonly copies = new Map<Inode, Inode>();

  constructor(
    private readonly blobs: BlobInfo[],
    private readonly chunkBlob: Map<ChunkInfo, BlobInfo>,
    private readonly layer: number,
  ) {}

  leaf(node: Inode): Inode {
    const known = this.copies.get(node);
    if (known) return known;
    const copy: Inode = { ...node, xattrs: new Map(node.xattrs), ino: undefined };
    if (node.kind === 'file') {
      copy.chunks = node.chunks!.map((c) => {
        const blob = this.blobs[c.blobIndex];
        if (!blob) throw new Error(`layer ${this.layer}: chunk refers to blob index ${c.blobIndex}, the blob table has ${this.blobs.length}`);
        const chunk = { ...c };
        this.chunkBlob.set(chunk, blob);
        return chunk;
      });
    }
    this.copies.set(node, copy);
    return copy;
  }
}

function exists(root: Inode, p: string): boolean {
  let node: Inode | undefined = root;
  for (const part of p.split('/').filter(Boolean)) node = node?.kind === 'dir' ? node.children!.get(part) : undefined;
  return node !== undefined;
}
