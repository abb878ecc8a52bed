/**
 * Issue 20, acceptance 1–3: containerd 1.6's own CRI plugin drives our snapshotter, nothing else.
 * Real containerd (CRI plugin on, `snapshotter = "nydus"`, `disable_snapshot_annotations = false`),
 * runc, docker-registry, ./bin/containerd-nydus-grpc (spawned, dedicated daemons, upstream's
 * `enable_cri_keychain`), ./bin/nydusd over FUSE. A CRI client (test/helpers/cri-client.ts) plays
 * the kubelet: runtime calls to containerd's socket, image calls to the snapshotter's socket
 * (`--image-service-endpoint`), whose CRI image proxy forwards them to containerd.
 *
 *  1. a nydus image of the Debian/python test image is pulled, a pod's container prints from
 *     `python3 -c`; the registry served the bootstrap and a small part of the blobs; the
 *     snapshotter received the `cri.image-ref` / `cri.layer-digest` / `cri.image-layers` labels;
 *  2. the same with the plain OCI image, and with a nydus image in a registry that wants
 *     credentials, given only in `PullImageRequest.auth` (the snapshotter has no docker config);
 *  3. removing the pods and images unmounts the rafs instances and stops their nydusd; Cleanup
 *     leaves no mount and no daemon.
 */
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { RegistryClient } from '../src/registry';
import { loadCriPackage } from '../src/snapshotter/cri-image-proxy';
import { loadSnapshotsService } from '../src/snapshotter/service';
import { describeWith } from './helpers/capabilities';
import { Containerd, recordedDaemons } from './helpers/containerd';
import { CriClient, PodHandle } from './helpers/cri-client';
import { REPO_ROOT } from './helpers/fixtures';
import { DEBIAN_2LAYER_CHANGES, pushImage } from './helpers/images';
import { SnapshotterStack, STACK_TEST_TIMEOUT_MS, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { startRegistry, TestRegistry } from './helpers/registry';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'containerd'] as const;

const USER = 'kube';
const PASSWORD = `pw-${crypto.randomBytes(9).toString('hex')}`;
const PATH_ENV = { PATH: '/usr/local/bin:/usr/bin:/bin' };
const HELLO = DEBIAN_2LAYER_CHANGES.added['/opt/nydus-test/hello.txt'];
const SCRIPT = `import json, sys; print(json.dumps({"sum": sum(range(10)), "py": sys.version_info[0], "hello": open("/opt/nydus-test/hello.txt").read()}))`;
const EXPECTED = { sum: 45, py: 3, hello: HELLO };

interface NydusLayers {
  blobs: { digest: string; size: number }[];
  boot: string;
}

async function nydusLayers(reg: TestRegistry, repo: string, credentials?: { username: string; password: string }): Promise<NydusLayers> {
  const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true, credentials });
  try {
    const layers = (await client.getManifest(repo, 'latest')).json.layers as { digest: string; size: number; annotations?: Record<string, string> }[];
    return {
      blobs: layers.filter((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] === 'true').map((l) => ({ digest: l.digest, size: l.size })),
      boot: layers.find((l) => l.annotations?.['containerd.io/snapshot/nydus-bootstrap'] === 'true')!.digest,
    };
  } finally {
    await client.close();
  }
}

/** Bytes the registry served for one blob: Range lengths, or the whole blob for a plain GET. */
function blobBytes(reg: TestRegistry, digest: string, size: number): number {
  let total = 0;
  for (const r of reg.requests()) {
    if (r.method !== 'GET' || !r.path.includes(`/blobs/${digest}`) || r.status >= 400) continue;
    const m = /bytes=(\d+)-(\d*)/.exec(r.range ?? '');
    total += m ? (m[2] ? Number(m[2]) : size - 1) - Number(m[1]) + 1 : size;
  }
  return total;
}

