/**
 * nydusify check: is the target a well-formed nydus image with the same files as the source?
 *  1. the manifest's layout (nydus-manifest.ts) and the config's diff_ids;
 *  2. the bootstrap layer: digest, diff_id, `image/image.boot` that decodes, every blob of its blob
 *     table present as a layer;
 *  3. every blob: downloaded (from the registry, or from the storage backend the blobs were
 *     converted to: --target-backend-type), size and digest checked, then every chunk decompressed and
 *     digest-verified against the bootstrap (builder's checkBootstrap);
 *  4. the file tree: the nydus image unpacked to a tar (library, no FUSE) against the source layers
 *     applied with their whiteouts; types, modes, owners, sizes, contents, link targets, devices,
 *     xattrs (only with a source).
 * A target index is resolved to its nydus entry for the platform (the one marked with upstream's
 * artifactType or os.features, else the first whose manifest has a bootstrap layer); with
 * multiPlatform the index must also hold a non-nydus entry for that platform (--merge-platform).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { checkBootstrap, unpackToTar } from '../builder';
import { decodeBootstrap } from '../format/decode';
import type { RafsImage } from '../format/model';
import type { Manifest, RegistryClient } from '../registry/client';
import { Descriptor, ImageConfig, ImageIndex, ImageManifest, isGzipLayer, isIndex, isPlainTarLayer } from '../registry/media';
import { DEFAULT_PLATFORM, formatPlatform, parsePlatform } from '../registry/platform';
import { formatReference, referenceTarget } from '../registry/reference';
import { logger } from '../util/log';
import { unpackBootstrap } from './bootstrap-layer';
import type { BlobBackend } from './blob-backend';
import { ImageEndpoint, openEndpoint } from './endpoint';
import { ANNOTATION_NYDUS_BOOTSTRAP, NYDUS_ARTIFACT_TYPE, NYDUS_OS_FEATURE, layoutProblems } from './nydus-manifest';
import { FsTree, applyLayer, diffTrees } from './tar-tree';

const log = logger('nydusify');

export interface CheckOptions {
  /** Without a source, the file tree is not compared. */
  source?: ImageEndpoint;
  target: ImageEndpoint;
  platform?: string;
  /** The target must be an index with both a source and a nydus image for the platform. */
  multiPlatform?: boolean;
  workDir?: string;
  /** Where the target's blobs are when they are not layers of its manifest (upstream's --target-backend-type). */
  targetBackend?: BlobBackend;
}

export interface CheckResult {
  ok: boolean;
  /** One line per problem found; empty when ok. */
  problems: string[];
  target: string;
  manifestDigest: string;
  blobs: number;
  verifiedChunks: number;
  entries: number;
}

/** Streams a blob to `file`; the registry client checks its size and digest on the way. */
async function downloadVerified(client: RegistryClient, repo: string, desc: Descriptor, file: string): Promise<void> {
  await pipelineAsync(await client.getBlob(repo, desc.digest, { size: desc.size }), fs.createWriteStream(file));
}

async function sourceTree(client: RegistryClient, repo: string, manifest: ImageManifest): Promise<FsTree> {
  const tree: FsTree = new Map();
  for (const [i, desc] of manifest.layers.entries()) {
    const where = `source layer ${i + 1} (${desc.digest})`;
    const gzip = isGzipLayer(desc.mediaType);
    if (!gzip && !isPlainTarLayer(desc.mediaType)) throw new Error(`${where}: unsupported layer media type ${desc.mediaType}`);
    const stream = await client.getBlob(repo, desc.digest, { size: desc.size });
    await applyLayer(tree, stream, { gzip, whiteouts: true, where });
    // The blob stream ends only after its digest verified; a tar that ended early has not.
    if (!stream.readableEnded) throw new Error(`${where}: the tar ended before the blob did, so the blob was not verified`);
  }
  return tree;
}

async function nydusTree(image: RafsImage, blobDir: string): Promise<FsTree> {
  const tree: FsTree = new Map();
  const tar = new PassThrough();
  const writing = unpackToTar(image, blobDir, tar).then(() => tar.end(), (e) => { tar.destroy(e); throw e; });
  await Promise.all([writing, applyLayer(tree, tar, { gzip: false, whiteouts: false, where: 'nydus image' })]);
  return tree;
}

const isNydusEntry = (d: Descriptor): boolean => d.artifactType === NYDUS_ARTIFACT_TYPE || Boolean(d.platform?.['os.features']?.includes(NYDUS_OS_FEATURE));

