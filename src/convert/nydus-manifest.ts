/**
 * The nydus image layout in a registry (what upstream nydusify writes and the snapshotter reads):
 *   layers[0..n-1]  data blobs: mediaType application/vnd.oci.image.layer.nydus.blob.v1,
 *                   digest sha256:<blobId>, annotation containerd.io/snapshot/nydus-blob: "true"
 *   layers[n]       the bootstrap: a tar.gz holding image/image.boot, annotated
 *                   containerd.io/snapshot/nydus-bootstrap: "true" and nydus-fs-version: "6"
 *   config          the source config with rootfs.diff_ids matching those layers (a blob's diff_id
 *                   is its digest: it is not compressed as a whole), history kept
 */
import { Descriptor, ImageConfig, ImageManifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST } from '../registry/media';

export const NYDUS_BLOB_MEDIA_TYPE = 'application/vnd.oci.image.layer.nydus.blob.v1';
export const ANNOTATION_NYDUS_BLOB = 'containerd.io/snapshot/nydus-blob';
export const ANNOTATION_NYDUS_BOOTSTRAP = 'containerd.io/snapshot/nydus-bootstrap';
export const ANNOTATION_FS_VERSION = 'containerd.io/snapshot/nydus-fs-version';
export const BOOTSTRAP_PATH_IN_TAR = 'image/image.boot';

export function blobDescriptor(blobId: string, size: number): Descriptor {
  return { mediaType: NYDUS_BLOB_MEDIA_TYPE, digest: `sha256:${blobId}`, size, annotations: { [ANNOTATION_NYDUS_BLOB]: 'true' } };
}

export function bootstrapDescriptor(digest: string, size: number): Descriptor {
  return { mediaType: OCI_LAYER_GZIP, digest, size, annotations: { [ANNOTATION_NYDUS_BOOTSTRAP]: 'true', [ANNOTATION_FS_VERSION]: '6' } };
}

/** The nydus config: the source's, with diff_ids for the nydus layers; history untouched. */
export function nydusConfig(source: ImageConfig, blobs: Descriptor[], bootstrapDiffId: string): ImageConfig {
  return { ...source, rootfs: { type: 'layers', diff_ids: [...blobs.map((b) => b.digest), bootstrapDiffId] } };
}

export function nydusManifest(config: Descriptor, blobs: Descriptor[], bootstrap: Descriptor): ImageManifest {
  return { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...config, mediaType: OCI_CONFIG }, layers: [...blobs, bootstrap] };
}

/**
 * Problems with a manifest that claims to be a nydus image (empty when it is well formed): layer
 * media types and annotations, and diff_ids against the layers.
 */
export function layoutProblems(manifest: ImageManifest, config: ImageConfig, bootstrapDiffId?: string): string[] {
  const p: string[] = [];
  const layers = manifest.layers ?? [];
  if (layers.length === 0) return ['manifest has no layers'];
  const boot = layers[layers.length - 1];
  if (boot.annotations?.[ANNOTATION_NYDUS_BOOTSTRAP] !== 'true') p.push(`last layer ${boot.digest} lacks ${ANNOTATION_NYDUS_BOOTSTRAP}: "true"`);
  if (boot.annotations?.[ANNOTATION_FS_VERSION] !== '6') p.push(`last layer ${boot.digest} lacks ${ANNOTATION_FS_VERSION}: "6"`);
  if (boot.mediaType !== OCI_LAYER_GZIP && boot.mediaType !== 'application/vnd.docker.image.rootfs.diff.tar.gzip') p.push(`bootstrap layer has media type ${boot.mediaType}`);
  layers.slice(0, -1).forEach((l, i) => {
    if (l.mediaType !== NYDUS_BLOB_MEDIA_TYPE) p.push(`layer ${i + 1} (${l.digest}) has media type ${l.mediaType}, expected ${NYDUS_BLOB_MEDIA_TYPE}`);
    if (l.annotations?.[ANNOTATION_NYDUS_BLOB] !== 'true') p.push(`layer ${i + 1} (${l.digest}) lacks ${ANNOTATION_NYDUS_BLOB}: "true"`);
  });
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layers.length) p.push(`config has ${diffIds.length} diff_ids for ${layers.length} layers`);
  else {
    layers.slice(0, -1).forEach((l, i) => {
      if (diffIds[i] !== l.digest) p.push(`diff_id ${i + 1} is ${diffIds[i]}, expected the blob digest ${l.digest}`);
    });
    if (bootstrapDiffId && diffIds[diffIds.length - 1] !== bootstrapDiffId) p.push(`bootstrap diff_id is ${diffIds[diffIds.length - 1]}, the layer's tar has ${bootstrapDiffId}`);
  }
  return p;
}
