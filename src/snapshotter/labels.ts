/**
 * The snapshot labels the snapshotter reads and writes, and how a layer is recognised.
 *
 * Three kinds of client prepare nydus layers, each with its own labels:
 *  - any containerd unpack passes the manifest layer annotations, which carry the nydus markers
 *    (`nydus-blob`, `nydus-bootstrap`);
 *  - CRI (and nerdctl) add `cri.image-ref`, `cri.layer-digest`, `cri.image-layers`;
 *  - `ctr-remote image rpull` (stargz-snapshotter's client) adds `remote/stargz.reference`,
 *    `remote/stargz.digest`, `remote/stargz.layers`; our `bin/ctr-remote` adds both sets.
 * The image reference and layer digest are taken from whichever set is present.
 */

/** Set by containerd's unpacker: the chainID the client wants committed (remote-snapshot candidate). */
export const TARGET_REF = 'containerd.io/snapshot.ref';
export const NYDUS_BLOB = 'containerd.io/snapshot/nydus-blob';
export const NYDUS_BOOTSTRAP = 'containerd.io/snapshot/nydus-bootstrap';
export const CRI_IMAGE_REF = 'containerd.io/snapshot/cri.image-ref';
export const CRI_LAYER_DIGEST = 'containerd.io/snapshot/cri.layer-digest';
export const CRI_IMAGE_LAYERS = 'containerd.io/snapshot/cri.image-layers';
export const STARGZ_REFERENCE = 'containerd.io/snapshot/remote/stargz.reference';
export const STARGZ_DIGEST = 'containerd.io/snapshot/remote/stargz.digest';
export const STARGZ_LAYERS = 'containerd.io/snapshot/remote/stargz.layers';
/** Put on committed remote snapshots (BuildKit and stargz tooling look for it). */
export const REMOTE = 'containerd.io/snapshot/remote';

type Labels = Record<string, string>;

export const isNydusBlob = (l: Labels): boolean => l[NYDUS_BLOB] === 'true';
export const isNydusBootstrap = (l: Labels): boolean => l[NYDUS_BOOTSTRAP] === 'true';

/** The image reference from CRI or ctr-remote labels, if any client gave one. */
export function imageRef(l: Labels): string | undefined {
  return l[CRI_IMAGE_REF] || l[STARGZ_REFERENCE] || undefined;
}

/** The compressed digest of this layer from CRI or ctr-remote labels. */
export function layerDigest(l: Labels): string | undefined {
  return l[CRI_LAYER_DIGEST] || l[STARGZ_DIGEST] || undefined;
}

/** The labels worth keeping on a committed remote snapshot: everything containerd forwarded. */
export function inherited(l: Labels): Labels {
  const out: Labels = {};
  for (const [k, v] of Object.entries(l)) if (k === TARGET_REF || k.startsWith('containerd.io/snapshot/')) out[k] = v;
  return out;
}
