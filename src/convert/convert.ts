/**
 * nydusify convert: an OCI / Docker image in a registry -> a nydus image in a registry.
 *
 *   source manifest (or the index entries for the chosen platforms), for each image:
 *     each layer, bounded in parallel: stream the layer blob into the builder ─> blob + layer
 *       bootstrap ─> push the blob unless the target has it
 *     merge layer bootstraps (lowest first) ─> bootstrap layer (tar.gz image/image.boot) ─> push
 *     config (diff_ids for the nydus layers, converter history entry) ─> push ─> manifest
 *   with a blob backend (--backend-type s3|oss|localfs) the blobs go there instead and the manifest
 *   holds only the bootstrap layer (config diff_ids and history likewise), as upstream writes it;
 *   one image is tagged as a manifest; several as an index; --merge-platform tags an index of the
 *   source images (an empty layer prepended, as upstream does) and the nydus images.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mergeLayers, DEFAULT_CHUNK_SIZE } from '../builder';
import { validateChunkSize } from '../builder/options';
import { decodeBootstrap } from '../format/decode';
import { encodeBootstrap } from '../format/encode';
import type { RafsImage } from '../format/model';
import type { Manifest, RegistryClient } from '../registry/client';
import { contentDigest } from '../registry/content-digest';
import { Descriptor, ImageConfig, ImageIndex, ImageManifest, OCI_INDEX, OCI_MANIFEST, Platform, isIndex } from '../registry/media';
import { formatPlatform, parsePlatform } from '../registry/platform';
import { formatReference, referenceTarget } from '../registry/reference';
import { logger } from '../util/log';
import { packBootstrap } from './bootstrap-layer';
import type { BlobBackend } from './blob-backend';
import { ImageEndpoint, OpenEndpoint, openEndpoint } from './endpoint';
import { BuildSettings, convertLayer } from './layer';
import { mergedIndex, prependEmptyLayer } from './merge-platform';
import {
  ANNOTATION_FS_VERSION, ANNOTATION_SOURCE_DIGEST, ANNOTATION_SOURCE_REFERENCE, NYDUS_ARTIFACT_TYPE, NYDUS_CONFIG_MEDIA_TYPE, NYDUS_OS_FEATURE,
  blobDescriptor, bootstrapDescriptor, layoutTypes, nydusConfig, nydusManifest,
} from './nydus-manifest';
import { mapBounded } from './pool';
import { ProgressFn } from './progress';

const log = logger('nydusify');

export interface ConvertOptions {
  source: ImageEndpoint;
  target: ImageEndpoint;
  /** os/arch[/variant] entries to convert from an index; default linux/amd64. */
  platforms?: string[];
  /** Every entry of an index (upstream's --all-platforms). */
  allPlatforms?: boolean;
  /** OCI media types even for a Docker source (upstream's --oci). */
  oci?: boolean;
  /** Tag an index of the source and the nydus images (upstream's --merge-platform). */
  mergePlatform?: boolean;
  /** The nydus manifest's `subject` is the source manifest (upstream's --with-referrer). */
  withReferrer?: boolean;
  compressor?: 'zstd' | 'none';
  chunkSize?: number;
  digester?: 'sha256' | 'blake3';
  /** A bootstrap whose chunks are referenced instead of stored again. */
  chunkDictPath?: string;
  /** Absolute paths to prefetch (see parsePrefetchPatterns). */
  prefetchPatterns?: string[];
  /** Where blobs and bootstraps are built; a fresh subdirectory is used and removed afterwards. */
  workDir?: string;
  /** Layers converted at once. Default 2. */
  parallelism?: number;
  onProgress?: ProgressFn;
  /** Blobs go here rather than to the target registry (upstream's --backend-type). */
  backend?: BlobBackend;
  /** Upload blobs even when the backend has them (upstream's --backend-force-push). */
  backendForcePush?: boolean;
}

export interface ConvertedLayer {
  source: string;
  blobId: string | null;
  /** False when the target already had the blob. */
  pushed: boolean;
}

export interface ConvertedImage {
  platform?: Platform;
  manifestDigest: string;
  manifest: ImageManifest;
  layers: ConvertedLayer[];
  bootstrapPushed: boolean;
}

/** Upstream's --output-json metric (acceleration-service's Metric; durations in nanoseconds). */
export interface ConvertMetric {
  SourceImageSize: number;
  TargetImageSize: number;
  SourcePullElapsed: number;
  ConversionElapsed: number;
  TargetPushElapsed: number;
}

export interface ConvertResult {
  target: string;
  /** Digest and media type of what the tag points at: a manifest or an index. */
  manifestDigest: string;
  mediaType: string;
  images: ConvertedImage[];
  /** The first (usually the only) nydus image's manifest, layers and bootstrap push. */
  manifest: ImageManifest;
  layers: ConvertedLayer[];
  bootstrapPushed: boolean;
  metric: ConvertMetric;
}

