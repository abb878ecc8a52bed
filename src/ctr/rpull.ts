/**
 * `ctr-remote images rpull`: pull an image into containerd through its gRPC API, letting a
 * remote snapshotter (nydus) skip the layers it serves lazily. The steps are those of containerd's
 * own pull + unpack (client.Pull, unpacker.go), done from here:
 *
 *  1. resolve the reference at the registry (an index is resolved to the platform's manifest), while
 *     containerd is asked whether it knows the snapshotter and creates the lease;
 *  2. inside the lease, write config (fetched while the lease is made), manifest (and index) to the
 *     content store with the GC labels that tie them together;
 *  3. for each layer, bottom up: its chain ID exists → skip; else Prepare
 *     `extract-<unique> <chainID>` with the layer labels (snapshot-labels.ts). AlreadyExists means
 *     the snapshotter committed a remote snapshot (a nydus blob): nothing is downloaded. Otherwise
 *     the blob is written to the content store, applied by containerd's diff service onto the
 *     mounts (this is how the nydus bootstrap layer lands in its snapshot), its DiffID checked,
 *     and the snapshot committed under the chain ID. A nydus bootstrap layer (small, and always
 *     unpacked) starts downloading as soon as the manifest is known, beside steps 2 and 3, so the
 *     download is not one more round trip on the path;
 *  4. label the config with `containerd.io/gc.ref.snapshot.<snapshotter>` = top chain ID, create
 *     (or update) the image record, drop the lease.
 *
 * Contract: resolves with the image record's target once the image is usable by
 * `ctr run --snapshotter <name>`; rejects with one-line errors (RegistryError, ContainerdError, or
 * Error naming the layer). A layer snapshot prepared but not committed is removed on failure.
 */
import * as crypto from 'node:crypto';
import type { Readable } from 'node:stream';
import { Credentials, RegistryClient, formatReference, parseReference, referenceTarget } from '../registry';
import { choosePlatform, formatPlatform, parsePlatform, DEFAULT_PLATFORM } from '../registry/platform';
import { Descriptor as OciDescriptor, ImageConfig, ImageIndex, ImageManifest, isIndex } from '../registry/media';
import { ContainerdClient, ContainerdError, Descriptor, Mount } from './containerd-client';
import { Status } from './grpc-client';
import type { TransportOptions } from '../registry/transport';
import { chainIds, layerSnapshotLabels } from './snapshot-labels';
import { NYDUS_BOOTSTRAP } from '../snapshotter/labels';
import type { Progress } from './progress';

export interface RpullOptions {
  ref: string;
  snapshotter: string;
  plainHttp?: boolean;
  /** TLS to the registry, as ctr's --tlscacert, --tlscert, --tlskey and --skip-verify. */
  tls?: Pick<TransportOptions, 'ca' | 'cert' | 'key' | 'skipVerify'>;
  credentials?: Credentials;
  platform?: string;
  progress: Progress;
}

/** Lease lifetime if this process dies before deleting it (containerd's client uses 24 h). */
const LEASE_EXPIRY_MS = 24 * 3600_000;
/** Applying a large layer through the diff service can take long on a loaded machine. */
const APPLY_TIMEOUT_MS = 30 * 60_000;

const toCtd = (d: OciDescriptor): Descriptor => ({ media_type: d.mediaType, digest: d.digest, size: String(d.size), annotations: d.annotations ?? {} });

function uniquePart(): string {
  return `${process.hrtime.bigint() % 1_000_000_000n}-${crypto.randomBytes(3).toString('base64url')}`;
}

/** Fails with one line when containerd does not know `name` or cannot reach it. */
async function checkSnapshotter(ctd: ContainerdClient, name: string): Promise<void> {
  try {
    await ctd.call('snapshots', 'Stat', { snapshotter: name, key: `ctr-remote-probe-${uniquePart()}` }, 30_000);
  } catch (err) {
    if (!(err instanceof ContainerdError)) throw err;
    if (err.code === Status.NOT_FOUND) return;
    if (/not loaded/.test(err.details)) throw new Error(`snapshotter "${name}" is not loaded in containerd at ${ctd.address} (see ctr plugin ls)`);
    if (err.code === Status.UNAVAILABLE) {
      const why = err.details;
      // Our gRPC client's connection error names the socket when containerd itself is not there;
      // otherwise containerd could not reach the (proxy) snapshotter.
      if (why.includes(ctd.address)) throw new Error(`cannot reach containerd at ${ctd.address}: ${why}`);
      throw new Error(`snapshotter "${name}" is unavailable in containerd at ${ctd.address}: ${why}`);
    }
    throw err;
  }
}

