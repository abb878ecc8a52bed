/**
 * Issue 19, acceptance 1 and 4, with the real thing: Ceph's S3 gateway (test/helpers/ceph.ts),
 * docker-registry, containerd 1.6 + runc, ./bin/nydusify, ./bin/containerd-nydus-grpc, ./bin/nydusd
 * over FUSE, and a loop-mounted ext4 file system standing in for NAS.
 *  1. nydusify converts the Debian/python test image with --backend-type s3: the blobs go to the
 *     bucket, the registry gets the bootstrap layer and manifest only (as upstream writes them);
 *     nydusify check reads the blobs back from the bucket; containerd runs python3 from the image
 *     through our snapshotter, whose nydusd template names the bucket: the gateway's log shows ranged
 *     GETs of the blob objects and the registry served no blob bytes.
 *  4. The same image converted with --backend-type localfs into a directory on the loop mount runs
 *     from there (nydusd's localfs backend, `dir/<blob id>`): python3 chrooted into nydusd's mount,
 *     then through containerd and our snapshotter with a localfs nydusd template.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { unpackBootstrap } from '../src/convert/bootstrap-layer';
import { decodeBootstrap } from '../src/format/decode';
import { RegistryClient } from '../src/registry';
import { CephS3, startCeph } from './helpers/ceph';
import { describeWith } from './helpers/capabilities';
import { Containerd } from './helpers/containerd';
import { REPO_ROOT } from './helpers/fixtures';
import { DEBIAN_2LAYER_CHANGES, pushImage } from './helpers/images';
import { SnapshotterStack, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { NydusdHandle, startNydusd } from './helpers/nydusd';
import { startRegistry, TestRegistry } from './helpers/registry';

const run = promisify(execFile);
const NYDUSIFY = path.join(REPO_ROOT, 'bin', 'nydusify');
/** The test images' config sets only LANG, so PATH must come from the command line. */
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];
const HELLO = DEBIAN_2LAYER_CHANGES.bigFile.replace('big.bin', 'hello.txt');
const SCRIPT = `import json, sys; print(json.dumps({"py": sys.version_info[0], "hello": open("${HELLO}").read()}))`;
const EXPECTED = { py: 3, hello: DEBIAN_2LAYER_CHANGES.added['/opt/nydus-test/hello.txt'] };

