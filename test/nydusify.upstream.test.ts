/**
 * ./bin/nydusify behaves as upstream's nydusify (contrib/nydusify/cmd/nydusify.go, its converter
 * and acceleration-service's nydus driver):
 *  - --source-insecure / --target-insecure skip TLS verification: a docker-registry serving HTTPS
 *    with a self-signed certificate (made by openssl here) converts with them and fails without;
 *    --plain-http talks HTTP to a plain registry, which fails without it;
 *  - Docker source -> Docker media types (bootstrap: Docker's gzip layer) unless --oci; the config
 *    history gets the converter's entry; the manifest carries the source annotations;
 *  - --prefetch-patterns reads stdin, the default prefetch is "/"; --platform list,
 *    --all-platforms, --merge-platform (index with the source image, an empty layer prepended, and
 *    the nydus image marked with artifactType and os.features), check --multi-platform;
 *  - --output-json is upstream's metric; --oci-ref, --fs-version 5 and --reverse are refused with
 *    one line; an upstream tuning flag we ignore is named in one warning line; --target-suffix.
 * Needs `npm run build` (bin/nydusify runs dist/cli/nydusify.js); the test builds if dist is missing.
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { unpackBootstrap } from '../src/convert';
import { decodeBootstrap } from '../src/format/decode';
import { RegistryClient, OCI_INDEX } from '../src/registry';
import { freePort, startRegistry, TestRegistry } from './helpers/registry';
import { pushImage } from './helpers/images';
import { REPO_ROOT } from './helpers/fixtures';

jest.setTimeout(15 * 60_000);

const BIN = path.join(REPO_ROOT, 'bin', 'nydusify');

interface Run { code: number; stdout: string; stderr: string }

function nydusify(args: string[], input = ''): Promise<Run> {
  return new Promise((resolve) => {
    const p = spawn(BIN, args, { env: { ...process.env, NYDUSIFY_SOURCE_USER: '', NYDUSIFY_TARGET_USER: '' } });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (c) => { stdout += c; });
    p.stderr.on('data', (c) => { stderr += c; });
    const timer = setTimeout(() => p.kill('SIGKILL'), 5 * 60_000);
    p.on('close', (code) => { clearTimeout(timer); resolve({ code: code ?? 1, stdout, stderr }); });
    p.stdin.end(input);
  });
}

/** A docker-registry serving HTTPS with a self-signed certificate for 127.0.0.1. */
async function startTlsRegistry(): Promise<{ host: string; stop(): Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusify-tls-'));
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '2',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const port = await freePort();
  fs.mkdirSync(path.join(dir, 'storage'));
  fs.writeFileSync(path.join(dir, 'config.yml'), [
    'version: 0.1', 'log:', '  level: warn', 'storage:', '  filesystem:', `    rootdirectory: ${path.join(dir, 'storage')}`,
    'http:', `  addr: 127.0.0.1:${port}`, '  tls:', `    certificate: ${cert}`, `    key: ${key}`, '',
  ].join('\n'));
  const log = fs.openSync(path.join(dir, 'registry.log'), 'a');
  const proc: ChildProcess = spawn('/usr/bin/docker-registry', ['serve', path.join(dir, 'config.yml')], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  // Bounded wait for the TLS listener.
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      https.get({ host: '127.0.0.1', port, path: '/v2/', rejectUnauthorized: false }, (res) => { res.resume(); resolve(true); }).on('error', () => resolve(false));
    });
    if (up) return { host: `127.0.0.1:${port}`, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error('TLS docker-registry did not come up');
}

beforeAll(() => {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'nydusify.js'))) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'ignore' });
});

