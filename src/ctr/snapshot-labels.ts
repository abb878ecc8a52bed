/**
 * What a layer's snapshot is called and labelled when ctr-remote unpacks an image.
 *
 *  - chain IDs as the OCI image spec defines them: ChainID(L0) = DiffID(L0),
 *    ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
 *  - labels: those containerd's unpacker passes (`containerd.io/snapshot.ref` = chain ID and the
 *    layer annotations under `containerd.io/snapshot/`, which carry the nydus markers), plus the
 *    image reference, layer digest and the layers from this one up, under both names remote
 *    snapshotters read: `cri.*` (containerd's pkg/snapshotters AppendInfoHandlerWrapper, what CRI
 *    sets; upstream nydus-snapshotter reads it) and `remote/stargz.*` (what stargz's ctr-remote
 *    sets; our snapshotter reads either).
 */
import { createHash } from 'node:crypto';
import * as L from '../snapshotter/labels';

export const CRI_MANIFEST_DIGEST = 'containerd.io/snapshot/cri.manifest-digest';
/** containerd refuses labels over 4096 bytes (key + value); the layer list is cut to fit. */
const MAX_LABEL = 4096;

export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev ? `sha256:${createHash('sha256').update(`${prev} ${d}`).digest('hex')}` : d);
  }
  return out;
}

/** `digests` joined with commas, as many as fit in one label with key `key`. */
function layerList(key: string, digests: string[]): string {
  let v = '';
  for (const d of digests) {
    const next = v ? `${v},${d}` : d;
    if (key.length + next.length > MAX_LABEL) break;
    v = next;
  }
  return v;
}

export interface LayerContext {
  /** Image reference as pulled. */
  ref: string;
  manifestDigest: string;
  /** Layer digests of the manifest, bottom first. */
  layers: string[];
}

/** The labels for preparing (and committing) the snapshot of layer `i`. */
export function layerSnapshotLabels(ctx: LayerContext, i: number, chainId: string, annotations: Record<string, string> = {}): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(annotations)) if (k.startsWith('containerd.io/snapshot/')) labels[k] = v;
  const above = ctx.layers.slice(i);
  return {
    ...labels,
    [L.TARGET_REF]: chainId,
    [L.CRI_IMAGE_REF]: ctx.ref,
    [L.CRI_LAYER_DIGEST]: ctx.layers[i],
    [L.CRI_IMAGE_LAYERS]: layerList(L.CRI_IMAGE_LAYERS, above),
    [CRI_MANIFEST_DIGEST]: ctx.manifestDigest,
    [L.STARGZ_REFERENCE]: ctx.ref,
    [L.STARGZ_DIGEST]: ctx.layers[i],
    [L.STARGZ_LAYERS]: layerList(L.STARGZ_LAYERS, above),
  };
}
