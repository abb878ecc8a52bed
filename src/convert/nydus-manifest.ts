/**
 * The nydus image layout in a registry, as upstream nydusify (nydus-snapshotter's converter under
 * acceleration-service) writes it and the snapshotter reads it:
 *   layers[0..n-1]  data blobs: mediaType application/vnd.oci.image.layer.nydus.blob.v1,
 *                   digest sha256:<blobId>, annotation containerd.io/snapshot/nydus-blob: "true"
 *   layers[n]       the bootstrap: a tar.gz holding image/image.boot, annotated
 *                   containerd.io/snapshot/nydus-bootstrap: "true" and nydus-fs-version: "6";
 *                   Docker's gzip layer type unless the manifest is OCI (source OCI, or --oci)
 *   config          the source config with rootfs.diff_ids matching those layers (a blob's diff_id
 *                   is its digest: it is not compressed as a whole) and the converter's history
 *                   entry appended
 *   annotations     the source manifest digest and reference, the fs version
 * With blobs in a storage backend (s3, oss, localfs) layers[] is the bootstrap alone, diff_ids its
 * diff_id, history the converter's entry alone (nydus-snapshotter pkg/converter convertManifest).
 */
import {
  DOCKER_CONFIG, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, Descriptor, ImageConfig, ImageManifest, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST,
} from '../registry/media';

export const NYDUS_BLOB_MEDIA_TYPE = 'application/vnd.oci.image.layer.nydus.blob.v1';
export const ANNOTATION_NYDUS_BLOB = 'containerd.io/snapshot/nydus-blob';
export const ANNOTATION_NYDUS_BOOTSTRAP = 'containerd.io/snapshot/nydus-bootstrap';
export const ANNOTATION_FS_VERSION = 'containerd.io/snapshot/nydus-fs-version';
export const ANNOTATION_SOURCE_DIGEST = 'containerd.io/snapshot/nydus-source-digest';
export const ANNOTATION_SOURCE_REFERENCE = 'containerd.io/snapshot/nydus-source-reference';
export const ANNOTATION_EMPTY_LAYER = 'containerd.io/snapshot/nydus-empty-layer';
export const BOOTSTRAP_PATH_IN_TAR = 'image/image.boot';
/** --merge-platform: the nydus manifest's index entry and config carry these types. */
export const NYDUS_ARTIFACT_TYPE = 'application/vnd.nydus.image.manifest.v1+json';
export const NYDUS_CONFIG_MEDIA_TYPE = 'application/vnd.nydus.image.config.v1+json';
/** The index entry's platform feature older upstream releases (and our snapshotter) look for. */
export const NYDUS_OS_FEATURE = 'nydus.remoteimage.v1';
/** The history entry upstream appends for the bootstrap layer. */
export const BOOTSTRAP_HISTORY = { created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' };

/** Media types of one converted manifest: OCI or Docker schema 2. */
export interface LayoutTypes {
  manifest: string;
  config: string;
  bootstrap: string;
}

export function layoutTypes(oci: boolean): LayoutTypes {
  return oci
    ? { manifest: OCI_MANIFEST, config: OCI_CONFIG, bootstrap: OCI_LAYER_GZIP }
    : { manifest: DOCKER_MANIFEST, config: DOCKER_CONFIG, bootstrap: DOCKER_LAYER_GZIP };
}

export function blobDescriptor(blobId: string, size: number): Descriptor {
  return { mediaType: NYDUS_BLOB_MEDIA_TYPE, digest: `sha256:${blobId}`, size, annotations: { [ANNOTATION_NYDUS_BLOB]: 'true' } };
}

export function bootstrapDescriptor(digest: string, size: number, mediaType: string): Descriptor {
  return { mediaType, digest, size, annotations: { [ANNOTATION_NYDUS_BOOTSTRAP]: 'true', [ANNOTATION_FS_VERSION]: '6' } };
}

/**
 * The nydus config: the source's, with diff_ids for the nydus layers and the bootstrap's history
 * entry appended (`keepHistory`) or alone (blobs in a storage backend, as upstream).
 */
export function nydusConfig(source: ImageConfig, blobs: Descriptor[], bootstrapDiffId: string, keepHistory = true): ImageConfig {
  return {
    ...source,
    rootfs: { type: 'layers', diff_ids: [...blobs.map((b) => b.digest), bootstrapDiffId] },
    history: [...(keepHistory ? (source.history ?? []) : []), BOOTSTRAP_HISTORY],
  };
}

export function nydusManifest(
  types: LayoutTypes, config: Descriptor, blobs: Descriptor[], bootstrap: Descriptor, annotations: Record<string, string>, subject?: Descriptor,
): ImageManifest {
  return {
    schemaVersion: 2, mediaType: types.manifest, config, layers: [...blobs, bootstrap], annotations,
    ...(subject ? { subject } : {}),
  };
}

const GZIP_LAYER_TYPES = [OCI_LAYER_GZIP, DOCKER_LAYER_GZIP];

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
  if (!GZIP_LAYER_TYPES.includes(boot.mediaType)) p.push(`bootstrap layer has media type ${boot.mediaType}`);
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
