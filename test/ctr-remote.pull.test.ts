/**
 * ./bin/ctr-remote against a real containerd 1.6, runc, docker-registry and our snapshotter
 * (shared nydusd): a nydus image pulls without its blob layer and runs lazily, a plain OCI image
 * pulls and runs, and the three usual mistakes (unknown reference, refused credentials, missing
 * snapshotter) each end with one line.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { describeWith } from './helpers/capabilities';
import { Containerd, startContainerd } from './helpers/containerd';
import { REPO_ROOT } from './helpers/fixtures';
import { pushImage } from './helpers/images';
import { startRegistry, TestRegistry } from './helpers/registry';
import { parseConfig } from '../src/snapshotter/config';
import { runSnapshotter, RunningSnapshotter } from '../src/snapshotter/run';
import { RegistryClient } from '../src/registry';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'containerd'] as const;

interface Layer {
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Converts the image `src` to `host/repo:latest` with ./bin/nydusify over plain HTTP; returns the
 * nydus manifest's layers as the registry holds them. */
async function nydusify(src: string, host: string, repo: string): Promise<Layer[]> {
  await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', src, '--target', `${host}/${repo}:latest`, '--plain-http'], {
    timeout: 10 * 60_000,
    maxBuffer: 1 << 24,
  });
  const client = new RegistryClient({ registry: host, insecure: true, noDockerConfig: true });
  try {
    return (await client.getManifest(repo, 'latest')).json.layers as Layer[];
  } finally {
    await client.close();
  }
}

