/**
 * Acceptance 1 and 3 with real containerd 1.6, runc, docker-registry, ./bin/nydusd and the kernel's
 * FUSE/overlayfs: a nydus Debian/python image is pulled lazily with `ctr-remote image rpull`, a
 * container runs python from it, and the registry saw the bootstrap and only a small part of the
 * blob. Then the snapshotter is killed with SIGKILL while a container runs and restarted; then
 * nydusd is killed and restarted by the daemon manager.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';
import * as grpc from '@grpc/grpc-js';
import Database from 'better-sqlite3';
import { NydusdClient } from '../src/daemon/client';
import { loadSnapshotsService } from '../src/snapshotter/service';
import { Containerd } from './helpers/containerd';
import { DEBIAN_2LAYER_CHANGES } from './helpers/images';
import { blobBytes, Converted, convertedImage, SnapshotterProcess, SnapshotterStack, STACK_TEST_TIMEOUT_MS, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'containerd'] as const;

/** The test images' config sets only LANG, so PATH must come from the command line. */
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];

describeWith(NEEDS, 'nydus image through containerd-nydus-grpc', () => {
  let dir: string;
  let root: string;
  let reg: TestRegistry | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let snp: SnapshotterProcess | undefined;
  let ref: string;
  let image: Converted;

  const daemonPids = (): number[] => stack!.daemonPids();

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snn-'));
    reg = await startRegistry();
    const conv = await convertedImage(reg);
    ref = conv.ref;
    image = conv;
    fs.mkdirSync(path.join(dir, 'certs.d'));
    stack = await startSnapshotterStack({ dir, daemon: { recover_policy: 'restart' }, extraToml: `[remote.mirrors_config]\ndir = "${dir}/certs.d"` });
    ({ root, ctd, snapshotter: snp } = stack);
    reg.clearRequests();
  }, 30 * 60_000);

  afterAll(async () => {
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await reg?.stop();
    }
  }, 120_000);

  test('ctr-remote rpull is lazy; python3 runs from the rafs mount; the registry served a small fraction of the blobs', async () => {
    expect(image.blobs.length).toBe(2);
    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
    // The pull downloaded the bootstrap layer and none of the blobs.
    expect(blobBytes(reg!, image.bootDigest, 1)).toBeGreaterThan(0);
    const blobTotal = image.blobs.reduce((a, b) => a + b.size, 0);
    const served = (): number => image.blobs.reduce((a, b) => a + blobBytes(reg!, b.digest, b.size), 0);
    expect(served()).toBe(0);
    const script = [
      'import json, os, sys',
      `print(json.dumps({"sum": sum(range(10)), "py": sys.version_info[0], "hello": open("${DEBIAN_2LAYER_CHANGES.bigFile.replace('big.bin', 'hello.txt')}").read(), "motd": os.path.exists("/etc/motd")}))`,
    ].join('; ');
    const { stdout } = await ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, 'py-1', 'python3', '-c', script]);
    expect(JSON.parse(stdout)).toEqual({ sum: 45, py: 3, hello: DEBIAN_2LAYER_CHANGES.added['/opt/nydus-test/hello.txt'], motd: false });
    expect(served()).toBeGreaterThan(0);
    expect(served()).toBeLessThan(blobTotal * 0.3);
  }, STACK_TEST_TIMEOUT_MS);

  test('kill -9 of the snapshotter: the running container keeps running, new containers start', async () => {
    await ctd!.ctr(['run', '-d', ...ENV, '--snapshotter', 'nydus', ref, 'long-1', 'sleep', '600']);
    const before = daemonPids();
    await snp!.kill9();
    await snp!.start();
    // The restarted snapshotter adopted the running nydusd instead of replacing it.
    expect(daemonPids()).toEqual(before);
    expect(process.kill(before[0], 0)).toBe(true);
    const tasks = await ctd!.ctr(['tasks', 'ls']);
    expect(tasks.stdout).toMatch(/long-1\s+\d+\s+RUNNING/);
    const ex = await ctd!.ctr(['tasks', 'exec', '--exec-id', 'e1', 'long-1', '/usr/bin/python3', '-c', 'print(open("/etc/debian_version").read().strip() != "")']);
    expect(ex.stdout.trim()).toBe('True');
    // containerd reconnects to the new socket on its own (backoff <= 3 s); bounded retries.
    let out = '';
    for (let i = 0; i < 20 && !out; i++) {
      out = await ctd!
        .ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, `py-2-${i}`, 'python3', '-c', 'print("after-restart")'])
        .then((r) => r.stdout, async () => {
          await new Promise((r) => setTimeout(r, 500));
          return '';
        });
    }
    expect(out.trim()).toBe('after-restart');
    await ctd!.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long-1']);
  }, STACK_TEST_TIMEOUT_MS);

  test('kill -9 of nydusd: the daemon manager restarts it and reads work again', async () => {
    const [pid] = daemonPids();
    expect(pid).toBeGreaterThan(0);
    process.kill(pid, 'SIGKILL');
    let newPid = pid;
    for (let i = 0; i < 200 && (newPid === pid || !newPid); i++) {
      await new Promise((r) => setTimeout(r, 100));
      newPid = daemonPids()[0];
    }
    expect(newPid).not.toBe(pid);
    let out = '';
    for (let i = 0; i < 20 && !out; i++) {
      out = await ctd!
        .ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, `py-3-${i}`, 'python3', '-c', 'import hashlib; print(hashlib.sha256(b"x").hexdigest()[:8])'])
        .then((r) => r.stdout, async () => {
          await new Promise((r) => setTimeout(r, 500));
          return '';
        });
    }
    expect(out.trim()).toBe('2d711642');
  }, STACK_TEST_TIMEOUT_MS);

  test('a certs.d change is pushed to the running nydusd', async () => {
    const apiSock = (() => {
      const db = new Database(path.join(root, 'metadata.db'), { readonly: true });
      try {
        return JSON.parse((db.prepare("SELECT value FROM records WHERE kind = 'daemon'").get() as { value: string }).value).apiSock as string;
      } finally {
        db.close();
      }
    })();
    const client = new NydusdClient(apiSock, 5000);
    const hostDir = path.join(dir, 'certs.d', reg!.host);
    fs.mkdirSync(hostDir, { recursive: true });
    fs.writeFileSync(path.join(hostDir, 'hosts.toml'), `server = "${reg!.url}"\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull"]\n`);
    let hosts: string[] = [];
    for (let i = 0; i < 100 && !hosts.includes('http://127.0.0.1:9'); i++) {
      await new Promise((r) => setTimeout(r, 100));
      const insts = await client.call<{ mirrors: { host: string }[] }[]>('GET', '/api/v1/daemon/mirrors');
      hosts = insts.flatMap((x) => x.mirrors.map((m) => m.host));
    }
    expect(hosts).toContain('http://127.0.0.1:9');
  }, STACK_TEST_TIMEOUT_MS);

  /**
   * Drives a snapshotter's gRPC API the way CRI's unpack and container creation do, mounts the
   * container rootfs, reads a file from it, then removes the snapshots. Returns the rafs mountpoint.
   */
  async function criFlow(sock: string, snRoot: string, ns: string): Promise<string> {
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    const c = new Ctor(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as Record<string, Function> & grpc.Client;
    const call = (m: string, req: object): Promise<any> => new Promise((res, rej) => c[m](req, (e: Error | null, r: unknown) => (e ? rej(e) : res(r))));
    const target = fs.mkdtempSync(path.join(dir, 'rootfs-'));
    try {
      const layers = [...image.blobs.map((b) => `sha256:${b.digest}`), `sha256:${image.bootDigest}`];
      const cri = (i: number, chain: string): Record<string, string> => ({
        'containerd.io/snapshot.ref': chain,
        'containerd.io/snapshot/cri.image-ref': ref,
        'containerd.io/snapshot/cri.layer-digest': layers[i],
        'containerd.io/snapshot/cri.image-layers': layers.slice(i).join(','),
      });
      let parent = '';
      for (let i = 0; i < image.blobs.length; i++) {
        const err = await call('Prepare', { key: `${ns}/${i}/extract ${i}`, parent, labels: { ...cri(i, `sha256:${ns}-${i}`), 'containerd.io/snapshot/nydus-blob': 'true' } }).catch((e) => e);
        expect(err.code).toBe(grpc.status.ALREADY_EXISTS);
        parent = `sha256:${ns}-${i}`;
      }
      // The bootstrap layer is unpacked like containerd would: into the upper dir it was given.
      const boot = await call('Prepare', { key: `${ns}/10/extract boot`, parent, labels: { ...cri(2, `sha256:${ns}-boot`), 'containerd.io/snapshot/nydus-bootstrap': 'true' } });
      const upper = (boot.mounts[0].options as string[]).find((o) => o.startsWith('upperdir='))!.slice('upperdir='.length);
      const gz = Buffer.from(await (await fetch(`${reg!.url}/v2/nydus/debian/blobs/sha256:${image.bootDigest}`)).arrayBuffer());
      execFileSync('tar', ['-x', '-C', upper], { input: zlib.gunzipSync(gz) });
      await call('Commit', { name: `sha256:${ns}-boot`, key: `${ns}/10/extract boot` });
      const ctrMounts = await call('Prepare', { key: `${ns}/11/pod-container`, parent: `sha256:${ns}-boot`, labels: {} });
      const opts: string[] = ctrMounts.mounts[0].options;
      const lower = opts.find((o) => o.startsWith('lowerdir='))!.slice('lowerdir='.length);
      expect(lower.startsWith(path.join(snRoot, 'mnt'))).toBe(true);
      // Asynchronous on purpose: the registry's recording front runs in this process, and a
      // synchronous read through FUSE would block the very event loop that must serve nydusd.
      await run('mount', ['-t', 'overlay', 'overlay', '-o', opts.join(','), target]);
      try {
        expect(await fs.promises.readFile(path.join(target, 'opt/nydus-test/hello.txt'), 'utf8')).toBe(DEBIAN_2LAYER_CHANGES.added['/opt/nydus-test/hello.txt']);
      } finally {
        await run('umount', [target]);
      }
      await call('Remove', { key: `${ns}/11/pod-container` });
      await call('Remove', { key: `sha256:${ns}-boot` });
      expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(`${lower} `);
      return lower;
    } finally {
      c.close();
    }
  }

  test('CRI labels: blob layers are remote, the bootstrap layer mounts a rafs instance, Remove unmounts it', async () => {
    // This flow talks to the snapshotter directly, so containerd's metadata does not know its
    // snapshots, and containerd's garbage collector (run after the container removals above)
    // prunes snapshots it does not know from the backend: stop it first, as no later test uses it.
    await stack!.stopContainerd();
    ctd = undefined;
    await criFlow(snp!.address, root, 'k8s.io');
  }, STACK_TEST_TIMEOUT_MS);

  test('dedicated mode: one nydusd per image, stopped when the image is removed', async () => {
    const dsn = await startSnapshotterStack({ dir, name: 'dedicated', root: path.join(dir, 'droot'), daemonMode: 'dedicated', containerd: false });
    try {
      expect(dsn.daemonPids()).toEqual([]); // nothing runs before an image needs it
      await criFlow(dsn.address, dsn.root, 'ded');
      // The image's daemon went with its bootstrap snapshot.
      expect(dsn.daemonPids()).toEqual([]);
      expect(dsn.log()).toMatch(/"daemon":"d\d+-[0-9a-f]+".*nydusd running/);
    } finally {
      await dsn.stop();
    }
  }, STACK_TEST_TIMEOUT_MS);
});