describeWith(['root', 'fuse', 'containerd', 'ceph', 'loop'], 'nydus image with blobs outside the registry', () => {
  let dir: string;
  let ceph: CephS3 | undefined;
  let reg: TestRegistry | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let root: string;
  let src: string;
  let blobIds: string[] = [];

  /** The registry's nydus manifest, config and decoded bootstrap of `repo:latest`. */
  async function registryImage(repo: string) {
    const client = new RegistryClient({ registry: reg!.host, insecure: true, noDockerConfig: true });
    try {
      const m = (await client.getManifest(repo, 'latest')).json as { layers: { digest: string; annotations?: Record<string, string> }[]; config: { digest: string } };
      const config = JSON.parse((await client.getBlobBuffer(repo, m.config.digest)).toString('utf8'));
      const boot = await unpackBootstrap(await client.getBlobBuffer(repo, m.layers[m.layers.length - 1].digest, 1 << 30), 'bootstrap');
      return { manifest: m, config, bootstrap: boot.bootstrap, blobIds: decodeBootstrap(boot.bootstrap).blobs.map((b) => b.blobId) };
    } finally {
      await client.close();
    }
  }

  /** Our snapshotter (shared nydusd from `template`, root `root`) and a containerd in front of it;
   * whatever ran before is stopped first. */
  async function startStack(template: string): Promise<void> {
    await stopStack();
    stack = await startSnapshotterStack({ dir, root, nydusdConfig: template });
    ctd = stack.ctd;
  }

  /** Stops containerd, the snapshotter and its nydusd (nothing left mounted); removes the state. */
  async function stopStack(): Promise<void> {
    const s = stack;
    stack = undefined;
    ctd = undefined;
    await s?.stop();
    if (root) fs.rmSync(root, { recursive: true, force: true });
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 's3snap-'));
    root = path.join(dir, 'root');
    [ceph, reg] = await Promise.all([startCeph(), startRegistry()]);
    await ceph.createBucket('nydus-blobs');
    src = await pushImage(reg, 'debian-2layer', 'oci/debian');
  }, 40 * 60_000);

  afterAll(async () => {
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await reg?.stop();
      await ceph?.stop();
    }
  }, 180_000);

  test('acceptance 1: nydusify --backend-type s3; containerd runs it lazily from the bucket; the registry served no blob bytes', async () => {
    const s3 = ceph!.s3Config('nydus-blobs', 'blobs/');
    // Credentials in a 0600 file, not on the command line.
    const backendFile = path.join(dir, 's3.json');
    fs.writeFileSync(backendFile, JSON.stringify(s3), { mode: 0o600 });
    const ref = `${reg!.host}/nydus/debian-s3:latest`;
    const conv = await run(NYDUSIFY, ['convert', '--source', src, '--target', ref, '--plain-http', '--backend-type', 's3', '--backend-config-file', backendFile], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
    expect(conv.stdout).toMatch(/2 layers, 2 blobs pushed to s3 bucket nydus-blobs at 127\.0\.0\.1:\d+/);
    expect(conv.stderr).not.toContain(ceph!.secretKey);

    // What upstream records: the bootstrap layer alone, its diff_id alone, the converter's history alone.
    const img = await registryImage('nydus/debian-s3');
    expect(img.manifest.layers).toHaveLength(1);
    expect(img.manifest.layers[0].annotations?.['containerd.io/snapshot/nydus-bootstrap']).toBe('true');
    expect(img.config.rootfs.diff_ids).toHaveLength(1);
    expect(img.config.history).toEqual([{ created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' }]);
    blobIds = img.blobIds;
    expect(blobIds).toHaveLength(2);
    // The blobs are objects <object_prefix><blob id> of the bucket, uploaded with signed PUTs.
    const puts = ceph!.gatewayRequests().filter((r) => r.method === 'PUT' && r.status === 200).map((r) => r.path);
    for (const id of blobIds) expect(puts).toContain(`/nydus-blobs/blobs/${id}`);
    const blobBytesServed = () => reg!.requests().filter((r) => r.method === 'GET' && blobIds.some((id) => r.path.includes(id)));
    expect(blobBytesServed()).toEqual([]);

    // nydusify check reads them back from the bucket and verifies every chunk.
    const check = await run(NYDUSIFY, ['check', '--source', src, '--target', ref, '--plain-http', '--target-backend-type', 's3', '--target-backend-config-file', backendFile], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
    expect(check.stdout).toMatch(/check passed: .*: 2 blobs, \d+ chunks verified, \d+ entries match the source/);

    // The snapshotter's nydusd template names the bucket; it is passed to nydusd unchanged.
    const template = path.join(dir, 'nydusd-s3.json');
    fs.writeFileSync(template, JSON.stringify({ device: { backend: { type: 's3', config: { ...s3, retry_limit: 2 } }, cache: { type: 'blobcache' } }, mode: 'direct', digest_validate: false }), { mode: 0o600 });
    await startStack(template);
    const gatewayBefore = ceph!.gatewayRequests().length;
    reg!.clearRequests();

    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
    const { stdout } = await ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, 's3-py-1', 'python3', '-c', SCRIPT]);
    expect(JSON.parse(stdout)).toEqual(EXPECTED);

    // The registry served the manifest, config and bootstrap layer, and no blob bytes.
    expect(reg!.requests().some((r) => r.method === 'GET' && r.path.includes('/blobs/'))).toBe(true);
    expect(blobBytesServed()).toEqual([]);
    // The gateway served ranged GETs of the blob objects (206 with a Range), as the nydus user.
    let ranged: ReturnType<CephS3['gatewayRequests']> = [];
    for (let i = 0; i < 40 && ranged.length === 0; i++) {
      ranged = ceph!.gatewayRequests().slice(gatewayBefore).filter((r) => r.method === 'GET' && r.status === 206 && blobIds.some((id) => r.path === `/nydus-blobs/blobs/${id}`));
      if (!ranged.length) await new Promise((r) => setTimeout(r, 100));
    }
    expect(ranged.length).toBeGreaterThan(0);
    for (const r of ranged) {
      expect(r.range).toMatch(/^bytes=\d+-\d+$/);
      expect(r.user).toBe('nydus');
    }
    // The secret reached no log of the snapshotter or nydusd.
    const logs = [stack!.logFile, ...fs.readdirSync(path.join(root, 'logs')).map((d) => path.join(root, 'logs', d, 'nydusd.log'))];
    for (const f of logs) expect(fs.readFileSync(f, 'utf8')).not.toContain(ceph!.secretKey);
  }, 30 * 60_000);

  test('acceptance 4: the same image from a localfs directory on a loop-mounted file system runs', async () => {
    const img = path.join(dir, 'nas.img');
    const nas = path.join(dir, 'nas');
    fs.mkdirSync(nas);
    execFileSync('truncate', ['-s', '1G', img]);
    execFileSync('mkfs.ext4', ['-q', '-F', img]);
    execFileSync('mount', ['-o', 'loop', img, nas]);
    let nydusd: NydusdHandle | undefined;
    try {
      const blobDir = path.join(nas, 'nydus', 'blobs');
      const ref = `${reg!.host}/nydus/debian-localfs:latest`;
      const conv = await run(NYDUSIFY, ['convert', '--source', src, '--target', ref, '--plain-http', '--backend-type', 'localfs', '--backend-config', JSON.stringify({ dir: blobDir })], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
      expect(conv.stdout).toContain(`2 blobs pushed to localfs ${blobDir}`);
      const image = await registryImage('nydus/debian-localfs');
      expect(image.manifest.layers).toHaveLength(1);
      // Upstream's naming: dir/<blob id>, nothing else in the directory.
      expect(fs.readdirSync(blobDir).sort()).toEqual([...image.blobIds].sort());
      // The same builds give the same blobs as the bucket got in acceptance 1.
      if (blobIds.length) expect([...image.blobIds].sort()).toEqual([...blobIds].sort());
      const check = await run(NYDUSIFY, ['check', '--target', ref, '--plain-http', '--target-backend-type', 'localfs', '--target-backend-config', JSON.stringify({ dir: blobDir })], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
      expect(check.stdout).toMatch(/check passed: .*: 2 blobs, \d+ chunks verified/);

      // nydusd alone serves it from the loop mount (python3 chrooted into the FUSE mount)...
      const bootstrap = path.join(dir, 'localfs.boot');
      fs.writeFileSync(bootstrap, image.bootstrap);
      const mnt = path.join(dir, 'localfs-mnt');
      fs.mkdirSync(mnt);
      nydusd = await startNydusd({
        config: { device: { backend: { type: 'localfs', config: { dir: blobDir } }, cache: { type: 'blobcache', config: { work_dir: path.join(dir, 'localfs-cache') } } }, mode: 'direct' },
        bootstrap, mountpoint: mnt,
      });
      const chrooted = await run('/usr/sbin/chroot', [mnt, '/usr/bin/python3', '-c', SCRIPT], { env: { PATH: '/usr/local/bin:/usr/bin:/bin' }, timeout: 120_000 });
      expect(JSON.parse(chrooted.stdout)).toEqual(EXPECTED);
      await nydusd.cleanup();
      nydusd = undefined;

      // ...and containerd runs it through our snapshotter, whose nydusd template names the directory.
      const template = path.join(dir, 'nydusd-localfs.json');
      fs.writeFileSync(template, JSON.stringify({ device: { backend: { type: 'localfs', config: { dir: blobDir } }, cache: { type: 'blobcache' } }, mode: 'direct' }));
      await startStack(template);
      reg!.clearRequests();
      await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
      const { stdout } = await ctd!.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', ref, 'localfs-py-1', 'python3', '-c', SCRIPT]);
      expect(JSON.parse(stdout)).toEqual(EXPECTED);
      // Every blob byte came from the loop mount: the registry was asked for no blob.
      expect(reg!.requests().filter((r) => r.method === 'GET' && image.blobIds.some((id) => r.path.includes(id)))).toEqual([]);
      // The snapshotter's nydusd read from the directory on the loop mount.
      const logsDir = path.join(root, 'logs');
      const mounted = fs.readdirSync(logsDir).map((d) => fs.readFileSync(path.join(logsDir, d, 'nydusd.log'), 'utf8')).join('');
      expect(mounted).toContain('rafs instance mounted');
      expect(mounted).toContain('"backend":"localfs"');
      await stopStack();
    } finally {
      await nydusd?.cleanup();
      await stopStack();
      execFileSync('umount', ['-l', nas]);
    }
  }, 30 * 60_000);
});