/** The target's nydus manifest for the platform; problems go to `problems`. */
async function targetManifest(client: RegistryClient, repo: string, ref: string, opts: CheckOptions, problems: string[]): Promise<Manifest> {
  const top = await client.getManifestRaw(repo, ref);
  if (!isIndex(top.mediaType)) {
    if (opts.multiPlatform) problems.push(`target is a ${top.mediaType}, not an index holding both the source and the nydus image`);
    return top;
  }
  const want = parsePlatform(opts.platform ?? DEFAULT_PLATFORM);
  const entries = ((top.json as ImageIndex).manifests ?? []).filter((d) => d.platform?.os === want.os && d.platform?.architecture === want.architecture);
  if (!entries.length) throw new Error(`target ${client.registry}/${repo}:${ref}: no manifest for platform ${formatPlatform(want)}`);
  let nydus = entries.find(isNydusEntry);
  if (!nydus) {
    for (const d of entries) {
      const m = await client.getManifestRaw(repo, d.digest);
      const last = (m.json as ImageManifest).layers?.at(-1);
      if (last?.annotations?.[ANNOTATION_NYDUS_BOOTSTRAP] === 'true') { nydus = d; break; }
    }
  }
  if (opts.multiPlatform && !entries.some((d) => d !== nydus)) problems.push(`target index has no source (non-nydus) image for ${formatPlatform(want)}`);
  return client.getManifestRaw(repo, (nydus ?? entries[0]).digest);
}

export async function checkImage(opts: CheckOptions): Promise<CheckResult> {
  const src = opts.source ? openEndpoint(opts.source) : undefined;
  const tgt = openEndpoint(opts.target);
  const base = opts.workDir ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  const work = fs.mkdtempSync(path.join(base, 'nydusify-check-'));
  const problems: string[] = [];
  const repo = tgt.ref.repository;
  try {
    const m = await targetManifest(tgt.client, repo, referenceTarget(tgt.ref), opts, problems);
    const manifest = m.json as ImageManifest;
    const result: CheckResult = { ok: false, problems, target: formatReference(tgt.ref), manifestDigest: m.digest, blobs: 0, verifiedChunks: 0, entries: 0 };
    if (!Array.isArray(manifest.layers) || !manifest.config) {
      problems.push(`target manifest ${m.digest} is not an image manifest`);
      return result;
    }
    const config = JSON.parse((await tgt.client.getBlobBuffer(repo, manifest.config.digest)).toString('utf8')) as ImageConfig;
    const bootDesc = manifest.layers[manifest.layers.length - 1];
    const layer = bootDesc ? await tgt.client.getBlobBuffer(repo, bootDesc.digest, 1 << 30) : undefined;
    let unpacked: { bootstrap: Buffer; diffId: string } | undefined;
    let unpackProblem: string | undefined;
    if (layer) {
      try {
        unpacked = await unpackBootstrap(layer, `bootstrap layer ${bootDesc.digest}`);
      } catch (e) {
        unpackProblem = (e as Error).message;
      }
    }
    problems.push(...layoutProblems(manifest, config, unpacked?.diffId));
    if (unpackProblem) problems.push(unpackProblem);
    if (!unpacked) return result;
    let image: RafsImage;
    try {
      image = decodeBootstrap(unpacked.bootstrap);
    } catch (e) {
      problems.push(`bootstrap does not decode: ${(e as Error).message}`);
      return result;
    }
    const bootPath = path.join(work, 'image.boot');
    fs.writeFileSync(bootPath, unpacked.bootstrap);
    const blobDir = path.join(work, 'blobs');
    fs.mkdirSync(blobDir);
    const byDigest = new Map(manifest.layers.slice(0, -1).map((l) => [l.digest, l]));
    for (const b of image.blobs) {
      if (opts.targetBackend) {
        try {
          await opts.targetBackend.download(b.blobId, path.join(blobDir, b.blobId));
          result.blobs++;
        } catch (e) {
          problems.push((e as Error).message);
        }
        continue;
      }
      const desc = byDigest.get(`sha256:${b.blobId}`);
      if (!desc) {
        problems.push(`bootstrap blob ${b.blobId} is not a layer of the manifest`);
        continue;
      }
      try {
        await downloadVerified(tgt.client, repo, desc, path.join(blobDir, b.blobId));
        result.blobs++;
      } catch (e) {
        problems.push((e as Error).message);
      }
    }
    if (problems.length) return result;
    try {
      result.verifiedChunks = (await checkBootstrap(bootPath, blobDir)).verifiedChunks;
    } catch (e) {
      problems.push(`bootstrap or blobs inconsistent: ${(e as Error).message}`);
      return result;
    }
    if (!src) {
      result.ok = problems.length === 0;
      return result;
    }
    const srcManifest = (await src.client.getManifest(src.ref.repository, referenceTarget(src.ref), { platform: opts.platform })).json as ImageManifest;
    const [want, have] = await Promise.all([sourceTree(src.client, src.ref.repository, srcManifest), nydusTree(image, blobDir)]);
    result.entries = have.size;
    problems.push(...diffTrees(want, have, ['source', 'nydus image']));
    result.ok = problems.length === 0;
    log.info({ target: result.target, ok: result.ok, blobs: result.blobs, chunks: result.verifiedChunks, entries: result.entries }, 'checked');
    return result;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
    await Promise.all([src?.client.close(), tgt.client.close()]);
  }
}
