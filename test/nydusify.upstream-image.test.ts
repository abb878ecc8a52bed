/**
 * Issue 15, acceptance 2: an image pushed exactly as upstream nydusify pushes it runs through our
 * snapshotter and containerd. The image is assembled here by hand, not by our converter: the
 * nydus blob and bootstrap come from our builder (library), and everything around them follows
 * upstream's converter (nydus-snapshotter pkg/converter MergeLayers/convertManifest and
 * acceleration-service's nydus driver) for a Docker schema-2 source:
 *  - Docker manifest and config media types (upstream keeps them without --oci);
 *  - blob layers: application/vnd.oci.image.layer.nydus.blob.v1, annotation nydus-blob only;
 *  - bootstrap layer: Docker's gzip layer type, annotations nydus-fs-version and nydus-bootstrap,
 *    a tar written the way Go's archive/tar writes packToTar's entries (`image` 0755, then
 *    `image/image.boot` 0444, ustar, zero mtime) and gzip'd;
 *  - config: the OCI image fields of the source config (upstream re-marshals it as ocispec.Image),
 *    diff_ids = blob digests + the bootstrap tar's sha256, the "Nydus Converter" history entry;
 *  - manifest annotations nydus-source-digest, nydus-source-reference, nydus-fs-version.
 * It is pushed to a real docker-registry, pulled with ctr-remote rpull and run with
 * ctr run --snapshotter nydus. (Upstream's v6 fixture cannot be used: its blob id is not the
 * sha256 of the blob, so no registry accepts it under that digest.)
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { gunzipSync, gzipSync } from 'node:zlib';
import { createLayer, mergeLayers } from '../src/builder';
import { encodeBootstrap } from '../src/format/encode';
import { RegistryClient } from '../src/registry';
import { describeWith } from './helpers/capabilities';
import { Containerd } from './helpers/containerd';
import { SnapshotterStack, STACK_TEST_TIMEOUT_MS, startSnapshotterStack, stopAndRemove } from './helpers/nydus-snapshotter';
import { REPO_ROOT } from './helpers/fixtures';
import { pushImage } from './helpers/images';
import { startRegistry, TestRegistry } from './helpers/registry';

jest.setTimeout(15 * 60_000);

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** One ustar header as Go's archive/tar writes it for packToTar's entries (root, zero mtime). */
function ustarHeader(name: string, mode: number, size: number, type: '0' | '5'): Buffer {
  const h = Buffer.alloc(512);
  const put = (at: number, len: number, s: string) => h.write(s, at, len, 'ascii');
  const oct = (n: number, len: number) => `${n.toString(8).padStart(len - 1, '0')}\0`;
  put(0, 100, name);
  put(100, 8, oct(mode, 8));
  put(108, 8, oct(0, 8));
  put(116, 8, oct(0, 8));
  put(124, 12, oct(size, 12));
  put(136, 12, oct(0, 12));
  put(156, 1, type);
  put(257, 6, 'ustar\0');
  put(263, 2, '00');
  put(329, 8, oct(0, 8));
  put(337, 8, oct(0, 8));
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  put(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

function upstreamBootstrapTar(bootstrap: Buffer): Buffer {
  const pad = Buffer.alloc((512 - (bootstrap.length % 512)) % 512);
  return Buffer.concat([ustarHeader('image', 0o755, 0, '5'), ustarHeader('image/image.boot', 0o444, bootstrap.length, '0'), bootstrap, pad, Buffer.alloc(1024)]);
}

describeWith(['root', 'fuse', 'containerd'], 'an image in upstream nydusify\'s exact shape runs through our snapshotter', () => {
  let dir: string;
  let reg: TestRegistry | undefined;
  let client: RegistryClient | undefined;
  let stack: SnapshotterStack | undefined;
  let ctd: Containerd | undefined;
  let ref: string;
  let passwd: string;
  let blobDigests: string[];

  beforeAll(async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'containerd-nydus-grpc.js'))) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'ignore' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nyup-'));
    reg = await startRegistry();
    client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    const srcRef = await pushImage(reg, 'busybox', 'src/busybox', 'v1', 'v2s2');
    const src = await client.getManifest('src/busybox', 'v1');
    expect(src.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    const srcConfig = JSON.parse((await client.getBlobBuffer('src/busybox', src.json.config.digest)).toString());

    // Our builder makes one blob and one layer bootstrap per source layer; merged as upstream merges.
    const blobDir = path.join(dir, 'blobs');
    fs.mkdirSync(blobDir);
    const built = [];
    for (const [i, l] of (src.json.layers as { digest: string; size: number }[]).entries()) {
      const file = path.join(dir, `layer-${i}.tar.gz`);
      await pipeline(await client.getBlob('src/busybox', l.digest, { size: l.size }), fs.createWriteStream(file));
      if (i === 0) {
        const tar = execFileSync('tar', ['-xzOf', file, '--wildcards', '*etc/passwd']);
        passwd = tar.toString();
      }
      built.push(await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(file), gzip: true }, bootstrapPath: path.join(dir, `layer-${i}.boot`), blobDir }));
    }
    const bootstrap = encodeBootstrap(mergeLayers(built.map((b) => b.image)));
    const bootTar = upstreamBootstrapTar(bootstrap);
    const bootGz = gzipSync(bootTar);
    expect(gunzipSync(bootGz).equals(bootTar)).toBe(true);

    const blobs = built.filter((b) => b.blobId).map((b) => ({ digest: `sha256:${b.blobId}`, size: b.blobSize, path: b.blobPath! }));
    // ocispec.Image field order; Docker-only fields of the source config are not kept.
    const config = {
      created: srcConfig.created, architecture: srcConfig.architecture, os: srcConfig.os, config: srcConfig.config,
      rootfs: { type: 'layers', diff_ids: [...blobs.map((b) => b.digest), sha256(bootTar)] },
      history: [...(srcConfig.history ?? []), { created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' }],
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const manifest = {
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: sha256(configBytes), size: configBytes.length },
      layers: [
        ...blobs.map((b) => ({ mediaType: 'application/vnd.oci.image.layer.nydus.blob.v1', digest: b.digest, size: b.size, annotations: { 'containerd.io/snapshot/nydus-blob': 'true' } })),
        {
          mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: sha256(bootGz), size: bootGz.length,
          annotations: { 'containerd.io/snapshot/nydus-bootstrap': 'true', 'containerd.io/snapshot/nydus-fs-version': '6' },
        },
      ],
      annotations: {
        'containerd.io/snapshot/nydus-fs-version': '6',
        'containerd.io/snapshot/nydus-source-digest': src.digest,
        'containerd.io/snapshot/nydus-source-reference': srcRef,
      },
    };
    blobDigests = blobs.map((b) => b.digest);
    const repo = 'upstream/busybox';
    for (const b of blobs) await client.pushBlob(repo, b.digest, b.path, b.size);
    for (const data of [bootGz, configBytes]) {
      const f = path.join(dir, 'small');
      fs.writeFileSync(f, data);
      await client.pushBlob(repo, sha256(data), f, data.length);
    }
    await client.putManifest(repo, 'v1', manifest.mediaType, Buffer.from(JSON.stringify(manifest)));
    ref = `${reg.host}/${repo}:v1`;

    stack = await startSnapshotterStack({ dir });
    ctd = stack.ctd;
  }, 20 * 60_000);

  afterAll(async () => {
    try {
      await stopAndRemove(stack, dir);
    } finally {
      await client?.close();
      await reg?.stop();
    }
  }, 120_000);

  test('ctr-remote rpull + ctr run --snapshotter nydus: the container reads the image lazily', async () => {
    reg!.clearRequests();
    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
    const { stdout } = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'upstream-1', '/bin/busybox', 'cat', '/etc/passwd']);
    expect(stdout).toBe(passwd);
    expect(passwd).toMatch(/^root:x:0:0:/);
    // The data came from the nydus blob through nydusd (ranged reads of the blob).
    expect(blobDigests.length).toBeGreaterThan(0);
    expect(reg!.requests().some((r) => r.method === 'GET' && blobDigests.some((d) => r.path.endsWith(`/blobs/${d}`)) && r.range && r.status < 400)).toBe(true);
    // ... through a FUSE-mounted RAFS under the snapshotter's root (nydusd), not an unpacked layer.
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' '));
    expect(mounts.some((m) => m[1]?.startsWith(dir) && /fuse/.test(m[2] ?? ''))).toBe(true);
    const echo = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'upstream-2', '/bin/busybox', 'echo', 'upstream-shape']);
    expect(echo.stdout.trim()).toBe('upstream-shape');
  }, STACK_TEST_TIMEOUT_MS);
});
