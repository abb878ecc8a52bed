/**
 * nydusify convert: an OCI / Docker image in a registry -> a nydus image in a registry.
 *
 *   source manifest (platform chosen) ─> for each layer, bounded in parallel:
 *       stream the layer blob into the builder ─> blob + layer bootstrap ─> push the blob unless
 *       the target has it
 *   merge layer bootstraps (lowest first) ─> bootstrap layer (tar.gz image/image.boot) ─> push
 *   config (diff_ids for the nydus layers, history kept) ─> push ─> manifest ─> push under the tag
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mergeLayers, DEFAULT_CHUNK_SIZE } from '../builder';
import { validateChunkSize } from '../builder/options';
import { decodeBootstrap } from '../format/decode';
import { encodeBootstrap } from '../format/encode';
import type { RafsImage } from '../format/model';
import type { RegistryClient } from '../registry/client';
import { contentDigest } from '../registry/content-digest';
import { Descriptor, ImageConfig, ImageManifest, OCI_MANIFEST, isIndex } from '../registry/media';
import { formatReference, referenceTarget } from '../registry/reference';
import { logger } from '../util/log';
import { packBootstrap } from './bootstrap-layer';
import { ImageEndpoint, openEndpoint } from './endpoint';
import { BuildSettings, convertLayer } from './layer';
import { blobDescriptor, bootstrapDescriptor, nydusConfig, nydusManifest } from './nydus-manifest';
import { mapBounded } from './pool';
import { ProgressFn } from './progress';

const log = logger('nydusify');

export interface ConvertOptions {
  source: ImageEndpoint;
  target: ImageEndpoint;
  /** os/arch[/variant] chosen from an index; default linux/amd64. */
  platform?: string;
  compressor?: 'zstd' | 'none';
  chunkSize?: number;
  digester?: 'sha256' | 'blake3';
  /** A bootstrap whose chunks are referenced instead of stored again. */
  chunkDictPath?: string;
  /** A file of absolute paths (one per line, # comments) to prefetch. */
  prefetchPatternsPath?: string;
  /** Where blobs and bootstraps are built; a fresh subdirectory is used and removed afterwards. */
  workDir?: string;
  /** Layers converted at once. Default 2. */
  parallelism?: number;
  onProgress?: ProgressFn;
}

export interface ConvertedLayer {
  source: string;
  blobId: string | null;
  /** False when the target already had the blob. */
  pushed: boolean;
}

export interface ConvertResult {
  target: string;
  manifestDigest: string;
  manifest: ImageManifest;
  layers: ConvertedLayer[];
  bootstrapPushed: boolean;
}

/** Reads a prefetch patterns file: absolute paths, one per line; blank lines and # comments skipped. */
export function readPrefetchPatterns(file: string): string[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`prefetch patterns ${file}: ${(e as Error).message}`);
  }
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l, i) => {
    if (!l.startsWith('/')) throw new Error(`prefetch patterns ${file}: line ${i + 1}: "${l}" is not an absolute path`);
    return l;
  });
}

function readChunkDict(file: string): RafsImage {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`chunk dict ${file}: ${(e as Error).message}`);
  }
  try {
    return decodeBootstrap(buf);
  } catch (e) {
    throw new Error(`chunk dict ${file}: ${(e as Error).message}`);
  }
}