/** Prefetch patterns as upstream reads them from stdin: absolute paths, one per line; blank lines and # comments skipped. */
export function parsePrefetchPatterns(text: string, where: string): string[] {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).map((l, i) => {
    if (!l.startsWith('/')) throw new Error(`${where}: line ${i + 1}: "${l}" is not an absolute path`);
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

/** Nanoseconds since `start` (a Date.now()), as Go's time.Duration marshals. */
const elapsedNs = (start: number): number => (Date.now() - start) * 1e6;

interface Context {
  opts: ConvertOptions;
  src: OpenEndpoint;
  tgt: OpenEndpoint;
  build: BuildSettings;
  work: string;
  progress: ProgressFn;
  /** Accumulated push time (ms) across images. */
  pushMs: number;
}

/** The source image manifests to convert, with their index entries (platform) when from an index. */
async function sourceImages(c: Context, top: Manifest): Promise<{ desc: Descriptor; manifest: Manifest }[]> {
  const repo = c.src.ref.repository;
  if (!isIndex(top.mediaType)) {
    if (!Array.isArray(top.json.layers)) throw new Error(`source ${c.opts.source.ref}: ${top.mediaType} is not an image manifest`);
    return [{ desc: { mediaType: top.mediaType, digest: top.digest, size: top.body.length }, manifest: top }];
  }
  const entries = ((top.json as ImageIndex).manifests ?? []).filter((d) => d.platform);
  let chosen: Descriptor[];
  if (c.opts.allPlatforms) chosen = entries;
  else {
    const wants = (c.opts.platforms ?? ['linux/amd64']).map(parsePlatform);
    chosen = entries.filter((d) => wants.some((w) => w.os === d.platform!.os && w.architecture === d.platform!.architecture
      && (!w.variant || w.variant === d.platform!.variant || (w.architecture === 'arm64' && w.variant === 'v8' && !d.platform!.variant))));
    if (!chosen.length) {
      throw new Error(`source ${c.opts.source.ref}: no manifest for platform ${wants.map(formatPlatform).join(', ')} (index has ${entries.map((d) => formatPlatform(d.platform!)).join(', ') || 'none'})`);
    }
  }
  const out: { desc: Descriptor; manifest: Manifest }[] = [];
  for (const desc of chosen) {
    const manifest = await c.src.client.getManifestRaw(repo, desc.digest);
    if (isIndex(manifest.mediaType) || !Array.isArray(manifest.json.layers)) throw new Error(`source ${c.opts.source.ref}: entry ${desc.digest} is not an image manifest`);
    out.push({ desc, manifest });
  }
  return out;
}

function imageSize(m: ImageManifest): number {
  return m.config.size + m.layers.reduce((a, l) => a + l.size, 0);
}

/** Converts one source image; pushes blobs, bootstrap, config and the manifest (by digest). */
async function convertOne(c: Context, srcDesc: Descriptor, srcM: Manifest): Promise<ConvertedImage> {
  const srcRepo = c.src.ref.repository;
  const tgtRepo = c.tgt.ref.repository;
  const srcManifest = srcM.json as ImageManifest;
  const srcConfig = JSON.parse((await c.src.client.getBlobBuffer(srcRepo, srcManifest.config.digest)).toString('utf8')) as ImageConfig;
  const n = srcManifest.layers.length;
  const progress = c.progress;
  log.info({ source: formatReference(c.src.ref), target: formatReference(c.tgt.ref), layers: n, manifest: srcM.digest }, 'converting');
  const push = async <T>(fn: () => Promise<T>): Promise<T> => {
    const t = Date.now();
    try {
      return await fn();
    } finally {
      c.pushMs += Date.now() - t;
    }
  };

  const built = await mapBounded(srcManifest.layers, c.opts.parallelism ?? 2, async (desc, i) => {
    const ev = { layer: i + 1, layers: n, what: desc.digest, total: desc.size };
    progress({ ...ev, phase: 'convert', bytes: 0 });
    const res = await convertLayer(c.src.client, srcRepo, desc, i, c.work, c.build, (bytes) => progress({ ...ev, phase: 'convert', bytes }));
    let pushed = false;
    let blob: Descriptor | undefined;
    if (res.blobId && res.blobPath && c.opts.backend) {
      const be = c.opts.backend;
      blob = blobDescriptor(res.blobId, fs.statSync(res.blobPath).size);
      if (!c.opts.backendForcePush && (await be.size(res.blobId)) === blob.size) {
        progress({ ...ev, phase: 'exists' });
      } else {
        progress({ ...ev, phase: 'push' });
        await push(() => be.put(res.blobId!, res.blobPath!, blob!.size));
        pushed = true;
      }
      fs.rmSync(res.blobPath, { force: true });
    } else if (res.blobId && res.blobPath) {
      blob = blobDescriptor(res.blobId, fs.statSync(res.blobPath).size);
      if (await c.tgt.client.hasBlob(tgtRepo, blob.digest)) {
        progress({ ...ev, phase: 'exists' });
      } else {
        progress({ ...ev, phase: 'push' });
        await push(() => c.tgt.client.pushBlob(tgtRepo, blob!.digest, res.blobPath!, blob!.size));
        pushed = true;
      }
      fs.rmSync(res.blobPath, { force: true });
    }
    progress({ ...ev, phase: 'done' });
    return { res, blob, pushed };
  });

  // Upstream keeps a Docker manifest Docker unless --oci; an OCI source stays OCI.
  const types = layoutTypes(Boolean(c.opts.oci) || srcM.mediaType === OCI_MANIFEST);
  const merged = mergeLayers(built.map((b) => b.res.image));
  // The same source gives the same bootstrap, hence the same layer and manifest digests.
  merged.buildTime = createdSeconds(srcConfig);
  const blobs = await blobLayers(merged, built.map((b) => b.blob), c.tgt.client, tgtRepo, c.opts.backend);
  const boot = await packBootstrap(encodeBootstrap(merged));
  const bootDesc = bootstrapDescriptor(boot.digest, boot.data.length, types.bootstrap);
  const bootstrapPushed = await push(() => pushBuffer(c.tgt.client, tgtRepo, bootDesc.digest, boot.data, path.join(c.work, 'bootstrap.tar.gz')));
  progress({ layer: 0, layers: n, what: 'bootstrap', phase: 'done' });

  // With a blob backend the registry image is the bootstrap layer alone.
  const manifestBlobs = c.opts.backend ? [] : blobs;
  const config = Buffer.from(JSON.stringify(nydusConfig(srcConfig, manifestBlobs, boot.diffId, !c.opts.backend)));
  const configDesc: Descriptor = { mediaType: c.opts.mergePlatform ? NYDUS_CONFIG_MEDIA_TYPE : types.config, digest: contentDigest(config), size: config.length };
  await push(() => pushBuffer(c.tgt.client, tgtRepo, configDesc.digest, config, path.join(c.work, 'config.json')));
  // Keys in Go's (sorted) map order, so the JSON reads like upstream's.
  const annotations = {
    [ANNOTATION_FS_VERSION]: '6',
    [ANNOTATION_SOURCE_DIGEST]: srcM.digest,
    [ANNOTATION_SOURCE_REFERENCE]: formatReference(c.src.ref),
  };
  const subject = c.opts.withReferrer ? { mediaType: srcM.mediaType, digest: srcM.digest, size: srcM.body.length } : undefined;
  const manifest = nydusManifest(types, configDesc, manifestBlobs, bootDesc, annotations, subject);
  const body = Buffer.from(JSON.stringify(manifest));
  const manifestDigest = await push(() => c.tgt.client.putManifest(tgtRepo, contentDigest(body), types.manifest, body));
  return {
    platform: srcDesc.platform ?? { os: srcConfig.os, architecture: srcConfig.architecture, ...(srcConfig.variant ? { variant: srcConfig.variant } : {}) },
    manifestDigest, manifest, bootstrapPushed,
    layers: built.map((b, i) => ({ source: srcManifest.layers[i].digest, blobId: b.res.blobId, pushed: b.pushed })),
  };
}

export async function convertImage(opts: ConvertOptions): Promise<ConvertResult> {
  const src = openEndpoint(opts.source);
  const tgt = openEndpoint(opts.target);
  if (!tgt.ref.tag || tgt.ref.digest) throw new Error(`target ${opts.target.ref}: must be a tag reference, not a digest`);
  if (opts.allPlatforms && opts.platforms?.length) throw new Error('--all-platforms conflicts with --platform');
  for (const p of opts.platforms ?? []) parsePlatform(p);
  const build: BuildSettings = {
    compressor: opts.compressor ?? 'zstd',
    chunkSize: opts.chunkSize ?? DEFAULT_CHUNK_SIZE,
    digester: opts.digester ?? 'blake3',
    chunkDict: opts.chunkDictPath ? readChunkDict(opts.chunkDictPath) : undefined,
    prefetchFiles: opts.prefetchPatterns,
  };
  // Bad settings fail here, before any network traffic.
  validateChunkSize(build.chunkSize);
  const base = opts.workDir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const work = fs.mkdtempSync(path.join(base, 'nydusify-'));
  const c: Context = { opts, src, tgt, build, work, progress: opts.onProgress ?? (() => undefined), pushMs: 0 };
  const started = Date.now();
  try {
    const top = await src.client.getManifestRaw(src.ref.repository, referenceTarget(src.ref));
    const sources = await sourceImages(c, top);
    const pulled = Date.now();
    const images: ConvertedImage[] = [];
    for (const s of sources) images.push(await convertOne(c, s.desc, s.manifest));

    const tgtRepo = tgt.ref.repository;
    let tagged: { mediaType: string; body: Buffer };
    if (opts.mergePlatform) {
      const ociEntries: Descriptor[] = [];
      for (const s of sources) ociEntries.push(await prependEmptyLayer(src.client, src.ref.repository, tgt.client, tgtRepo, s.desc, s.manifest));
      tagged = { mediaType: OCI_INDEX, body: Buffer.from(JSON.stringify(mergedIndex(ociEntries, images.map((i) => nydusEntry(i))))) };
    } else if (images.length === 1) {
      tagged = { mediaType: images[0].manifest.mediaType!, body: Buffer.from(JSON.stringify(images[0].manifest)) };
    } else {
      // An index of the nydus images, in the source index's media type unless --oci.
      const mediaType = opts.oci ? OCI_INDEX : top.mediaType;
      tagged = { mediaType, body: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType, manifests: images.map((i) => nydusEntry(i, false)) })) };
    }
    const t = Date.now();
    const manifestDigest = await tgt.client.putManifest(tgtRepo, tgt.ref.tag, tagged.mediaType, tagged.body);
    c.pushMs += Date.now() - t;
    log.info({ target: formatReference(tgt.ref), manifest: manifestDigest, images: images.length }, 'converted');
    const total = elapsedNs(started);
    const metric: ConvertMetric = {
      SourceImageSize: sources.reduce((a, s) => a + imageSize(s.manifest.json as ImageManifest), 0),
      TargetImageSize: images.reduce((a, i) => a + imageSize(i.manifest), 0),
      SourcePullElapsed: (pulled - started) * 1e6,
      // Layers are pulled, built and pushed as one stream; conversion is the rest of the time.
      ConversionElapsed: Math.max(0, total - (pulled - started) * 1e6 - c.pushMs * 1e6),
      TargetPushElapsed: c.pushMs * 1e6,
    };
    return {
      target: formatReference(tgt.ref), manifestDigest, mediaType: tagged.mediaType, images,
      manifest: images[0].manifest, layers: images[0].layers, bootstrapPushed: images[0].bootstrapPushed, metric,
    };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    await Promise.all([src.client.close(), tgt.client.close()]);
  }
}