export async function rpull(ctd: ContainerdClient, o: RpullOptions): Promise<Descriptor> {
  const started = Date.now();
  const r = parseReference(o.ref);
  const name = formatReference(r);
  // No GET /v2/ first: the manifest request learns the challenge from its 401 if there is one, as
  // containerd's resolver does (one round trip less against an open registry).
  const reg = new RegistryClient({ registry: r.registry, insecure: o.plainHttp, credentials: o.credentials, ...o.tls, probeChallenge: false });
  const leaseId = `ctr-remote-${uniquePart()}`;
  let leased = false;
  // The lease is created beside the first requests, one round trip less on the way; their errors
  // are the ones reported, and a lease created for a pull that fails is deleted below.
  const lease = ctd.call('leases', 'Create', { id: leaseId, labels: { 'containerd.io/gc.expire': new Date(Date.now() + LEASE_EXPIRY_MS).toISOString() } }).then(() => {
    leased = true;
  });
  lease.catch(() => undefined);
  let early = new Map<string, EarlyDownload>();
  try {
    const [top] = await Promise.all([reg.getManifestRaw(r.repository, referenceTarget(r)), checkSnapshotter(ctd, o.snapshotter)]);
    let manifest = top;
    const platform = parsePlatform(o.platform ?? DEFAULT_PLATFORM);
    if (isIndex(top.mediaType)) {
      const entry = choosePlatform((top.json as ImageIndex).manifests ?? [], platform);
      if (!entry) throw new Error(`${name}: no manifest for platform ${formatPlatform(platform)}`);
      manifest = await reg.getManifestRaw(r.repository, entry.digest);
      if (isIndex(manifest.mediaType)) throw new Error(`${name}: nested index ${entry.digest} is not supported`);
    }
    const target: Descriptor = { media_type: top.mediaType, digest: top.digest, size: String(top.body.length) };
    o.progress.line(`${name}: resolved ${top.digest}`);

    const source = { [`containerd.io/distribution.source.${r.registry}`]: r.repository };
    const m = manifest.json as ImageManifest;
    early = earlyBootstraps(reg, r.repository, m.layers);
    const config = reg.getBlobBuffer(r.repository, m.config.digest); // beside the lease, if it is still on its way
    config.catch(() => undefined);
    await lease;
    ctd.withLease(leaseId);
    const configBuf = await config;
    const image = JSON.parse(configBuf.toString('utf8')) as ImageConfig;
    const diffIds = image.rootfs?.diff_ids ?? [];
    if (diffIds.length !== m.layers.length) throw new Error(`${name}: ${m.layers.length} layers but ${diffIds.length} diff_ids in the config`);
    // Children first, so a parent's GC labels never point at content written after it.
    await ctd.writeContent(`config-${m.config.digest}`, m.config.digest, configBuf.length, configBuf, source);
    o.progress.item('config', m.config.digest, 'done');
    const manifestLabels: Record<string, string> = { ...source, 'containerd.io/gc.ref.content.config': m.config.digest };
    m.layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
    await ctd.writeContent(`manifest-${manifest.digest}`, manifest.digest, manifest.body.length, manifest.body, manifestLabels);
    o.progress.item('manifest', manifest.digest, 'done');
    if (top !== manifest) {
      const indexLabels: Record<string, string> = { ...source };
      (top.json as ImageIndex).manifests.forEach((d, i) => (indexLabels[`containerd.io/gc.ref.content.m.${i}`] = d.digest));
      await ctd.writeContent(`index-${top.digest}`, top.digest, top.body.length, top.body, indexLabels);
      o.progress.item('index', top.digest, 'done');
    }

    o.progress.line(`unpacking ${formatPlatform({ os: image.os, architecture: image.architecture, variant: image.variant })} ${manifest.digest}...`);
    const chain = chainIds(diffIds);
    const ctx = { ref: name, manifestDigest: manifest.digest, layers: m.layers.map((l) => l.digest) };
    for (let i = 0; i < m.layers.length; i++) {
      const layer = m.layers[i];
      const status = await unpackLayer(ctd, reg, o, {
        layer, diffId: diffIds[i], chainId: chain[i], parent: i > 0 ? chain[i - 1] : '',
        labels: layerSnapshotLabels(ctx, i, chain[i], layer.annotations), source, repo: r.repository, early: early.get(layer.digest),
      });
      o.progress.item('layer', layer.digest, status);
    }
    await ctd.setContentLabels(m.config.digest, { [`containerd.io/gc.ref.snapshot.${o.snapshotter}`]: chain[chain.length - 1] ?? '' });

    const record = { name, labels: {}, target };
    try {
      await ctd.call('images', 'Create', { image: record });
    } catch (err) {
      if (!(err instanceof ContainerdError && err.code === Status.ALREADY_EXISTS)) throw err;
      await ctd.call('images', 'Update', { image: record, update_mask: { paths: ['target'] } });
    }
    o.progress.done(top.digest, Date.now() - started);
    return target;
  } finally {
    for (const e of early.values()) e.cancel();
    ctd.withLease(undefined);
    await lease.catch(() => undefined);
    if (leased) await ctd.call('leases', 'Delete', { id: leaseId }).catch(() => undefined);
    await reg.close();
  }
}

