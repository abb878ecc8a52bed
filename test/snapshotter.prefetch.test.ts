/**
 * Issue 18, prefetch from a recorded access pattern, end to end with real containerd 1.6, runc,
 * docker-registry, containerd-nydus-grpc and nydusd on FUSE:
 *   1. trial run: the plain nydus image (prefetch off, as config/nydusd.json ships), python runs in
 *      a container; `nydusctl prefetch-list` records the files it read from the shared nydusd;
 *   2. `nydusify convert --prefetch-patterns < list` builds the optimized image;
 *   3. a fresh snapshotter whose nydusd_config template enables fs_prefetch (upstream's knob), with
 *      `[snapshot] mount_on_pull` (ours), pulls it: the image is mounted by the pull, before any
 *      container; then it runs the same command from it: nydusd prefetched the list at mount, the
 *      output is the same, the registry served less than in the trial and a small part of the
 *      image (laziness).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { NydusdClient } from '../src/daemon/client';
import { mountAt, mountsBelow } from '../src/fuse/mount-table';
import { RegistryClient } from '../src/registry';
import { Containerd, recordedDaemons } from './helpers/containerd';
import { REPO_ROOT } from './helpers/fixtures';
import { pushImage } from './helpers/images';
import { blobBytes, SnapshotterStack, STACK_TEST_TIMEOUT_MS, startSnapshotterStack } from './helpers/nydus-snapshotter';
import { startRegistry, TestRegistry } from './helpers/registry';
import { describeWith } from './helpers/capabilities';

jest.setTimeout(Math.max(20 * 60_000, STACK_TEST_TIMEOUT_MS));
const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'containerd'] as const;
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];
const SCRIPT = 'import json, email.parser, http.client, sys; print(json.dumps({"py": sys.version_info[0], "mods": sorted(m for m in sys.modules if m in ("email.parser", "http.client"))}))';

describeWith(NEEDS, 'prefetch from a recorded access pattern through containerd-nydus-grpc', () => {
  let work: string;
  let reg: TestRegistry;
  let src: string;
  const stacks: SnapshotterStack[] = [];

  /** A snapshotter (shared nydusd, this template) and a containerd of its own. */
  async function setup(name: string, template: string, extraToml = ''): Promise<SnapshotterStack & { ctd: Containerd }> {
    const dir = path.join(work, name);
    fs.mkdirSync(path.join(dir, 'certs.d'), { recursive: true });
    const stack = await startSnapshotterStack({ dir, nydusdConfig: template, extraToml: `${extraToml}\n[remote.mirrors_config]\ndir = ${JSON.stringify(path.join(dir, 'certs.d'))}` });
    stacks.push(stack);
    return stack as SnapshotterStack & { ctd: Containerd };
  }

  /** The nydus blobs of an image in the test registry, and what the registry served of them. */
  async function served(ref: string): Promise<{ total: number; served: number }> {
    const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
    try {
      const [repo, tag] = ref.slice(reg.host.length + 1).split(':');
      const layers = (await client.getManifest(repo, tag)).json.layers as { digest: string; size: number; annotations?: Record<string, string> }[];
      const blobs = layers.filter((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] === 'true').map((l) => ({ digest: l.digest.replace(/^sha256:/, ''), size: l.size }));
      return { total: blobs.reduce((a, b) => a + b.size, 0), served: blobs.reduce((a, b) => a + blobBytes(reg, b.digest, b.size), 0) };
    } finally {
      await client.close();
    }
  }

  beforeAll(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'snp-prefetch-'));
    reg = await startRegistry();
    src = await pushImage(reg, 'debian-2layer', 'oci/debian');
  }, 30 * 60_000);

  afterAll(async () => {
    for (const s of stacks) await s.stop();
    await reg?.stop();
    if (work) fs.rmSync(work, { recursive: true, force: true });
  }, 120_000);

  test('trial run, record, convert with the list, run again with fs_prefetch: same output, prefetched at mount, fewer bytes, lazy', async () => {
    const plain = `${reg.host}/nydus/debian:plain`;
    const optimized = `${reg.host}/nydus/debian:optimized`;
    const nydusify = path.join(REPO_ROOT, 'bin', 'nydusify');
    await run(nydusify, ['convert', '--source', src, '--target', plain, '--plain-http'], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });

    // 1. Trial run on the plain image, prefetch off.
    const trial = await setup('trial', path.join(REPO_ROOT, 'config', 'nydusd.json'));
    reg.clearRequests();
    await trial.ctd.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', plain]);
    const first = await trial.ctd.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', plain, 'trial', 'python3', '-c', SCRIPT]);
    const plainServed = await served(plain);
    const list = path.join(work, 'list.txt');
    const sock = recordedDaemons(trial.root)[0].apiSock;
    await run(path.join(REPO_ROOT, 'bin', 'nydusctl'), ['--sock', sock, 'prefetch-list', '--output', list]);
    const paths = fs.readFileSync(list, 'utf8').split('\n').filter(Boolean);
    expect(paths.some((p) => /^\/usr\/lib\/python3.11\/email\/(__pycache__\/)?parser[.]/.test(p))).toBe(true);
    expect(paths.some((p) => /^\/usr\/bin\/python3/.test(p))).toBe(true);
    await trial.stop();

    // 2. Convert with the recorded list.
    // Asynchronously: the registry's recording front runs in this process.
    const conv = run(nydusify, ['convert', '--source', src, '--target', optimized, '--plain-http', '--prefetch-patterns'], { timeout: 15 * 60_000, maxBuffer: 1 << 24 });
    conv.child.stdin!.end(fs.readFileSync(list));
    await conv;

    // 3. The snapshotter's nydusd template enables fs_prefetch, the rest as shipped.
    const template = path.join(work, 'nydusd-prefetch.json');
    const base = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'config', 'nydusd.json'), 'utf8'));
    fs.writeFileSync(template, JSON.stringify({ ...base, fs_prefetch: { enable: true, threads_count: 4, merging_size: 1 << 20, prefetch_all: false } }));
    const opt = await setup('optimized', template, '[snapshot]\nmount_on_pull = true');
    reg.clearRequests();
    await opt.ctd.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', optimized]);
    // Mounted by the pull (in the background after the bootstrap layer's Commit), no container yet.
    const mountedByPull = () => mountsBelow(path.join(opt.root, 'mnt')).some((m) => mountAt(m)?.fsType.startsWith('fuse'));
    const logged = () => /image mounted on pull/.test(opt.log());
    for (let i = 0; i < 300 && !(mountedByPull() && logged()); i++) await new Promise((r) => setTimeout(r, 100));
    expect(mountedByPull()).toBe(true);
    expect(logged()).toBe(true);
    const second = await opt.ctd.ctr(['run', '--rm', ...ENV, '--snapshotter', 'nydus', optimized, 'optimized', 'python3', '-c', SCRIPT]);
    expect(second.stdout).toBe(first.stdout);
    expect(JSON.parse(second.stdout)).toEqual({ py: 3, mods: ['email.parser', 'http.client'] });
    const client = new NydusdClient(recordedDaemons(opt.root)[0].apiSock);
    let cache: { prefetch_end_time_millis: number; prefetch_data_amount: number; prefetch_errors: number } | undefined;
    for (let i = 0; i < 600; i++) {
      cache = await client.call('GET', '/api/v1/metrics/blobcache');
      if (cache!.prefetch_end_time_millis > 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(cache!.prefetch_end_time_millis).toBeGreaterThan(0);
    expect(cache!.prefetch_errors).toBe(0);
    // Prefetch fetched the list: whole files, so at least what the program read of them.
    const fsm = await client.call<{ data_read: number }>('GET', '/api/v1/metrics');
    expect(fsm.data_read).toBeGreaterThan(1 << 20);
    expect(cache!.prefetch_data_amount).toBeGreaterThanOrEqual(fsm.data_read);
    const optServed = await served(optimized);
    expect(optServed.served).toBeGreaterThan(0);
    expect(optServed.served).toBeLessThan(plainServed.served);
    expect(optServed.served).toBeLessThan(optServed.total * 0.1);
  });
});
