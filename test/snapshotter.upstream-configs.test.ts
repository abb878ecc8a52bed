/**
 * An upstream user's nydusd config templates run images unchanged: the snapshotter is started with
 * nydusd templates that use every key of upstream's fusedev JSON (v1), upstream's v2 TOML and the
 * localfs JSON (our own files with those keys, test/fixtures/compat/), and a nydus image converted
 * here is pulled with ./bin/ctr-remote and run through containerd and runc with each; the keys of
 * upstream's Dragonfly templates (misc/dragonfly/*.json: every key any of them uses, the SDK's
 * scheduler endpoint included) too, the proxy pointed at the dfdaemon stand-in, which must then
 * carry the blob reads. Keys that point
 * at things absent here (a Dragonfly proxy on 127.0.0.1:65001, another registry's credentials) must
 * not stop the image from running: the proxy falls back to the origin, the credentials stay with
 * their own host.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describeWith } from './helpers/capabilities';
import { Dfdaemon, startDfdaemon } from './helpers/dfdaemon';
import { Containerd, startContainerd } from './helpers/containerd';
import { REPO_ROOT } from './helpers/fixtures';
import { pushImage } from './helpers/images';
import { startRegistry, TestRegistry } from './helpers/registry';
import { RegistryClient } from '../src/registry';
import { parseConfig } from '../src/snapshotter/config';
import { runSnapshotter } from '../src/snapshotter/run';

const run = promisify(execFile);
const COMPAT = path.join(REPO_ROOT, 'test', 'fixtures', 'compat');

describeWith(['root', 'fuse', 'containerd'], 'upstream nydusd config templates through the snapshotter', () => {
  let dir: string;
  let reg: TestRegistry | undefined;
  let df: Dfdaemon | undefined;
  let ref: string;
  let blobDigest: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sn-upcfg-'));
    reg = await startRegistry();
    df = await startDfdaemon();
    const src = await pushImage(reg, 'busybox', 'oci/busybox');
    ref = `${reg.host}/nydus/busybox:latest`;
    await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', src, '--target', ref, '--plain-http'], { timeout: 10 * 60_000, maxBuffer: 1 << 24 });
    const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    try {
      const layers = (await client.getManifest('nydus/busybox', 'latest')).json.layers as { digest: string; annotations?: Record<string, string> }[];
      blobDigest = layers.find((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] === 'true')!.digest;
      // The localfs template reads blobs from a directory, named by blob id as upstream names them.
      fs.mkdirSync(path.join(dir, 'blobs'));
      fs.writeFileSync(path.join(dir, 'blobs', blobDigest.slice('sha256:'.length)), await client.getBlobBuffer('nydus/busybox', blobDigest));
    } finally {
      await client.close();
    }
  }, 20 * 60_000);

  afterAll(async () => {
    await df?.close();
    await reg?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  const templates: [string, () => string][] = [
    ['fusedev JSON, every v1 key', () => path.join(COMPAT, 'nydusd-v1-all-keys.json')],
    [
      'v2 TOML, every key',
      () => {
        // Values that name things a user's machine has and this one lacks, set to what exists here:
        // the registry CA file (the system bundle), and the Dragonfly proxy, which is absent, so it
        // must fall back to the origin rather than fail (fallback = false names a dfdaemon that runs).
        const text = fs
          .readFileSync(path.join(COMPAT, 'nydusd-v2-all-keys.toml'), 'utf8')
          .replace('/etc/ssl/private-ca.pem', '/etc/ssl/certs/ca-certificates.crt')
          .replace(/^fallback = false$/m, 'fallback = true')
          .replace('blob_redirected_host = "blobs.example.test"', 'blob_redirected_host = ""');
        const file = path.join(dir, 'v2.toml');
        fs.writeFileSync(file, text);
        return file;
      },
    ],
    [
      'localfs JSON (readahead keys)',
      () => {
        const cfg = JSON.parse(fs.readFileSync(path.join(COMPAT, 'nydusd-localfs-readahead.json'), 'utf8'));
        cfg.device.backend.config.dir = path.join(dir, 'blobs');
        const file = path.join(dir, 'localfs.json');
        fs.writeFileSync(file, JSON.stringify(cfg));
        return file;
      },
    ],
    [
      'Dragonfly proxy JSON',
      () => {
        // The proxy at dfdaemon's port: here the stand-in's. Its health URL is the proxy URL, as upstream's file has it.
        const cfg = JSON.parse(fs.readFileSync(path.join(COMPAT, 'nydusd-dragonfly-proxy.json'), 'utf8'));
        cfg.device.backend.config.proxy.url = df!.url;
        cfg.device.backend.config.proxy.ping_url = df!.pingUrl;
        const file = path.join(dir, 'dragonfly.json');
        fs.writeFileSync(file, JSON.stringify(cfg));
        return file;
      },
    ],
  ];

  test.each(templates)('%s: the image runs lazily through containerd', async (name, template) => {
    const work = path.join(dir, name.replace(/[^a-z0-9]+/gi, '-'));
    const cfg = parseConfig(`daemon_mode = "shared"\n[daemon]\nnydusd_config = "${template()}"\n`, 'test', { root: path.join(work, 'root'), address: path.join(work, 'nydus.sock') });
    const sn = await runSnapshotter(cfg);
    df!.clearRequests();
    let ctd: Containerd | undefined;
    try {
      ctd = await startContainerd({ snapshotterSocket: cfg.address });
      await run(path.join(REPO_ROOT, 'bin', 'ctr-remote'), ['-a', ctd.address, '-n', ctd.namespace, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], { timeout: 10 * 60_000 });
      const id = `upcfg-${templates.findIndex((t) => t[0] === name)}`;
      const out = await ctd.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, id, '/bin/busybox', 'sh', '-c', 'echo up-$((6*7)); /bin/busybox wc -c < /bin/busybox']);
      const [hello, size] = out.stdout.trim().split('\n');
      expect(hello).toBe('up-42');
      expect(Number(size)).toBe(fs.statSync('/bin/busybox').size);
      // Only the Dragonfly template routes blob reads through dfdaemon (proxy mode).
      const viaDf = df!.requests().filter((r) => r.mode === 'proxy' && r.upstream.includes(blobDigest));
      if (name.startsWith('Dragonfly')) expect(viaDf.length).toBeGreaterThan(0);
      else expect(viaDf).toEqual([]);
    } finally {
      await ctd?.stop();
      await sn.close(true);
    }
  });

  test("upstream's snapshotter config.toml with every key runs the image (with our nydusd and template)", async () => {
    // Paths and ports are this machine's; every key stays. enable_kata_volume (true there) wins over
    // enable_nydus_overlayfs as upstream, so mounts stay plain overlay and need no mount helper.
    const text = fs
      .readFileSync(path.join(COMPAT, 'snapshotter-all-keys.toml'), 'utf8')
      .replace(/^nydusd_config = .*$/m, `nydusd_config = "${path.join(REPO_ROOT, 'config', 'nydusd.json')}"`)
      .replace(/^nydusd_path = .*$/m, `nydusd_path = "${path.join(REPO_ROOT, 'bin', 'nydusd')}"`)
      .replace(/^nydusimage_path = .*$/m, `nydusimage_path = "${path.join(REPO_ROOT, 'bin', 'nydus-image')}"`)
      .replace(/^address = "127\.0\.0\.1:9110"$/m, 'address = "127.0.0.1:0"')
      // [system] enable = true: the system controller's socket goes under this test's directory.
      .replace('/tmp/nydus-compat-root/system.sock', path.join(dir, 'all-keys-system.sock'));
    expect(text).toMatch(/^enable_kata_volume = true$/m);
    const work = path.join(dir, 'all-keys');
    const cfg = parseConfig(text, 'snapshotter-all-keys.toml', { root: path.join(work, 'root'), address: path.join(work, 'nydus.sock') });
    expect(cfg.warnings.length).toBeGreaterThan(0); // what it does not honour is named
    const sn = await runSnapshotter(cfg);
    let ctd: Containerd | undefined;
    try {
      ctd = await startContainerd({ snapshotterSocket: cfg.address });
      await run(path.join(REPO_ROOT, 'bin', 'ctr-remote'), ['-a', ctd.address, '-n', ctd.namespace, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], { timeout: 10 * 60_000 });
      const out = await ctd.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'upcfg-all-keys', '/bin/busybox', 'sh', '-c', 'echo all-$((6*7))']);
      expect(out.stdout.trim()).toBe('all-42');
    } finally {
      await ctd?.stop();
      await sn.close(true);
    }
  });
});
