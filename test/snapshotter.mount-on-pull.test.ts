/**
 * `[snapshot] mount_on_pull` (ours; snapshotter.ts lifecycle step 4): the Commit of a nydus
 * bootstrap layer starts the image's rafs mount in the background, so the container's Prepare
 * finds it mounted. The mounter here records calls in place of the daemon manager; the path through
 * real containerd, the daemon manager and nydusd is test/snapshotter.prefetch.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MetaLayer, RafsMounter, Snapshotter } from '../src/snapshotter/snapshotter';
import { NYDUS_BOOTSTRAP } from '../src/snapshotter/labels';

/** Records mounts; each mount waits for `gate` (open by default) and may fail. */
class RecordingMounter implements RafsMounter {
  readonly calls: string[] = [];
  readonly live = new Set<string>();
  gate: Promise<void> = Promise.resolve();
  fail?: Error;
  constructor(private readonly root: string) {}
  async mount(meta: MetaLayer): Promise<string> {
    this.calls.push(`mount ${meta.snapshotId} ${path.relative(this.root, meta.bootstrap)}`);
    await this.gate;
    if (this.fail) throw this.fail;
    this.live.add(meta.snapshotId);
    return path.join(this.root, 'mnt', meta.snapshotId);
  }
  async umount(id: string): Promise<void> {
    this.calls.push(`umount ${id}`);
    this.live.delete(id);
  }
  mounted(): string[] {
    return [...this.live];
  }
  config(): undefined {
    return undefined;
  }
}

const settle = () => new Promise((r) => setImmediate(r));

/** Waits (at most 5 s) until `cond` holds: the mount on pull runs after Commit has answered. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(cond()).toBe(true);
}

describe('mount_on_pull', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'sn-mop-'));
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  /** Unpacks a bootstrap layer as containerd does: Prepare, write image/image.boot, Commit. */
  async function pullBootstrap(sn: Snapshotter, name = 'ns/2/sha256:meta'): Promise<{ meta: string; id: string }> {
    const [m] = await sn.prepare('ns/1/extract-meta', '', { [NYDUS_BOOTSTRAP]: 'true' });
    fs.mkdirSync(path.join(m.source, 'image'));
    fs.writeFileSync(path.join(m.source, 'image', 'image.boot'), 'bootstrap');
    await sn.commit(name, 'ns/1/extract-meta', {});
    // The bind mount's source is snapshots/<id>/fs.
    return { meta: name, id: path.basename(path.dirname(m.source)) };
  }

  test('on: the bootstrap layer\'s Commit mounts the image; the container\'s Prepare gets that mount as its lower dir', async () => {
    const rafs = new RecordingMounter(root);
    const sn = new Snapshotter({ root, rafs, mountOnPull: true });
    try {
      const { meta, id } = await pullBootstrap(sn);
      await until(() => rafs.mounted().length === 1);
      expect(rafs.calls).toEqual([`mount ${id} snapshots/${id}/fs/image/image.boot`]);
      const [ov] = await sn.prepare('ns/3/ctr', meta, {});
      expect(ov.options).toContain(`lowerdir=${path.join(root, 'mnt', id)}`);
    } finally {
      sn.close();
    }
  });

  test('off (the default, as upstream): nothing is mounted before the container\'s Prepare', async () => {
    const rafs = new RecordingMounter(root);
    const sn = new Snapshotter({ root, rafs });
    try {
      const { meta } = await pullBootstrap(sn);
      await new Promise((r) => setTimeout(r, 200));
      expect(rafs.calls).toEqual([]);
      await sn.prepare('ns/3/ctr', meta, {});
      expect(rafs.calls).toHaveLength(1);
    } finally {
      sn.close();
    }
  });

  test('a plain layer\'s Commit mounts nothing', async () => {
    const rafs = new RecordingMounter(root);
    const sn = new Snapshotter({ root, rafs, mountOnPull: true });
    try {
      await sn.prepare('ns/1/extract-plain', '', {});
      await sn.commit('ns/2/sha256:plain', 'ns/1/extract-plain', {});
      await new Promise((r) => setTimeout(r, 200));
      expect(rafs.calls).toEqual([]);
    } finally {
      sn.close();
    }
  });

  test('a Remove during the mount waits for it and unmounts, so no instance is left without its snapshot', async () => {
    const rafs = new RecordingMounter(root);
    let open!: () => void;
    rafs.gate = new Promise((r) => (open = r));
    const sn = new Snapshotter({ root, rafs, mountOnPull: true });
    try {
      const { meta, id } = await pullBootstrap(sn);
      await until(() => rafs.calls.length === 1);
      const removed = sn.remove(meta);
      await settle();
      expect(rafs.calls).toEqual([`mount ${id} snapshots/${id}/fs/image/image.boot`]);
      open();
      await removed;
      expect(rafs.calls).toEqual([`mount ${id} snapshots/${id}/fs/image/image.boot`, `umount ${id}`]);
      expect(rafs.mounted()).toEqual([]);
    } finally {
      sn.close();
    }
  });

  test('a failed mount on pull leaves the Commit done; the container\'s Prepare mounts again', async () => {
    const rafs = new RecordingMounter(root);
    rafs.fail = new Error('registry unreachable');
    const sn = new Snapshotter({ root, rafs, mountOnPull: true });
    try {
      const { meta, id } = await pullBootstrap(sn);
      await until(() => rafs.calls.length === 1);
      await settle();
      expect(sn.stat(meta).kind).toBe('COMMITTED');
      rafs.fail = undefined;
      const [ov] = await sn.prepare('ns/3/ctr', meta, {});
      expect(rafs.calls).toHaveLength(2);
      expect(ov.options.some((o) => o === `lowerdir=${path.join(root, 'mnt', id)}`)).toBe(true);
    } finally {
      sn.close();
    }
  });
});