describeWith(NEEDS, 'ctr-remote images rpull', () => {
  let dir: string;
  let reg: TestRegistry | undefined;
  let authReg: TestRegistry | undefined;
  let tokenReg: TestRegistry | undefined;
  let sn: RunningSnapshotter | undefined;
  let ctd: Containerd | undefined;
  let ociRef: string;
  let nydusRef: string;
  let nydusLayers: Layer[];

  /** Runs ./bin/ctr-remote against the test containerd; never rejects. */
  const ctrRemote = (args: string[], env: NodeJS.ProcessEnv = process.env, namespace = ctd!.namespace): Promise<{ code: number; stdout: string; stderr: string }> =>
    new Promise((resolve) => {
      execFile(path.join(REPO_ROOT, 'bin', 'ctr-remote'), ['-a', ctd!.address, '-n', namespace, ...args], { env, timeout: 10 * 60_000, maxBuffer: 1 << 24 }, (err, stdout, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout, stderr }),
      );
    });

  /** GET requests the registry answered for blob `digest`. */
  const blobGets = (digest: string): number => reg!.requests().filter((r) => r.method === 'GET' && r.path.includes(`/blobs/${digest}`) && r.status < 400).length;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ctrr-'));
    reg = await startRegistry();
    ociRef = await pushImage(reg, 'busybox', 'oci/busybox');
    nydusRef = `${reg.host}/nydus/busybox:latest`;
    nydusLayers = await nydusify(ociRef, reg.host, 'nydus/busybox');
    const cfg = parseConfig(`daemon_mode = "shared"\n[daemon]\nnydusd_config = "${path.join(REPO_ROOT, 'config', 'nydusd.json')}"\n`, 'test', {
      root: path.join(dir, 'root'),
      address: path.join(dir, 'nydus.sock'),
    });
    sn = await runSnapshotter(cfg);
    ctd = await startContainerd({ snapshotterSocket: cfg.address });
    reg.clearRequests();
  }, 20 * 60_000);

  afterAll(async () => {
    await ctd?.stop();
    await sn?.close(true);
    await reg?.stop();
    await authReg?.stop();
    await tokenReg?.stop();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('a nydus image pulls without its blob layers and runs lazily', async () => {
    const blob = nydusLayers.find((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] === 'true')!;
    const boot = nydusLayers.find((l) => l.annotations?.['containerd.io/snapshot/nydus-bootstrap'] === 'true')!;
    const r = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', nydusRef]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`layer-${blob.digest}: remote snapshot (not downloaded)`);
    expect(r.stdout).toContain(`layer-${boot.digest}: done (${boot.size} bytes)`);
    const digest = /^done: (sha256:[0-9a-f]{64})$/m.exec(r.stdout)?.[1];
    expect(digest).toBeDefined();
    // The pull fetched the bootstrap layer and not one byte of the blob.
    expect(blobGets(boot.digest)).toBe(1);
    expect(blobGets(blob.digest)).toBe(0);
    // containerd has the image under that digest, and `ctr run` starts it from the nydus snapshots.
    const ls = await ctd!.ctr(['images', 'ls']);
    expect(ls.stdout).toMatch(new RegExp(`^${nydusRef.replace(/[.]/g, '\\.')}\\s+\\S+\\s+${digest}\\s`, 'm'));
    const out = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', nydusRef, 'ctrr-nydus-1', '/bin/busybox', 'sh', '-c', 'echo lazy-$((6*7))']);
    expect(out.stdout.trim()).toBe('lazy-42');
    // Now the blob was read, on demand, by nydusd (Range requests), never by the pull.
    expect(reg!.requests().some((r2) => r2.path.includes(`/blobs/${blob.digest}`) && r2.range)).toBe(true);
    // Pulling again finds every layer in place.
    const again = await ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', nydusRef]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain(`layer-${blob.digest}: exists`);
    expect(again.stdout).toContain(`layer-${boot.digest}: exists`);
  });

  test('a plain OCI image pulls with it and runs', async () => {
    const r = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ociRef]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^layer-sha256:[0-9a-f]{64}: done \(\d+ bytes\)$/m);
    const out = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ociRef, 'ctrr-oci-1', '/bin/busybox', 'sh', '-c', 'echo plain-$((6*7))']);
    expect(out.stdout.trim()).toBe('plain-42');
  });

  test('an image another namespace holds pulls into a second one without its bytes being fetched again', async () => {
    const first = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ociRef]);
    expect(first.code).toBe(0);
    const layers = [...first.stdout.matchAll(/^layer-(sha256:[0-9a-f]{64}): /gm)].map((m) => m[1]);
    expect(layers.length).toBeGreaterThan(0);
    const gets = layers.map(blobGets);
    // containerd shares content between namespaces: its content store answers the ingest's STAT with
    // the whole size, and the layer is committed in the new namespace without a GET or a byte sent.
    const r = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ociRef], process.env, 'second');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    for (const l of layers) expect(r.stdout).toMatch(new RegExp(`^layer-${l}: done \\(\\d+ bytes\\)$`, 'm'));
    expect(r.stdout).toMatch(/total: 0\.0 MiB/);
    expect(layers.map(blobGets)).toEqual(gets);
    const out = await run('ctr', ['--address', ctd!.address, '-n', 'second', 'run', '--runc-root', ctd!.runcRoot, '--rm', '--snapshotter', 'nydus', ociRef, 'ctrr-ns2-1', '/bin/busybox', 'sh', '-c', 'echo second-$((6*7))'], { timeout: 120_000 });
    expect(out.stdout.trim()).toBe('second-42');
  });

  test('an unknown reference ends with one line naming it', async () => {
    const r = await ctrRemote(['images', 'rpull', '--plain-http', `${reg!.host}/nope/missing:latest`]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^ctr-remote: registry 127\.0\.0\.1:\d+, repository nope\/missing: GET manifest latest: HTTP 404/);
  });

  test('credentials from --user or the docker config file; a registry that refuses them ends with one line', async () => {
    authReg = await startRegistry({ auth: 'basic', username: 'alice', password: 'right-pw' });
    const ref = await pushImage(authReg, 'busybox', 'private/busybox');
    const noDockerConfig = { ...process.env, DOCKER_CONFIG: path.join(dir, 'no-docker-config') };
    const refused = await ctrRemote(['images', 'rpull', '--plain-http', '--user', 'alice:wrong-pw', ref], noDockerConfig);
    expect(refused.code).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/^ctr-remote: registry 127\.0\.0\.1:\d+, repository private\/busybox: GET manifest latest: HTTP 401: credentials rejected/);
    expect(refused.stderr).not.toContain('wrong-pw');
    const anonymous = await ctrRemote(['images', 'rpull', '--plain-http', ref], noDockerConfig);
    expect(anonymous.code).toBe(1);
    expect(anonymous.stderr).toMatch(/HTTP 401: authentication required \(no credentials given\)/);
    const withUser = await ctrRemote(['images', 'rpull', '--plain-http', '--user', 'alice:right-pw', ref], noDockerConfig);
    expect(withUser.stderr).toBe('');
    expect(withUser.code).toBe(0);
    await ctd!.ctr(['images', 'rm', '--sync', ref]);
    const cfgDir = path.join(dir, 'docker-config');
    fs.mkdirSync(cfgDir);
    fs.writeFileSync(path.join(cfgDir, 'config.json'), JSON.stringify({ auths: { [authReg.host]: { auth: Buffer.from('alice:right-pw').toString('base64') } } }), { mode: 0o600 });
    const fromFile = await ctrRemote(['images', 'rpull', '--plain-http', ref], { ...process.env, DOCKER_CONFIG: cfgDir });
    expect(fromFile.stderr).toBe('');
    expect(fromFile.code).toBe(0);
    expect(authReg.requests().filter((q) => q.path.includes('/manifests/') && q.status === 200).every((q) => q.authorized)).toBe(true);
  });

  test('a containerd socket nobody listens on ends with one line', async () => {
    const r = await new Promise<{ code: number; stderr: string }>((resolve) =>
      execFile(path.join(REPO_ROOT, 'bin', 'ctr-remote'), ['-a', path.join(dir, 'no-containerd.sock'), 'images', 'rpull', ociRef], { timeout: 60_000 }, (err, _o, stderr) =>
        resolve({ code: err ? ((err as { code?: number }).code ?? -1) : 0, stderr }),
      ),
    );
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(new RegExp(`^ctr-remote: cannot reach containerd at ${dir}/no-containerd.sock: `));
  });

  test('a snapshotter containerd does not have ends with one line', async () => {
    const r = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nosuch', ociRef]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe(`ctr-remote: snapshotter "nosuch" is not loaded in containerd at ${ctd!.address} (see ctr plugin ls)`);
  });

  test('undici\'s WebAssembly HTTP parser stays on baseline code through a pull (no TurboFan job for exit to wait on)', async () => {
    await ctd!.ctr(['images', 'rm', '--sync', ociRef]).catch(() => undefined);
    // V8 names each wasm function it compiles and the tier. With budget 1000 the parser tiers up
    // within a pull unless ctr-remote raises the budget (the build before this setting: 7 TurboFan
    // compiles in such a pull).
    const r = await run(process.execPath, ['--trace-wasm-compilation-times', '--wasm-tiering-budget=1000', path.join(REPO_ROOT, 'dist', 'cli', 'ctr-remote.js'), '-a', ctd!.address, '-n', ctd!.namespace, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ociRef], { timeout: 10 * 60_000, maxBuffer: 1 << 24 });
    expect(r.stdout).toMatch(/^done: sha256:/m);
    expect(r.stdout).toMatch(/using Liftoff/);
    expect(r.stdout).not.toMatch(/using TurboFan/);
  });

  test('no GET /v2/ before the manifest: an open registry answers it directly, a token registry with its 401', async () => {
    await ctd!.ctr(['images', 'rm', '--sync', ociRef]).catch(() => undefined);
    reg!.clearRequests();
    const open = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ociRef]);
    expect(open.code).toBe(0);
    const seen = reg!.requests();
    expect(seen[0]).toMatchObject({ method: 'GET', path: '/v2/oci/busybox/manifests/latest', status: 200 });
    expect(seen.filter((q) => q.path === '/v2/')).toEqual([]);
    tokenReg = await startRegistry({ auth: 'token', username: 'bob', password: 'tok-pw' });
    const ref = await pushImage(tokenReg, 'busybox', 'private/busybox');
    tokenReg.clearRequests();
    const noDockerConfig = { ...process.env, DOCKER_CONFIG: path.join(dir, 'no-docker-config') };
    const tls = ['--tlscacert', tokenReg.caCertPath!]; // the token realm's https certificate
    const r = await ctrRemote(['images', 'rpull', '--plain-http', ...tls, '--user', 'bob:tok-pw', ref], noDockerConfig);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const t = tokenReg.requests();
    expect(t.filter((q) => q.path === '/v2/')).toEqual([]);
    expect(t[0]).toMatchObject({ path: '/v2/private/busybox/manifests/latest', status: 401, authorized: false });
    expect(t[1]).toMatchObject({ path: '/v2/private/busybox/manifests/latest', status: 200, authorized: true });
    expect(tokenReg.tokenRequests().filter((q) => q.status === 200).length).toBeGreaterThan(0);
    const wrong = await ctrRemote(['images', 'rpull', '--plain-http', ...tls, '--user', 'bob:wrong', ref], noDockerConfig);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrong.stderr).not.toContain('wrong');
  });

  test('a failed pull leaves no lease behind (the lease is made beside the first requests)', async () => {
    const bad = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nosuch', ociRef]);
    expect(bad.code).toBe(1);
    const missing = await ctrRemote(['images', 'rpull', '--plain-http', `${reg!.host}/nope/missing:latest`]);
    expect(missing.code).toBe(1);
    const ok = await ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', nydusRef]);
    expect(ok.code).toBe(0);
    const leases = await ctd!.ctr(['leases', 'ls', '-q']);
    expect(leases.stdout.split('\n').filter((l) => l.startsWith('ctr-remote-'))).toEqual([]);
  });
});