export async function convertImage(opts: ConvertOptions): Promise<ConvertResult> {
  const src = openEndpoint(opts.source);
  const tgt = openEndpoint(opts.target);
  if (!tgt.ref.tag || tgt.ref.digest) throw new Error(`target ${opts.target.ref}: must be a tag reference, not a digest`);
  const build: BuildSettings = {
    compressor: opts.compressor ?? 'zstd',
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
    digester: opts.digester ?? 'sha256',
    chunkDict: opts.chunkDictPath ? readChunkDict(opts.chunkDictPath) : undefined,
    prefetchFiles: opts.prefetchPatternsPath ? readPrefetchPatterns(opts.prefetchPatternsPath) : undefined,
  };
  // Bad settings fail here, before any network traffic.
  validateChunkSize(build.chunkSize);
  const progress = opts.onProgress ?? (() => undefined);
  const base = opts.workDir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const work = fs.mkdtempSync(path.join(base, 'nydusify-'));
  try {
    const srcRepo = src.ref.repository;
    const tgtRepo = tgt.ref.repository;
    const m = await src.client.getManifest(srcRepo, referenceTarget(src.ref), { platform: opts.platform });
    if (isIndex(m.mediaType) || !Array.isArray(m.json.layers)) throw new Error(`source ${opts.source.ref}: ${m.mediaType} is not an image manifest`);
    const srcManifest = m.json as ImageManifest;
    const srcConfig = JSON.parse((await src.client.getBlobBuffer(srcRepo, srcManifest.config.digest)).toString('utf8')) as ImageConfig;
    const n = srcManifest.layers.length;
    log.info({ source: formatReference(src.ref), target: formatReference(tgt.ref), layers: n, manifest: m.digest }, 'converting');

    const built = await mapBounded(srcManifest.layers, opts.parallelism ?? 2, async (desc, i) => {
      const ev = { layer: i + 1, layers: n, what: desc.digest, total: desc.size };
      progress({ ...ev, phase: 'convert', bytes: 0 });
      const res = await convertLayer(src.client, srcRepo, desc, i, work, build, (bytes) => progress({ ...ev, phase: 'convert', bytes }));
      let pushed = false;
      let blob: Descriptor | undefined;
      if (res.blobId && res.blobPath) {
        blob = blobDescriptor(res.blobId, fs.statSync(res.blobPath).size);
        if (await tgt.client.hasBlob(tgtRepo, blob.digest)) {
          progress({ ...ev, phase: 'exists' });
        } else {
          progress({ ...ev, phase: 'push' });
          await tgt.client.pushBlob(tgtRepo, blob.digest, res.blobPath, blob.size);
          pushed = true;
        }
        fs.rmSync(res.blobPath, { force: true });
      }
      progress({ ...ev, phase: 'done' });
      return { res, blob, pushed };
    });

    const merged = mergeLayers(built.map((b) => b.res.image));
    // The same source gives the same bootstrap, hence the same layer and manifest digests.
    merged.buildTime = createdSeconds(srcConfig);
    const blobs = await blobLayers(merged, built.map((b) => b.blob), tgt.client, tgtRepo);
    const boot = await packBootstrap(encodeBootstrap(merged));
    const bootDesc = bootstrapDescriptor(boot.digest, boot.data.length);
    const bootstrapPushed = await pushBuffer(tgt.client, tgtRepo, bootDesc.digest, boot.data, path.join(work, 'bootstrap.tar.gz'));
    progress({ layer: 0, layers: n, what: 'bootstrap', phase: 'done' });

    const config = Buffer.from(JSON.stringify(nydusConfig(srcConfig, blobs, boot.diffId)));
    const configDesc: Descriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: contentDigest(config), size: config.length };
    await pushBuffer(tgt.client, tgtRepo, configDesc.digest, config, path.join(work, 'config.json'));
    const manifest = nydusManifest(configDesc, blobs, bootDesc);
    const manifestDigest = await tgt.client.putManifest(tgtRepo, tgt.ref.tag, OCI_MANIFEST, Buffer.from(JSON.stringify(manifest)));
    log.info({ target: formatReference(tgt.ref), manifest: manifestDigest, blobs: blobs.length }, 'converted');
    return {
      target: formatReference(tgt.ref), manifestDigest, manifest, bootstrapPushed,
      layers: built.map((b, i) => ({ source: srcManifest.layers[i].digest, blobId: b.res.blobId, pushed: b.pushed })),
    };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    await Promise.all([src.client.close(), tgt.client.close()]);
  }
}

function createdSeconds(config: ImageConfig): number {
  const t = config.created ? Date.parse(config.created) : NaN;
  return Number.isNaN(t) ? 0 : Math.floor(t / 1000);
}

/**
 * The blob layers of the manifest: our blobs in source layer order, then chunk-dict blobs, each
 * only if the merged bootstrap references it. A dict blob must already be in the target.
 */
async function blobLayers(merged: RafsImage, ours: (Descriptor | undefined)[], client: RegistryClient, repo: string): Promise<Descriptor[]> {
  const referenced = new Set(merged.blobs.map((b) => `sha256:${b.blobId}`));
  const out: Descriptor[] = [];
  const seen = new Set<string>();
  for (const d of ours) {
    if (!d || !referenced.has(d.digest) || seen.has(d.digest)) continue;
    seen.add(d.digest);
    out.push(d);
  }
  for (const b of merged.blobs) {
    if (seen.has(`sha256:${b.blobId}`)) continue;
    seen.add(`sha256:${b.blobId}`);
    const size = await client.blobSize(repo, `sha256:${b.blobId}`);
    if (size === undefined) throw new Error(`chunk dict blob sha256:${b.blobId} is not in target repository ${repo}; push it there first`);
    out.push(blobDescriptor(b.blobId, size));
  }
  return out;
}

/** Pushes a small blob via a file (so retries can replay it) unless the target has it. */
async function pushBuffer(client: RegistryClient, repo: string, digest: string, data: Buffer, file: string): Promise<boolean> {
  if (await client.hasBlob(repo, digest)) return false;
  fs.writeFileSync(file, data);
  await client.pushBlob(repo, digest, file, data.length);
  return true;
}
