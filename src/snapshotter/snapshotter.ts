/**
 * The snapshotter: containerd's overlayfs semantics for plain layers plus remote snapshots for
 * nydus layers. The lifecycle, as containerd drives it:
 *
 *  1. Pulling layer 1 (a plain OCI layer): `Prepare("ns/1/extract-… sha256:c1", "")` returns a bind
 *     mount of `snapshots/<id>/fs`; containerd untars the layer into it and calls
 *     `Commit("ns/2/sha256:c1", "ns/1/extract-…")`. The id and directory stay, the key changes.
 *  2. Layer 2: `Prepare(…, parent "ns/2/sha256:c1")` returns an overlay with the parent's `fs` as
 *     lowerdir; containerd applies the diff into the upper dir and commits it.
 *  3. A nydus data layer arrives with `containerd.io/snapshot.ref` and the `nydus-blob` marker:
 *     Prepare commits an empty snapshot under the target chainID itself and answers AlreadyExists,
 *     so containerd never downloads the blob.
 *  4. The nydus bootstrap layer (`nydus-bootstrap`) is small: it is prepared like a plain layer and
 *     containerd unpacks `image/image.boot` into it. With `mount_on_pull` (ours, off by default as
 *     upstream mounts in step 5) its Commit starts the rafs mount in the background, so nydusd's
 *     mount and prefetch run while the pull finishes and the container is created; step 5 then
 *     finds the instance mounted (or joins the mount under way). A failure is logged, and step 5
 *     mounts again.
 *  5. Running a container: `Prepare("ns/9/<id>", parent top chainID)`. If a parent in the chain is
 *     a nydus bootstrap layer, the rafs mounter mounts its bootstrap in nydusd and the overlay's
 *     lowerdir is that rafs mountpoint, so files are fetched on first read. With
 *     `enable_nydus_overlayfs` that overlay is answered as a `fuse.nydus-overlayfs` mount carrying
 *     the image's bootstrap, config and snapshot dir for VM runtimes (kata-mounts.ts).
 *  6. Removal: containerd's GC calls `Remove` leaves first, then `Cleanup`, which deletes
 *     directories no record owns and unmounts rafs instances no snapshot owns.
 *
 * Contracts (as containerd's `snapshots.Snapshotter`):
 *  - Prepare/View fail with AlreadyExists for an existing key, NotFound for a missing parent and
 *    InvalidArgument for a parent that is not committed.
 *  - Mounts works on active and view snapshots only (FailedPrecondition otherwise).
 *  - Commit needs an active key (FailedPrecondition) and a free name (AlreadyExists); the committed
 *    snapshot keeps the directory and replaces its labels with the commit labels.
 *  - Remove fails with FailedPrecondition while a child exists.
 *  - Update accepts the field paths `labels` and `labels.<key>` (InvalidArgument otherwise).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { logger } from '../util/log';
import { alreadyExists, failedPrecondition, invalidArgument, SnapshotError } from './errors';
import { compileFilters } from './filters';
import * as L from './labels';
import { MetaStore, SnapshotInfo, SnapshotRecord } from './store';
import { collectBlobCache } from './cache-gc';
import { diskUsage, Usage } from './usage';
import { detectFsVersion, nydusOverlayMount, withoutSecrets } from './kata-mounts';

const log = logger('snapshotter');

/** One entry of a container's mount list: `mount -t type -o options source target`. */
export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

/** A nydus image's metadata layer, as the rafs mounter needs it. */
export interface MetaLayer {
  /** Numeric id of the bootstrap layer's snapshot, as a string: names the rafs instance. */
  snapshotId: string;
  /** Path of the RAFS bootstrap file inside the snapshot. */
  bootstrap: string;
  /** Labels of the bootstrap snapshot (image reference, layer digests). */
  labels: Record<string, string>;
}

/**
 * Mounts rafs instances for nydus images (the daemon manager implements it).
 * `mount` is idempotent and resolves with the instance's mountpoint once the daemon serves it;
 * `umount` of an unknown instance is a no-op; `mounted` lists the snapshot ids with instances.
 */
export interface RafsMounter {
  mount(meta: MetaLayer): Promise<string>;
  umount(snapshotId: string): Promise<void>;
  mounted(): string[];
  /** The nydusd config a mounted instance runs with (undefined when it is not mounted). */
  config(snapshotId: string): Record<string, unknown> | undefined;
}