/** The index entry of a nydus image; with --merge-platform marked as upstream marks it. */
function nydusEntry(i: ConvertedImage, mark = true): Descriptor {
  const size = Buffer.byteLength(JSON.stringify(i.manifest));
  if (!mark) return { mediaType: i.manifest.mediaType!, digest: i.manifestDigest, size, ...(i.platform ? { platform: i.platform } : {}) };
  return {
    mediaType: i.manifest.mediaType!, digest: i.manifestDigest, size,
    platform: { ...(i.platform ?? { os: '', architecture: '' }), 'os.features': [NYDUS_OS_FEATURE] },
    artifactType: NYDUS_ARTIFACT_TYPE,
  };
}

function createdSeconds(config: ImageConfig): number {
  const t = config.created ? Date.parse(config.created) : NaN;
  return Number.isNaN(t) ? 0 : Math.floor(t / 1000);
}

/**
 * The blob layers of the manifest: our blobs in source layer order, then chunk-dict blobs, each
 * only if the merged bootstrap references it. A dict blob must already be in the target.
 */
async function blobLayers(merged: RafsImage, ours: (Descriptor | undefined)[], client: RegistryClient, repo: string, backend?: BlobBackend): Promise<Descriptor[]> {
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
    const size = backend ? await backend.size(b.blobId) : await client.blobSize(repo, `sha256:${b.blobId}`);
    if (size === undefined) throw new Error(`chunk dict blob sha256:${b.blobId} is not in ${backend ? backend.where : `target repository ${repo}`}; push it there first`);
    out.push(blobDescriptor(b.blobId, size));
  }
  return out;
}

/** Pushes a small blob via a file (so retries can replay it) unless the target has it. */
export async function pushBuffer(client: RegistryClient, repo: string, digest: string, data: Buffer, file: string): Promise<boolean> {
  if (await client.hasBlob(repo, digest)) return false;
  fs.writeFileSync(file, data);
  try {
    await client.pushBlob(repo, digest, file, data.length);
  } finally {
    fs.rmSync(file, { force: true });
  }
  return true;
}