/** The snapshots our snapshotter holds, with the labels it keeps, straight from its own socket. */
function listSnapshots(sock: string): Promise<{ name: string; kind: string; labels: Record<string, string> }[]> {
  const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
  const c = new Ctor(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as { List(req: object): grpc.ClientReadableStream<{ info: any[] }> } & grpc.Client;
  return new Promise((resolve, reject) => {
    const out: { name: string; kind: string; labels: Record<string, string> }[] = [];
    const s = c.List({ snapshotter: 'nydus', filters: [] });
    s.on('data', (m) => out.push(...m.info));
    s.on('error', (e) => {
      c.close();
      reject(e);
    });
    s.on('end', () => {
      c.close();
      resolve(out);
    });
  });
}

/** rafs instance mounts of the snapshotter with state in `root`. */
function rafsMounts(root: string): string[] {
  return fs
    .readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1])
    .filter((m) => m && m.startsWith(path.join(root, 'mnt') + '/'));
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describeWith(NEEDS, 'containerd CRI plugin drives containerd-nydus-grpc', () => {
  let dir: string;
  let root: string;
  let sock: string;
  let reg: TestRegistry | undefined;
  let priv: TestRegistry | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let cri: CriClient | undefined;
  let nydusRef: string;
  let ociRef: string;
  let privRef: string;
  let layers: NydusLayers;
  let privLayers: NydusLayers;
  const pods: PodHandle[] = [];
  /** Every nydusd pid the snapshotter recorded during the tests. */
  const seenDaemons = new Set<number>();

  const snapshotterLog = (): string => stack!.log();
  const noteDaemons = (): void => recordedDaemons(root).forEach((d) => seenDaemons.add(d.pid));

  /** One pod with one container running `python3 -c SCRIPT` from `image`; returns its stdout lines. */
  async function runPython(name: string, image: string): Promise<string[]> {
    const pod = await cri!.runPod(name, path.join(dir, 'pods', name));
    pods.push(pod);
    const id = await cri!.createContainer(pod, 'py', image, ['python3', '-c', SCRIPT], PATH_ENV);
    await cri!.startContainer(id);
    noteDaemons();
    const st = await cri!.waitExited(id, 5 * 60_000);
    const lines = cri!.readLog(st.log_path); // ContainerStatus gives the full path
    expect({ exit: st.exit_code, stderr: lines.filter((l) => l.stream === 'stderr') }).toEqual({ exit: 0, stderr: [] });
    return lines.filter((l) => l.stream === 'stdout').map((l) => l.text);
  }

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sncri-'));
    reg = await startRegistry();
    priv = await startRegistry({ auth: 'basic', username: USER, password: PASSWORD });
    const pause = await pushImage(reg, 'pause', 'pause', '3.6');
    ociRef = await pushImage(reg, 'debian-2layer', 'oci/debian');
    nydusRef = `${reg.host}/nydus/debian:latest`;
    await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', ociRef, '--target', nydusRef, '--plain-http'], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
    layers = await nydusLayers(reg, 'nydus/debian');
    // The private image: the same files in other blobs (another chunk size), so that it shares no
    // snapshot and no cached chunk with the public one. Only nydusify gets a docker config.
    privRef = `${priv.host}/private/debian:latest`;
    const convertDocker = path.join(dir, 'nydusify-docker');
    fs.mkdirSync(convertDocker, { mode: 0o700 });
    fs.writeFileSync(path.join(convertDocker, 'config.json'), JSON.stringify({ auths: { [priv.host]: { auth: Buffer.from(`${USER}:${PASSWORD}`).toString('base64') } } }), { mode: 0o600 });
    await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', ociRef, '--target', privRef, '--plain-http', '--fs-chunk-size', '0x80000'], {
      timeout: 15 * 60_000,
      maxBuffer: 1 << 24,
      env: { ...process.env, DOCKER_CONFIG: convertDocker },
    });
    fs.rmSync(convertDocker, { recursive: true });
    privLayers = await nydusLayers(priv, 'private/debian', { username: USER, password: PASSWORD });
    expect(privLayers.blobs.filter((b) => layers.blobs.some((l) => l.digest === b.digest))).toEqual([]);
    // containerd's CRI pulls: both registries are plain HTTP (certs.d, as the kubelet's node has).
    const certs = path.join(dir, 'certs.d');
    for (const r of [reg, priv]) {
      fs.mkdirSync(path.join(certs, r.host), { recursive: true });
      fs.writeFileSync(path.join(certs, r.host, 'hosts.toml'), `server = "${r.url}"\n[host."${r.url}"]\n  capabilities = ["pull", "resolve"]\n`);
    }
    const ctdDir = path.join(dir, 'ctd');
    // No docker config and no credential variables: the CRI pull is the only source of credentials.
    const emptyDocker = path.join(dir, 'docker');
    fs.mkdirSync(emptyDocker, { mode: 0o700 });
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/PASSWORD|SECRET|TOKEN|AUTH|_USER$/i.test(k)));
    stack = await startSnapshotterStack({
      dir,
      daemonMode: 'multiple',
      extraToml: `[remote.auth]\nenable_cri_keychain = true\nimage_service_address = "${ctdDir}/containerd.sock"`,
      env: { ...env, DOCKER_CONFIG: emptyDocker },
      containerd: { dir: ctdDir, cri: { sandboxImage: pause, registryConfigPath: certs } },
    });
    ({ root, ctd, address: sock } = stack);
    cri = new CriClient({ runtime: ctd!.address, image: sock });
    expect((await cri.version()).runtime_name).toBe('containerd');
  }, 30 * 60_000);

  afterAll(async () => {
    for (const p of pods) {
      await cri?.stopPod(p.id).catch(() => undefined);
      await cri?.removePod(p.id).catch(() => undefined);
    }
    cri?.close();
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await reg?.stop();
      await priv?.stop();
    }
  }, 180_000);

  test('1: a nydus image pulled and run through CRI only: lazy, right output, CRI labels reached the snapshotter', async () => {
    reg!.clearRequests();
    const imageId = await cri!.pullImage(nydusRef);
    expect(imageId).toMatch(/^sha256:[0-9a-f]{64}$/);
    // The pull fetched the bootstrap layer and none of the blob layers.
    expect(blobBytes(reg!, layers.boot, 1)).toBeGreaterThan(0);
    const served = (): number => layers.blobs.reduce((a, b) => a + blobBytes(reg!, b.digest, b.size), 0);
    expect(served()).toBe(0);

    const out = await runPython('nydus-pod', nydusRef);
    expect(out.map((l) => JSON.parse(l))).toEqual([EXPECTED]);
    const blobTotal = layers.blobs.reduce((a, b) => a + b.size, 0);
    expect(served()).toBeGreaterThan(0);
    expect(served()).toBeLessThan(blobTotal * 0.3);

    // What containerd's CRI plugin passed, as the snapshotter kept it on the image's layers.
    const snaps = (await listSnapshots(sock)).filter((s) => s.labels['containerd.io/snapshot/cri.image-ref'] === nydusRef);
    const all = [...layers.blobs.map((b) => b.digest), layers.boot];
    expect(snaps.map((s) => s.labels['containerd.io/snapshot/cri.layer-digest']).sort()).toEqual([...all].sort());
    for (const s of snaps) {
      const i = all.indexOf(s.labels['containerd.io/snapshot/cri.layer-digest']);
      // containerd lists this layer and the ones above it (it truncates long lists; ours are short).
      expect(s.labels['containerd.io/snapshot/cri.image-layers']).toBe(all.slice(i).join(','));
    }
    // Blob layers were never downloaded: the snapshotter answered them as remote snapshots.
    expect(snaps.filter((s) => s.labels['containerd.io/snapshot/remote']).length).toBe(layers.blobs.length);
    expect(rafsMounts(root)).toHaveLength(1);
  }, STACK_TEST_TIMEOUT_MS);

  test('2a: a plain OCI image through CRI runs from overlay snapshots, without nydusd', async () => {
    const mountsBefore = rafsMounts(root);
    await cri!.pullImage(ociRef);
    const out = await runPython('oci-pod', ociRef);
    expect(out.map((l) => JSON.parse(l))).toEqual([EXPECTED]);
    const snaps = (await listSnapshots(sock)).filter((s) => s.labels['containerd.io/snapshot/cri.image-ref'] === ociRef);
    expect(snaps.length).toBe(2); // the image's two layers, unpacked by containerd into our snapshots
    expect(snaps.every((s) => !s.labels['containerd.io/snapshot/remote'])).toBe(true);
    expect(rafsMounts(root)).toEqual(mountsBefore);
  }, STACK_TEST_TIMEOUT_MS);

  test('the CRI proxy forwards other image calls, and upstream errors of streaming calls, unchanged', async () => {
    const tags = (await cri!.listImages()).flatMap((i) => i.repo_tags);
    expect(tags).toEqual(expect.arrayContaining([nydusRef, ociRef]));
    // StreamImages is newer than containerd 1.6's CRI: containerd's UNIMPLEMENTED comes back through the proxy.
    const Img = loadCriPackage().ImageService;
    const c = new Img(`unix://${sock}`, grpc.credentials.createInsecure());
    const err = await new Promise<grpc.ServiceError>((resolve) => {
      const s = (c as unknown as { StreamImages(req: object): grpc.ClientReadableStream<unknown> }).StreamImages({});
      s.on('data', () => undefined);
      s.on('error', resolve);
    });
    c.close();
    expect(err.code).toBe(grpc.status.UNIMPLEMENTED);
  }, STACK_TEST_TIMEOUT_MS);

  test('2b: a private nydus image; its credentials come only from PullImageRequest.auth and reach its nydusd', async () => {
    // Without credentials the registry refuses containerd: the image really is private.
    await expect(cri!.pullImage(privRef)).rejects.toThrow(/401|unauthorized|authorization/i);
    priv!.clearRequests();
    await cri!.pullImage(privRef, { username: USER, password: PASSWORD });
    const out = await runPython('private-pod', privRef);
    expect(out.map((l) => JSON.parse(l))).toEqual([EXPECTED]);
    // nydusd read the blobs itself, authorised; the mount was given the CRI credentials.
    const blobReads = priv!.requests().filter((r) => r.method === 'GET' && privLayers.blobs.some((b) => r.path.includes(`/blobs/${b.digest}`)));
    expect(blobReads.length).toBeGreaterThan(0);
    expect(blobReads.every((r) => r.authorized && r.status < 400)).toBe(true);
    const mounted = snapshotterLog()
      .split('\n')
      .filter((l) => l.includes('rafs instance mounted'))
      .map((l) => JSON.parse(l) as { image: string; credentials: string });
    expect(mounted.map((m) => [m.image, m.credentials])).toEqual([
      [nydusRef, 'none'],
      [privRef, 'cri'],
    ]);
    // The password is in no log, no state file and no process argument.
    const b64 = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    const places = [snapshotterLog(), ctd!.log(), ...fs.readdirSync(path.join(root, 'logs'), { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => fs.readFileSync(path.join(e.parentPath, e.name), 'latin1'))];
    for (const p of ['metadata.db', 'metadata.db-wal']) if (fs.existsSync(path.join(root, p))) places.push(fs.readFileSync(path.join(root, p), 'latin1'));
    const { stdout: ps } = await run('ps', ['-eo', 'args']);
    places.push(ps);
    expect(places.filter((t) => t.includes(PASSWORD) || t.includes(b64)).length).toBe(0);
  }, STACK_TEST_TIMEOUT_MS);

  test('3: removing the pods and the images unmounts the instances; Cleanup leaves no mount or daemon', async () => {
    noteDaemons();
    expect(rafsMounts(root).length).toBe(2);
    expect([...seenDaemons].filter(alive).length).toBe(2); // dedicated mode: one nydusd per image
    for (const p of pods.splice(0)) {
      await cri!.stopPod(p.id);
      await cri!.removePod(p.id);
    }
    expect(await cri!.listPods()).toEqual([]);
    for (const ref of [nydusRef, ociRef, privRef]) await cri!.removeImage(ref);
    expect(await cri!.imageStatus(nydusRef)).toBeNull();
    // containerd's garbage collector removes the snapshots through the proxy; bounded wait.
    const gone = async (): Promise<boolean> => {
      const left = (await listSnapshots(sock)).filter((s) => [nydusRef, ociRef, privRef].includes(s.labels['containerd.io/snapshot/cri.image-ref']));
      return left.length === 0 && rafsMounts(root).length === 0;
    };
    for (let i = 0; i < 150 && !(await gone()); i++) await new Promise((r) => setTimeout(r, 200));
    expect(await gone()).toBe(true);
    // Cleanup as containerd calls it on the proxy snapshotter, then nothing is left behind.
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    const c = new Ctor(`unix://${sock}`, grpc.credentials.createInsecure()) as unknown as { Cleanup(req: object, cb: (e: Error | null) => void): void } & grpc.Client;
    await new Promise<void>((res, rej) => c.Cleanup({ snapshotter: 'nydus' }, (e) => (e ? rej(e) : res())));
    c.close();
    expect(rafsMounts(root)).toEqual([]);
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(`${root}/mnt/`);
    // The manager stops a daemon, waits for its exit (up to 5 s before SIGKILL), then drops its
    // record: wait for both, bounded well past that (the fresh-clone CI run on a loaded machine
    // once saw the record still there after 5 s).
    for (let i = 0; i < 300 && ([...seenDaemons].some(alive) || recordedDaemons(root).length > 0); i++) await new Promise((r) => setTimeout(r, 100));
    expect([...seenDaemons].filter(alive)).toEqual([]);
    expect(recordedDaemons(root)).toEqual([]);
  }, STACK_TEST_TIMEOUT_MS);
});