export interface SnapshotterOptions {
  root: string;
  /** Absent: nydus layers are unpacked like plain ones (no lazy loading). */
  rafs?: RafsMounter;
  /** The metadata store to use (default: `<root>/metadata.db`); closed by close(). */
  store?: MetaStore;
  /** Blob cache collected on Cleanup once it is larger than maxBytes (0: never). */
  cache?: { dir: string; maxBytes: number };
  /**
   * `[snapshot] enable_nydus_overlayfs`: rootfs mounts over a nydus image become one
   * `fuse.<helper>` mount carrying `extraoption=` (kata-mounts.ts); `helper` is
   * `nydus_overlayfs_path`.
   */
  nydusOverlayfs?: { helper: string };
  /** `[snapshot] mount_on_pull`: mount an image when its bootstrap layer is committed (step 4). */
  mountOnPull?: boolean;
}

/** Where nydusify puts the bootstrap inside the metadata layer (current and legacy paths). */
const BOOTSTRAP_PATHS = ['image/image.boot', 'image.boot'];

/** The first of `paths` that exists, looked up without blocking the event loop (the mount path). */
async function firstFile(paths: string[]): Promise<string | undefined> {
  for (const p of paths) if (await fs.promises.access(p).then(() => true, () => false)) return p;
  return undefined;
}

export class Snapshotter {
  readonly root: string;
  private readonly store: MetaStore;
  private readonly rafs?: RafsMounter;
  private readonly cache?: { dir: string; maxBytes: number };
  private readonly nydusOverlayfs?: { helper: string };
  private readonly mountOnPull: boolean;
  /** Mounts started by a bootstrap layer's Commit, by snapshot id, until they settle. */
  private readonly premounts = new Map<number, Promise<void>>();
  private readonly snapshotsDir: string;

  constructor(opts: SnapshotterOptions) {
    this.root = opts.root;
    this.rafs = opts.rafs;
    this.cache = opts.cache;
    this.nydusOverlayfs = opts.nydusOverlayfs;
    this.mountOnPull = opts.mountOnPull ?? false;
    this.snapshotsDir = path.join(this.root, 'snapshots');
    fs.mkdirSync(this.snapshotsDir, { recursive: true, mode: 0o700 });
    this.store = opts.store ?? new MetaStore(path.join(this.root, 'metadata.db'));
  }

  close(): void {
    this.store.close();
  }

  private dir(id: number): string {
    return path.join(this.snapshotsDir, String(id));
  }

  /** The bootstrap file unpacked into bootstrap layer `id`, if there is one. */
  private bootstrapOf(id: number): Promise<string | undefined> {
    return firstFile(BOOTSTRAP_PATHS.map((p) => path.join(this.dir(id), 'fs', p)));
  }