/** Bootstrap layers larger than this are streamed when their turn comes, not held in memory early. */
const EARLY_MAX_BYTES = 64 << 20;
/** A layer download started ahead of its turn. */
interface EarlyDownload {
  bytes: Promise<Buffer>;
  /** Stops the download (the layer turned out to exist). */
  cancel(): void;
}

/**
 * Starts downloading every nydus bootstrap layer of the manifest now (they are always unpacked
 * unless already there, and small); one whose layer turns out to exist is cancelled.
 */
function earlyBootstraps(reg: RegistryClient, repo: string, layers: OciDescriptor[]): Map<string, EarlyDownload> {
  const out = new Map<string, EarlyDownload>();
  for (const l of layers) {
    if (l.annotations?.[NYDUS_BOOTSTRAP] !== 'true' || l.size > EARLY_MAX_BYTES || out.has(l.digest)) continue;
    let cancelled = false;
    let stream: Readable | undefined;
    const bytes = (async () => {
      stream = await reg.getBlob(repo, l.digest, { size: l.size });
      if (cancelled) stream.destroy();
      const parts: Buffer[] = [];
      for await (const c of stream as AsyncIterable<Buffer>) parts.push(c);
      return Buffer.concat(parts);
    })();
    bytes.catch(() => undefined); // A cancelled or unused download must not become an unhandled rejection.
    out.set(l.digest, {
      bytes,
      cancel() {
        cancelled = true;
        stream?.destroy();
      },
    });
  }
  return out;
}

interface LayerJob {
  /** The layer's bytes, already downloading (a nydus bootstrap). */
  early?: EarlyDownload;
  layer: OciDescriptor;
  diffId: string;
  chainId: string;
  parent: string;
  labels: Record<string, string>;
  source: Record<string, string>;
  repo: string;
}

/** Unpacks one layer (step 3 above); returns the status word for the progress line. */
async function unpackLayer(ctd: ContainerdClient, reg: RegistryClient, o: RpullOptions, j: LayerJob): Promise<string> {
  const sn = o.snapshotter;
  const exists = async (): Promise<boolean> =>
    ctd.call('snapshots', 'Stat', { snapshotter: sn, key: j.chainId }).then(
      () => true,
      (err) => {
        if (err instanceof ContainerdError && err.code === Status.NOT_FOUND) return false;
        throw err;
      },
    );
  if (await exists()) {
    j.early?.cancel();
    return 'exists';
  }
  const key = `extract-${uniquePart()} ${j.chainId}`;
  let mounts: Mount[];
  try {
    mounts = (await ctd.call('snapshots', 'Prepare', { snapshotter: sn, key, parent: j.parent, labels: j.labels })).mounts;
  } catch (err) {
    if (err instanceof ContainerdError && err.code === Status.ALREADY_EXISTS && (await exists())) {
      j.early?.cancel();
      return 'remote snapshot (not downloaded)';
    }
    throw err;
  }
  try {
    if (!(await ctd.contentInfo(j.layer.digest))) {
      const early = j.early;
      const open = early ? () => early.bytes : async () => (await reg.getBlob(j.repo, j.layer.digest)) as AsyncIterable<Buffer>;
      await ctd.writeContent(`layer-${j.layer.digest}`, j.layer.digest, j.layer.size, open, j.source, (n) => o.progress.bytes(n));
    }
    j.early?.cancel(); // stops an early download containerd turned out not to need (no-op once it is read)
    const applied = (await ctd.call('diff', 'Apply', { diff: toCtd(j.layer), mounts }, APPLY_TIMEOUT_MS)).applied as Descriptor;
    if (applied.digest !== j.diffId) throw new Error(`layer ${j.layer.digest}: unpacked to ${applied.digest}, but the config says ${j.diffId}`);
    try {
      await ctd.call('snapshots', 'Commit', { snapshotter: sn, name: j.chainId, key, labels: j.labels });
    } catch (err) {
      if (err instanceof ContainerdError && err.code === Status.ALREADY_EXISTS) {
        await ctd.call('snapshots', 'Remove', { snapshotter: sn, key }).catch(() => undefined);
        return 'exists';
      }
      throw err;
    }
    await ctd.setContentLabels(j.layer.digest, { 'containerd.io/uncompressed': applied.digest });
    return `done (${j.layer.size} bytes)`;
  } catch (err) {
    await ctd.call('snapshots', 'Remove', { snapshotter: sn, key }).catch(() => undefined);
    throw err;
  }
}