describe('registry transport flags as upstream', () => {
  let tls: Awaited<ReturnType<typeof startTlsRegistry>> | undefined;
  let plain: TestRegistry | undefined;
  beforeAll(async () => {
    tls = await startTlsRegistry();
    plain = await startRegistry();
    await pushImage(tls, 'busybox', 'src/busybox', 'v1');
    await pushImage(plain, 'busybox', 'src/busybox', 'v1');
  });
  afterAll(async () => {
    await tls?.stop();
    await plain?.stop();
  });

  test('self-signed HTTPS: --source-insecure/--target-insecure skip verification; without them the certificate is refused', async () => {
    const refused = await nydusify(['convert', '--source', `${tls!.host}/src/busybox:v1`, '--target', `${tls!.host}/nydus/busybox:v1`]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr.trim().split('\n').pop()).toMatch(/^nydusify: error: .*(self[- ]signed|certificate)/i);
    const ok = await nydusify(['convert', '--source', `${tls!.host}/src/busybox:v1`, '--target', `${tls!.host}/nydus/busybox:v1`, '--source-insecure', '--target-insecure']);
    expect(ok.stderr).not.toMatch(/error/);
    expect(ok.code).toBe(0);
    const check = await nydusify(['check', '--source', `${tls!.host}/src/busybox:v1`, '--target', `${tls!.host}/nydus/busybox:v1`, '--source-insecure', '--target-insecure']);
    expect(check.stdout).toMatch(/^check passed: .* 1 blobs, \d+ chunks verified, \d+ entries match the source/);
    // --plain-http against an HTTPS registry does not silently work.
    const wrong = await nydusify(['convert', '--source', `${tls!.host}/src/busybox:v1`, '--target', `${tls!.host}/nydus/busybox:v2`, '--plain-http']);
    expect(wrong.code).not.toBe(0);
  });

  test('plain HTTP: --plain-http works; --source-insecure alone (TLS) does not reach an HTTP registry', async () => {
    const ok = await nydusify(['convert', '--source', `${plain!.host}/src/busybox:v1`, '--target', `${plain!.host}/nydus/busybox:v1`, '--plain-http']);
    expect(ok.code).toBe(0);
    expect(plain!.requests().some((r) => r.method === 'PUT' && r.path === '/v2/nydus/busybox/manifests/v1' && r.status === 201)).toBe(true);
    const tlsOnly = await nydusify(['convert', '--source', `${plain!.host}/src/busybox:v1`, '--target', `${plain!.host}/nydus/busybox:v2`, '--source-insecure', '--target-insecure']);
    expect(tlsOnly.code).not.toBe(0);
    expect(tlsOnly.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('conversion output and flags as upstream', () => {
  let reg: TestRegistry;
  let client: RegistryClient;
  beforeAll(async () => {
    reg = await startRegistry();
    client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    await pushImage(reg, 'busybox', 'src/busybox', 'v1');
    await pushImage(reg, 'busybox', 'src/busybox-docker', 'v1', 'v2s2');
  });
  afterAll(async () => {
    await client?.close();
    await reg?.stop();
  });
  const conv = (args: string[], input = '') => nydusify(['convert', '--plain-http', ...args], input);
  const bootstrapOf = async (repo: string, digest: string) => {
    const m = await client.getManifestRaw(repo, digest);
    const { bootstrap } = await unpackBootstrap(await client.getBlobBuffer(repo, m.json.layers.at(-1).digest), 'test');
    return decodeBootstrap(bootstrap);
  };

  test('Docker source: Docker types, converter history, source annotations, upstream tar layout; --oci gives OCI types', async () => {
    const src = await client.getManifestRaw('src/busybox-docker', 'v1');
    const r = await conv(['--source', `${reg.host}/src/busybox-docker:v1`, '--target', `${reg.host}/nydus/busybox:docker`]);
    expect(r.code).toBe(0);
    const m = await client.getManifestRaw('nydus/busybox', 'docker');
    expect(m.mediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(m.json.config.mediaType).toBe('application/vnd.docker.container.image.v1+json');
    const boot = m.json.layers.at(-1);
    expect(boot.mediaType).toBe('application/vnd.docker.image.rootfs.diff.tar.gzip');
    expect(boot.annotations).toEqual({ 'containerd.io/snapshot/nydus-fs-version': '6', 'containerd.io/snapshot/nydus-bootstrap': 'true' });
    expect(m.json.annotations).toEqual({
      'containerd.io/snapshot/nydus-source-digest': src.digest,
      'containerd.io/snapshot/nydus-source-reference': `${reg.host}/src/busybox-docker:v1`,
      'containerd.io/snapshot/nydus-fs-version': '6',
    });
    const cfg = JSON.parse((await client.getBlobBuffer('nydus/busybox', m.json.config.digest)).toString());
    expect(cfg.history.at(-1)).toEqual({ created_by: 'Nydus Converter', comment: 'Nydus Bootstrap Layer' });
    // The bootstrap tar as upstream packs it: directory "image" 0755, then image/image.boot 0444.
    const tar = gunzipSync(await client.getBlobBuffer('nydus/busybox', boot.digest));
    expect(tar.subarray(0, 100).toString().replace(/\0+$/, '')).toBe('image');
    const mode = (at: number) => parseInt(tar.subarray(at + 100, at + 108).toString().replace(/[\0 ]+$/, ''), 8);
    expect(mode(0)).toBe(0o755);
    expect(tar.subarray(512, 612).toString().replace(/\0+$/, '')).toBe('image/image.boot');
    expect(mode(512)).toBe(0o444);
    // Upstream's default prefetch pattern is "/" (everything).
    expect((await bootstrapOf('nydus/busybox', 'docker')).prefetch).toEqual(['/']);

    const oci = await conv(['--source', `${reg.host}/src/busybox-docker:v1`, '--target', `${reg.host}/nydus/busybox:oci`, '--oci']);
    expect(oci.code).toBe(0);
    const mo = await client.getManifestRaw('nydus/busybox', 'oci');
    expect(mo.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(mo.json.config.mediaType).toBe('application/vnd.oci.image.config.v1+json');
    expect(mo.json.layers.at(-1).mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
  });

  test('--prefetch-patterns reads stdin; --prefetch-dir; they conflict', async () => {
    const r = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:prefetch`, '--prefetch-patterns'], '/bin/busybox\n/etc/passwd\n');
    expect(r.code).toBe(0);
    const m = await client.getManifestRaw('nydus/busybox', 'prefetch');
    expect((await bootstrapOf('nydus/busybox', m.digest)).prefetch).toEqual(['/bin/busybox', '/etc/passwd']);
    const d = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:pdir`, '--prefetch-dir', '/etc']);
    expect(d.code).toBe(0);
    expect((await bootstrapOf('nydus/busybox', (await client.getManifestRaw('nydus/busybox', 'pdir')).digest)).prefetch).toEqual(['/etc']);
    const both = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:x`, '--prefetch-dir', '/etc', '--prefetch-patterns'], '/bin\n');
    expect(both.stderr.trim()).toBe('nydusify: error: --prefetch-dir conflicts with --prefetch-patterns');
  });

  test('--output-json is upstream\'s metric', async () => {
    const out = path.join(os.tmpdir(), `nydusify-metric-${process.pid}.json`);
    try {
      const r = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:metric`, '--output-json', out]);
      expect(r.code).toBe(0);
      const metric = JSON.parse(fs.readFileSync(out, 'utf8'));
      expect(Object.keys(metric)).toEqual(['SourceImageSize', 'TargetImageSize', 'SourcePullElapsed', 'ConversionElapsed', 'TargetPushElapsed']);
      const src = await client.getManifestRaw('src/busybox', 'v1');
      const tgt = await client.getManifestRaw('nydus/busybox', 'metric');
      const size = (m: { config: { size: number }; layers: { size: number }[] }) => m.config.size + m.layers.reduce((a, l) => a + l.size, 0);
      expect(metric.SourceImageSize).toBe(size(src.json));
      expect(metric.TargetImageSize).toBe(size(tgt.json));
    } finally {
      fs.rmSync(out, { force: true });
    }
  });

  test('--platform list, --all-platforms, --merge-platform and check --multi-platform', async () => {
    const m = await client.getManifestRaw('src/busybox', 'v1');
    const entry = (architecture: string) => ({ mediaType: m.mediaType, digest: m.digest, size: m.body.length, platform: { os: 'linux', architecture } });
    const index = { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [entry('amd64'), entry('arm64')] };
    await client.putManifest('src/busybox', 'multi', OCI_INDEX, Buffer.from(JSON.stringify(index)));

    // One platform (the default linux/amd64): a manifest, as upstream unwraps a one-entry index.
    expect((await conv(['--source', `${reg.host}/src/busybox:multi`, '--target', `${reg.host}/nydus/busybox:one`])).code).toBe(0);
    expect((await client.getManifestRaw('nydus/busybox', 'one')).mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    // Two: an index of two nydus manifests.
    for (const flags of [['--platform', 'linux/amd64,linux/arm64'], ['--all-platforms']]) {
      const r = await conv(['--source', `${reg.host}/src/busybox:multi`, '--target', `${reg.host}/nydus/busybox:two`, ...flags]);
      expect(r.code).toBe(0);
      const two = await client.getManifestRaw('nydus/busybox', 'two');
      expect(two.mediaType).toBe(OCI_INDEX);
      expect(two.json.manifests.map((d: { platform: { architecture: string } }) => d.platform.architecture)).toEqual(['amd64', 'arm64']);
    }
    const conflict = await conv(['--source', `${reg.host}/src/busybox:multi`, '--target', `${reg.host}/nydus/busybox:x`, '--all-platforms', '--platform', 'linux/arm64']);
    expect(conflict.stderr.trim()).toBe('nydusify: error: --all-platforms conflicts with --platform');

    const r = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:merged`, '--merge-platform']);
    expect(r.code).toBe(0);
    const merged = await client.getManifestRaw('nydus/busybox', 'merged');
    expect(merged.mediaType).toBe(OCI_INDEX);
    const [ociEntry, nydusEntry] = merged.json.manifests;
    expect(merged.json.manifests).toHaveLength(2);
    expect(nydusEntry.artifactType).toBe('application/vnd.nydus.image.manifest.v1+json');
    expect(nydusEntry.platform).toEqual({ os: 'linux', architecture: 'amd64', 'os.features': ['nydus.remoteimage.v1'] });
    expect(ociEntry.platform).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(ociEntry.annotations['containerd.io/snapshot/nydus-source-digest']).toBe(m.digest);
    const nm = await client.getManifestRaw('nydus/busybox', nydusEntry.digest);
    expect(nm.json.config.mediaType).toBe('application/vnd.nydus.image.config.v1+json');
    // The source image with upstream's empty layer in front: its diff_id is the empty tar's.
    const om = await client.getManifestRaw('nydus/busybox', ociEntry.digest);
    expect(om.json.layers.slice(1)).toEqual(m.json.layers);
    expect(om.json.layers[0].annotations).toEqual({ 'containerd.io/snapshot/nydus-empty-layer': 'true' });
    const empty = gunzipSync(await client.getBlobBuffer('nydus/busybox', om.json.layers[0].digest));
    const ocfg = JSON.parse((await client.getBlobBuffer('nydus/busybox', om.json.config.digest)).toString());
    expect(ocfg.rootfs.diff_ids[0]).toBe(`sha256:${createHash('sha256').update(empty).digest('hex')}`);
    expect(ocfg.rootfs.diff_ids[0]).toBe('sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef');
    expect(ocfg.history[0]).toEqual({ created_by: 'Nydus Converter', comment: 'Nydus Empty Layer' });

    const check = await nydusify(['check', '--plain-http', '--multi-platform', '--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:merged`]);
    expect(check.stdout).toMatch(/^check passed/);
    expect(check.code).toBe(0);
    const notMerged = await nydusify(['check', '--plain-http', '--multi-platform', '--target', `${reg.host}/nydus/busybox:one`]);
    expect(notMerged.code).not.toBe(0);
    expect(notMerged.stdout).toMatch(/problem: target is a application\/vnd.oci.image.manifest.v1\+json, not an index/);
  });

  test('refused and ignored upstream flags; --target-suffix', async () => {
    const base = ['--source', `${reg.host}/src/busybox:v1`, '--target', `${reg.host}/nydus/busybox:flags`];
    const refusals: [string[], string][] = [
      [['--oci-ref'], 'nydusify: error: --oci-ref: OCI-referenced (zran) nydus images are not supported by this builder'],
      [['--fs-version', '5'], 'nydusify: error: --fs-version 5: this builder writes RAFS v6 only'],
      [['--reverse'], 'nydusify: error: --reverse: nydus -> OCI conversion is not supported'],
      [['--backend-type', 'oss'], 'nydusify: error: --backend-type needs --backend-config or --backend-config-file'],
      [['--backend-type', 'gcs', '--backend-config', '{}'], 'nydusify: error: --backend-type "gcs": expected s3, oss or localfs'],
      [['--backend-type', 's3', '--backend-config', '{"bucket_name": "b"}'], 'nydusify: error: --backend-config.region: is required for the s3 backend (the SigV4 signing region)'],
      [['--chunk-dict', 'bootstrap:registry:x/y:z'], 'nydusify: error: --chunk-dict bootstrap:registry:x/y:z: a chunk dict from a registry is not supported; use bootstrap:local:PATH'],
    ];
    for (const [flags, line] of refusals) {
      const r = await conv([...base, ...flags]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim()).toBe(line);
    }
    const ignored = await conv([...base, '--batch-size', '0x100000', '--build-cache-tag', 'cache']);
    expect(ignored.code).toBe(0);
    expect(ignored.stderr).toContain('nydusify: warning: upstream flag --batch-size is accepted but has no effect here\n');
    expect(ignored.stderr).toContain('nydusify: warning: upstream flag --build-cache-tag is accepted but has no effect here\n');
    const suffix = await conv(['--source', `${reg.host}/src/busybox:v1`, '--target-suffix', '-nydus', '--fs-chunk-size', '0x200000']);
    expect(suffix.code).toBe(0);
    expect(suffix.stdout).toContain(`-> ${reg.host}/src/busybox:v1-nydus@sha256:`);
    expect((await client.getManifestRaw('src/busybox', 'v1-nydus')).json.layers.at(-1).annotations['containerd.io/snapshot/nydus-bootstrap']).toBe('true');
  });
});
