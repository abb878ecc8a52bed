/**
 * Kernel EROFS mode through real containerd 1.6, runc, docker-registry, ./bin/nydusd and the
 * kernel's EROFS and overlayfs (issue 16, acceptance 1 and 3), with `fs_driver = "erofs"`:
 *  1. `ctr-remote image rpull` is lazy, `ctr run` of the Debian/python image runs python3, and
 *     /proc/mounts shows an `erofs` mount of the image as the container's lower dir;
 *  2. kill -9 of nydusd while a container runs: what the container already read keeps working, a
 *     page it never read fails with EIO (its device file belonged to the dead daemon); the daemon
 *     manager restarts nydusd, the blob view and the EROFS mount come back, new containers read
 *     files nobody read before;
 *  3. the image's tree under the (re-established) EROFS mount equals its source, as umoci unpacks
 *     the OCI image nydusify converted.
 *
 * The kill -9 test is timing-dependent (the daemon manager's restart); loop it before trusting it:
 *   for i in $(seq 20); do npx jest --runInBand test/snapshotter.erofs.test.ts || break; done
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Containerd } from './helpers/containerd';
import { describeWith } from './helpers/capabilities';
import { compareTrees, snapshotTree, snapshotTreeAsync } from './helpers/erofs';
import { DEBIAN_2LAYER_CHANGES, imageLayout } from './helpers/images';
import { blobBytes, Converted, convertedImage, SnapshotterStack, STACK_TEST_TIMEOUT_MS, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { startRegistry, TestRegistry } from './helpers/registry';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'erofs', 'containerd'] as const;
/** The test images' config sets only LANG, so PATH must come from the command line. */
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];
/**
 * The long-running process of the crash test. It keeps mapped, and so resident (drop_caches
 * elsewhere on the machine skips mapped pages), everything a later `exec sleep` in its container
 * reads: runc's user lookup reads /etc/passwd and /etc/group, then the `sleep` binary, the loader
 * and libc (the last two python3 maps itself). /tmp/held says the pages are in.
 */
const HOLD = [
  'import mmap, time',
  'held = []',
  "for p in ['/etc/passwd', '/etc/group', '/usr/bin/sleep']:",
  "    with open(p, 'rb') as f:",
  '        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)',
  '        m[:]',
  '        held.append(m)',
  "open('/tmp/held', 'w').close()",
  'time.sleep(600)',
].join('\n');

/** Mountpoints under `dir` whose filesystem is `fstype`, from /proc/self/mountinfo. */
function mountsOfType(dir: string, fstype: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f.length > 9 && f[4].startsWith(`${dir}/`) && f[f.indexOf('-') + 1] === fstype)
    .map((f) => f[4]);
}