  async prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const target = labels[L.TARGET_REF];
    if (target && this.rafs && L.isNydusBlob(labels)) {
      this.commitRemote(key, parent, target, labels);
      throw alreadyExists(`target snapshot ${JSON.stringify(target)}: already exists`);
    }
    return this.createWithMounts('ACTIVE', key, parent, labels);
  }

  async view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.createWithMounts('VIEW', key, parent, labels);
  }

  /** Creates the snapshot and its mounts; a snapshot whose mounts can't be made is not kept. */
  private async createWithMounts(kind: 'ACTIVE' | 'VIEW', key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    const rec = this.createSnapshot(kind, key, parent, labels);
    try {
      return await this.mountsOf(rec);
    } catch (err) {
      this.store.tx(() => this.store.remove(key));
      await fs.promises.rm(this.dir(rec.id), { recursive: true, force: true });
      throw err;
    }
  }

  async mounts(key: string): Promise<Mount[]> {
    const rec = this.store.mustGet(key);
    if (rec.kind === 'COMMITTED') throw failedPrecondition(`requested snapshot ${key} not active or view: failed precondition`);
    return this.mountsOf(rec);
  }

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    const rec = this.store.mustGet(key);
    if (rec.kind !== 'ACTIVE') throw failedPrecondition(`snapshot ${key} is not active: failed precondition`);
    const usage = await diskUsage(path.join(this.dir(rec.id), 'fs'));
    // The layer labels given at Prepare (nydus markers, image reference) stay unless Commit restates them.
    const committed = this.store.tx(() => this.store.commit(key, name, { ...L.inherited(rec.labels), ...labels }, usage.size, usage.inodes));
    fs.rmSync(path.join(this.dir(rec.id), 'work'), { recursive: true, force: true });
    if (this.rafs && this.mountOnPull && L.isNydusBootstrap(committed.labels)) this.premount(committed.id, committed.labels);
  }

  /** Step 4's mount on pull, in the background; Commit has answered already. */
  private premount(id: number, labels: Record<string, string>): void {
    const run = async (): Promise<void> => {
      const bootstrap = await this.bootstrapOf(id);
      if (!bootstrap) return;
      await this.rafs!.mount({ snapshotId: String(id), bootstrap, labels });
      log.info({ snapshot: id }, 'image mounted on pull');
    };
    const p = run()
      .catch((err: Error) => log.warn({ snapshot: id, err: err.message }, 'mount on pull failed; the container\'s Prepare mounts again'))
      .finally(() => this.premounts.delete(id));
    this.premounts.set(id, p);
  }

  async remove(key: string): Promise<void> {
    const rec = this.store.tx(() => this.store.remove(key));
    // A mount on pull still under way would otherwise land after this Remove, owned by no snapshot.
    await this.premounts.get(rec.id);
    if (this.rafs && this.rafs.mounted().includes(String(rec.id))) await this.rafs.umount(String(rec.id));
    await fs.promises.rm(this.dir(rec.id), { recursive: true, force: true });
  }

  stat(key: string): SnapshotInfo {
    return this.store.mustGet(key);
  }

  /** Updates labels as containerd's storage does: `labels` replaces, `labels.k` sets or deletes k. */
  update(info: { name: string; labels: Record<string, string> }, paths: string[]): SnapshotInfo {
    return this.store.tx(() => {
      const rec = this.store.mustGet(info.name);
      let labels = { ...rec.labels };
      if (paths.length === 0) labels = { ...info.labels };
      for (const p of paths) {
        if (p === 'labels') labels = { ...info.labels };
        else if (p.startsWith('labels.')) labels[p.slice(7)] = info.labels[p.slice(7)] ?? '';
        else throw invalidArgument(`cannot update ${JSON.stringify(p)} field on snapshot ${info.name}: invalid argument`);
      }
      for (const k of Object.keys(labels)) if (!labels[k]) delete labels[k];
      return this.store.setLabels(info.name, labels);
    });
  }

  list(filters: string[]): SnapshotInfo[] {
    const match = compileFilters(filters);
    return this.store.all().filter(match);
  }

  async usage(key: string): Promise<Usage> {
    const rec = this.store.mustGet(key);
    if (rec.kind === 'COMMITTED') return { size: rec.size, inodes: rec.inodes };
    return diskUsage(path.join(this.dir(rec.id), 'fs'));
  }

  /** Removes directories and rafs instances that no snapshot record owns (crash leftovers, GC). */
  async cleanup(): Promise<void> {
    // Other RPCs run between the awaits below: ask the store again for every entry, or a snapshot
    // prepared meanwhile would look like an orphan.
    const live = (id: string): boolean => /^\d+$/.test(id) && this.store.hasId(Number(id));
    if (this.rafs) {
      for (const sid of this.rafs.mounted()) if (!live(sid)) await this.rafs.umount(sid);
    }
    for (const name of await fs.promises.readdir(this.snapshotsDir)) {
      if (live(name)) continue;
      log.info({ dir: name }, 'cleanup: removing orphan snapshot directory');
      await fs.promises.rm(path.join(this.snapshotsDir, name), { recursive: true, force: true });
    }
    if (this.cache && this.cache.maxBytes > 0) {
      // A nydus blob layer's digest is its blob id; blobs of snapshots still present are live.
      const live = new Set<string>();
      for (const r of this.store.all()) {
        const digest = L.layerDigest(r.labels);
        if (L.isNydusBlob(r.labels) && digest) live.add(digest.replace(/^sha256:/, ''));
      }
      await collectBlobCache(this.cache.dir, live, this.cache.maxBytes);
    }
  }

  /**
   * Creates the record and its directories. The directory is built under a temporary name and
   * renamed to the id inside the transaction, so a crash leaves at worst an orphan directory
   * (removed by Cleanup), never a record without its directory.
   */
  private createSnapshot(kind: 'ACTIVE' | 'VIEW', key: string, parent: string, labels: Record<string, string>): SnapshotRecord {
    const tmp = path.join(this.snapshotsDir, `new-${crypto.randomBytes(6).toString('hex')}`);
    try {
      return this.store.tx(() => {
        const rec = this.store.create(kind, key, parent, labels);
        fs.mkdirSync(path.join(tmp, 'fs'), { recursive: true, mode: 0o755 });
        if (kind === 'ACTIVE') fs.mkdirSync(path.join(tmp, 'work'), { mode: 0o711 });
        if (parent) {
          // The new upper dir takes the owner of the parent's root, as containerd's overlay does.
          const st = fs.statSync(path.join(this.dir(this.store.mustGet(parent).id), 'fs'));
          fs.chownSync(path.join(tmp, 'fs'), st.uid, st.gid);
        }
        // A directory already named by this id is an orphan of a crash or a rolled-back transaction.
        fs.rmSync(this.dir(rec.id), { recursive: true, force: true });
        fs.renameSync(tmp, this.dir(rec.id));
        return rec;
      });
    } catch (err) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** Commits a nydus data layer under its target chainID without any data (step 3 above). */
  private commitRemote(key: string, parent: string, target: string, labels: Record<string, string>): void {
    // Another namespace committed the same chain already: that is the same success.
    if (this.store.get(target)) return;
    try {
      this.store.tx(() => {
        const rec = this.createSnapshot('ACTIVE', key, parent, labels);
        this.store.commit(key, target, { ...L.inherited(labels), [L.REMOTE]: 'remote snapshot' }, 0, 0);
        fs.rmSync(path.join(this.dir(rec.id), 'work'), { recursive: true, force: true });
      });
      log.info({ key, target, parent }, 'nydus blob layer committed as remote snapshot');
    } catch (err) {
      if (!(err instanceof SnapshotError && err.code === alreadyExists('').code)) throw err;
    }
  }

  /** The nearest nydus bootstrap layer in `rec`'s ancestry (rec itself excluded) and the layers above it. */
  private findMeta(chain: SnapshotRecord[]): { meta: SnapshotRecord; above: SnapshotRecord[] } | undefined {
    for (let i = 1; i < chain.length; i++) {
      if (L.isNydusBootstrap(chain[i].labels)) return { meta: chain[i], above: chain.slice(1, i) };
    }
    return undefined;
  }

  private async mountsOf(rec: SnapshotRecord): Promise<Mount[]> {
    const chain = this.store.chain(rec.name);
    const own = this.dir(rec.id);
    const nydus = this.rafs ? this.findMeta(chain) : undefined;
    const ro = rec.kind === 'VIEW';
    let lowers: string[];
    let rafs: { bootstrap: string; snapshotId: string } | undefined;
    if (nydus) {
      const bootstrap = await this.bootstrapOf(nydus.meta.id);
      if (!bootstrap) throw failedPrecondition(`nydus bootstrap layer ${nydus.meta.name} has no image/image.boot: failed precondition`);
      const mnt = await this.rafs!.mount({ snapshotId: String(nydus.meta.id), bootstrap, labels: nydus.meta.labels });
      lowers = [...nydus.above.map((p) => path.join(this.dir(p.id), 'fs')), mnt];
      rafs = { bootstrap, snapshotId: String(nydus.meta.id) };
      // The helper mounts overlays only: a view gets its own (empty) dir as a second lower, as upstream.
      if (this.nydusOverlayfs && ro && lowers.length === 1) lowers.push(path.join(own, 'fs'));
    } else {
      lowers = chain.slice(1).map((p) => path.join(this.dir(p.id), 'fs'));
    }
    if (lowers.length === 0) return [{ type: 'bind', source: path.join(own, 'fs'), options: [ro ? 'ro' : 'rw', 'rbind'] }];
    if (ro && lowers.length === 1) return [{ type: 'bind', source: lowers[0], options: ['ro', 'rbind'] }];
    const opts = ['index=off'];
    if (!ro) opts.push(`workdir=${path.join(own, 'work')}`, `upperdir=${path.join(own, 'fs')}`);
    opts.push(`lowerdir=${lowers.join(':')}`);
    if (rafs && this.nydusOverlayfs) {
      const config = this.rafs!.config(rafs.snapshotId);
      // Only a Remove of the bootstrap snapshot racing this call unmounts it between the awaits.
      if (!config) throw failedPrecondition(`rafs instance of snapshot ${rafs.snapshotId} is gone: failed precondition`);
      const extra = { source: rafs.bootstrap, config: JSON.stringify(withoutSecrets(config)), snapshotdir: own, fs_version: detectFsVersion(rafs.bootstrap) };
      return [nydusOverlayMount(opts, extra, this.nydusOverlayfs.helper)];
    }
    return [{ type: 'overlay', source: 'overlay', options: opts }];
  }
}
