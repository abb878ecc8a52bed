/**
 * --merge-platform: one index holding both the source images and the nydus images, as upstream's
 * converter builds it. Each source image gets an empty gzip layer prepended (and a matching diff_id
 * and history entry) so runtimes never share unpacked layers between it and other OCI images; it is
 * copied into the target repository with that change. Nydus entries are marked by the caller.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import type { Manifest, RegistryClient } from '../registry/client';
import { contentDigest } from '../registry/content-digest';
import { DOCKER_CONFIG, DOCKER_LAYER_GZIP, Descriptor, ImageConfig, ImageIndex, ImageManifest, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST } from '../registry/media';
import { ANNOTATION_EMPTY_LAYER, ANNOTATION_SOURCE_DIGEST } from './nydus-manifest';

/** An empty tar is two zero blocks; its sha256 is the empty layer's diff_id. */
const EMPTY_TAR = Buffer.alloc(1024);
const EMPTY_TAR_GZ = gzipSync(EMPTY_TAR);

/** Copies one blob from the source repository to the target unless the target has it. */
async function copyBlob(from: RegistryClient, fromRepo: string, to: RegistryClient, toRepo: string, desc: Descriptor): Promise<void> {
  if (await to.hasBlob(toRepo, desc.digest)) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusify-copy-'));
  try {
    const file = path.join(dir, 'blob');
    await pipeline(await from.getBlob(fromRepo, desc.digest, { size: desc.size }), fs.createWriteStream(file));
    await to.pushBlob(toRepo, desc.digest, file, desc.size);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

async function pushSmall(client: RegistryClient, repo: string, data: Buffer): Promise<string> {
  const digest = contentDigest(data);
  if (await client.hasBlob(repo, digest)) return digest;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusify-small-'));
  try {
    fs.writeFileSync(path.join(dir, 'blob'), data);
    await client.pushBlob(repo, digest, path.join(dir, 'blob'), data.length);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return digest;
}

/** The source image with the empty layer prepended, pushed to the target by digest; returns its index entry. */
export async function prependEmptyLayer(
  from: RegistryClient, fromRepo: string, to: RegistryClient, toRepo: string, srcDesc: Descriptor, src: Manifest,
): Promise<Descriptor> {
  const manifest = src.json as ImageManifest;
  const oci = src.mediaType === OCI_MANIFEST;
  for (const l of manifest.layers) await copyBlob(from, fromRepo, to, toRepo, l);
  const config = JSON.parse((await from.getBlobBuffer(fromRepo, manifest.config.digest)).toString('utf8')) as ImageConfig;
  config.rootfs = { type: 'layers', diff_ids: [contentDigest(EMPTY_TAR), ...(config.rootfs?.diff_ids ?? [])] };
  // No timestamp, so converting the same image twice gives the same digests.
  config.history = [{ created_by: 'Nydus Converter', comment: 'Nydus Empty Layer' }, ...(config.history ?? [])];
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = await pushSmall(to, toRepo, configBytes);
  const emptyDigest = await pushSmall(to, toRepo, EMPTY_TAR_GZ);
  const out: ImageManifest = {
    ...manifest,
    config: { mediaType: oci ? OCI_CONFIG : DOCKER_CONFIG, digest: configDigest, size: configBytes.length },
    layers: [{ mediaType: oci ? OCI_LAYER_GZIP : DOCKER_LAYER_GZIP, digest: emptyDigest, size: EMPTY_TAR_GZ.length, annotations: { [ANNOTATION_EMPTY_LAYER]: 'true' } }, ...manifest.layers],
    annotations: { ...(manifest.annotations ?? {}), [ANNOTATION_SOURCE_DIGEST]: src.digest },
  };
  const body = Buffer.from(JSON.stringify(out));
  const digest = await to.putManifest(toRepo, contentDigest(body), src.mediaType, body);
  return {
    mediaType: src.mediaType, digest, size: body.length,
    ...(srcDesc.platform ? { platform: srcDesc.platform } : { platform: { os: config.os, architecture: config.architecture } }),
    annotations: { ...(srcDesc.annotations ?? {}), [ANNOTATION_SOURCE_DIGEST]: src.digest },
  };
}

export function mergedIndex(sourceEntries: Descriptor[], nydusEntries: Descriptor[]): ImageIndex {
  return { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [...sourceEntries, ...nydusEntries] };
}