describeWith(NEEDS, 'kernel EROFS mode through containerd-nydus-grpc (fs_driver = "erofs")', () => {
  let dir: string;
  let root: string;
  let reg: TestRegistry | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let ref: string;
  let image: Converted;

  const daemonPids = (): number[] => stack!.daemonPids();
  /** The image's EROFS mounts, once there is one (a restarted daemon mounts it again within seconds). */
  const erofsMountAppears = async (): Promise<string[]> => {
    for (let i = 0; i < 600 && mountsOfType(path.join(root, 'mnt'), 'erofs').length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    return mountsOfType(path.join(root, 'mnt'), 'erofs');
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sne-'));
    reg = await startRegistry();
    const conv = await convertedImage(reg);
    ({ ref } = conv);
    image = conv;
    stack = await startSnapshotterStack({ dir, daemon: { recover_policy: 'restart', fs_driver: 'erofs' } });
    ({ root, ctd } = stack);
    reg.clearRequests();
  }, 30 * 60_000);

  afterAll(async () => {
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await reg?.stop();
    }
  }, 120_000);

  test('rpull is lazy; ctr run runs python3; /proc/mounts shows the image as an erofs mount', async () => {
    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
    const served = (): number => image.blobs.reduce((a, b) => a + blobBytes(reg!, b.digest, b.size), 0);
    expect(served()).toBe(0);
    const script = `import json, sys; print(json.dumps({"sum": sum(range(10)), "py": sys.version_info[0], "hello": open("/opt/nydus-test/hello.txt").read()}))`;
    const { stdout } = await ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, 'py-1', 'python3', '-c', script]);
    expect(JSON.parse(stdout)).toEqual({ sum: 45, py: 3, hello: DEBIAN_2LAYER_CHANGES.added['/opt/nydus-test/hello.txt'] });
    const erofs = mountsOfType(path.join(root, 'mnt'), 'erofs');
    expect(erofs).toHaveLength(1);
    expect(mountsOfType(root, 'fuse.rafs')).toEqual([]);
    expect(mountsOfType(path.join(root, 'socket'), 'fuse.nydus-blobs')).toHaveLength(1);
    expect(fs.readFileSync('/proc/mounts', 'utf8')).toMatch(new RegExp(` ${erofs[0]} erofs ro`));
    expect(stack!.log()).not.toMatch(/serving it over FUSE/);
    expect(served()).toBeGreaterThan(0);
    expect(served()).toBeLessThan(image.blobs.reduce((a, b) => a + b.size, 0) * 0.3);
  }, STACK_TEST_TIMEOUT_MS);

  test('kill -9 of nydusd: the running container keeps what it read; the daemon comes back; new containers read the rest', async () => {
    await ctd!.ctr(['run', '-d', ...ENV, '--snapshotter', 'nydus', ref, 'long-1', 'python3', '-c', HOLD]);
    try {
      // `ctr run -d` returns before the process has paged anything in: wait (bounded) for /tmp/held.
      let held = false;
      for (let i = 0; i < 100 && !held; i++) {
        held = await ctd!.ctr(['tasks', 'exec', '--exec-id', `e1-${i}`, 'long-1', '/usr/bin/test', '-e', '/tmp/held']).then(
          () => true,
          () => false,
        );
        if (!held) await new Promise((r) => setTimeout(r, 200));
      }
      expect(held).toBe(true);
      const [pid] = daemonPids();
      const [mnt] = mountsOfType(path.join(root, 'mnt'), 'erofs');
      process.kill(pid, 'SIGKILL');
      let newPid = pid;
      for (let i = 0; i < 200 && (newPid === pid || !newPid); i++) {
        await new Promise((r) => setTimeout(r, 100));
        newPid = daemonPids()[0];
      }
      expect(newPid).not.toBe(pid);
      // Pages the container read before the crash are in the old EROFS mount's page cache, held
      // there by the running process (HOLD): `sleep` starts again.
      await ctd!.ctr(['tasks', 'exec', '--exec-id', 'e2', 'long-1', '/usr/bin/sleep', '0']);
      // A binary it never read was to come from the dead daemon's blob view.
      const unread = await ctd!.ctr(['tasks', 'exec', '--exec-id', 'e3', 'long-1', '/usr/bin/cat', '/etc/debian_version']).then(
        () => 'read',
        (e: Error) => e.message,
      );
      expect(unread).toMatch(/input\/output error/i);
      // The daemon manager remounts the image at the same path, over a new blob view.
      expect(await erofsMountAppears()).toEqual([mnt]);
      let out = '';
      for (let i = 0; i < 20 && !out; i++) {
        out = await ctd!
          .ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, `pl-${i}`, 'perl', '-e', 'print 6 * 7'])
          .then((r) => r.stdout, async () => {
            await new Promise((r) => setTimeout(r, 500));
            return '';
          });
      }
      expect(out.trim()).toBe('42');
    } finally {
      await ctd!.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long-1']).catch(() => undefined);
    }
  }, STACK_TEST_TIMEOUT_MS);

  test("the image's tree under the EROFS mount equals the source image", async () => {
    const [mnt] = await erofsMountAppears();
    expect(mnt).toBeDefined();
    const src = path.join(dir, 'source-rootfs');
    await run('umoci', ['raw', 'unpack', '--image', `${await imageLayout('debian-2layer')}:latest`, src], { maxBuffer: 1 << 24, timeout: 10 * 60_000 });
    const want = snapshotTree(src);
    // Asynchronous: the registry's recording front runs in this process and must keep serving nydusd.
    const got = await snapshotTreeAsync(mnt);
    expect(got.size).toBeGreaterThan(10000);
    expect(got.get(DEBIAN_2LAYER_CHANGES.bigFile)?.size).toBe(DEBIAN_2LAYER_CHANGES.bigFileSize);
    expect(got.has('/etc/motd')).toBe(false);
    expect(compareTrees(want, got, { ignore: (p) => p === '/' })).toEqual([]);
  }, STACK_TEST_TIMEOUT_MS);
});
