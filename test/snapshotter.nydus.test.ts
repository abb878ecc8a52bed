/**
 * Acceptance 1 and 3 with real containerd 1.6, runc, docker-registry, ./bin/nydusd and the kernel's
 * FUSE/overlayfs: a nydus Debian/python image is pulled lazily with `ctr-remote image rpull`, a
 * container runs python from it, and the registry saw the bootstrap and only a small part of the
 * blob. Then the snapshotter is killed with SIGKILL while a container runs and restarted; then
 * nydusd is killed and restarted by the daemon manager.
 */
import { execFile, execFileSync, spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { NydusdClient } from '../src/daemon/client';
import { Containerd, startContainerd } from './helpers/containerd';
import { debianRootfsTar, FIXTURES_DIR, IS_ROOT, REPO_ROOT } from './helpers/fixtures';
import { startRegistry, TestRegistry } from './helpers/registry';

const run = promisify(execFile);
const d = IS_ROOT ? describe : describe.skip;

const sha = (b: Buffer | string): string => crypto.createHash('sha256').update(b).digest('hex');

/**
 * A nydus image (blob layer + bootstrap layer, nydusify's manifest shape) as an OCI layout built
 * with ./bin/nydus-image from the Debian rootfs tar; cached between runs.
 */
async function nydusDebianLayout(): Promise<{ layout: string; blobSize: number; blobDigest: string; bootDigest: string }> {
  const dir = path.join(FIXTURES_DIR, 'nydus-oci', 'debian-snapshotter');
  const infoFile = path.join(dir, 'info.json');
  if (fs.existsSync(infoFile)) return JSON.parse(fs.readFileSync(infoFile, 'utf8'));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-build-'));
  try {
    const layout = path.join(work, 'layout');
    const blobs = path.join(layout, 'blobs', 'sha256');
    fs.mkdirSync(blobs, { recursive: true });
    const boot = path.join(work, 'stage', 'image', 'image.boot');
    fs.mkdirSync(path.dirname(boot), { recursive: true });
    const out = path.join(work, 'out.json');
    await run(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '--type', 'tar-rafs', '--bootstrap', boot, '--blob-dir', path.join(work, 'blob'), '--output-json', out, debianRootfsTar()], {
      timeout: 15 * 60_000,
      maxBuffer: 1 << 24,
    });
    const res = JSON.parse(fs.readFileSync(out, 'utf8')) as { blob_id: string; blob_path: string; blob_size: number };
    const blobDigest = sha(fs.readFileSync(res.blob_path));
    fs.renameSync(res.blob_path, path.join(blobs, blobDigest));
    const bootTar = path.join(work, 'boot.tar');
    execFileSync('tar', ['-C', path.join(work, 'stage'), '--owner=0', '--group=0', '-cf', bootTar, 'image/image.boot']);
    const bootDiff = sha(fs.readFileSync(bootTar));
    execFileSync('gzip', ['-n', bootTar]);
    const bootGz = fs.readFileSync(`${bootTar}.gz`);
    const bootDigest = sha(bootGz);
    fs.writeFileSync(path.join(blobs, bootDigest), bootGz);
    const config = Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'], Cmd: ['/usr/bin/python3'] },
        rootfs: { type: 'layers', diff_ids: [`sha256:${blobDigest}`, `sha256:${bootDiff}`] },
      }),
    );
    fs.writeFileSync(path.join(blobs, sha(config)), config);
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${sha(config)}`, size: config.length },
        layers: [
          {
            mediaType: 'application/vnd.oci.image.layer.nydus.blob.v1',
            digest: `sha256:${blobDigest}`,
            size: res.blob_size,
            annotations: { 'containerd.io/snapshot/nydus-blob': 'true' },
          },
          {
            mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
            digest: `sha256:${bootDigest}`,
            size: bootGz.length,
            annotations: { 'containerd.io/snapshot/nydus-bootstrap': 'true' },
          },
        ],
      }),
    );
    fs.writeFileSync(path.join(blobs, sha(manifest)), manifest);
    fs.writeFileSync(path.join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    fs.writeFileSync(
      path.join(layout, 'index.json'),
      JSON.stringify({
        schemaVersion: 2,
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${sha(manifest)}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
      }),
    );
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(layout, dir);
    const info = { layout: dir, blobSize: res.blob_size, blobDigest, bootDigest };
    fs.writeFileSync(infoFile, JSON.stringify(info));
    return info;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Bytes the registry served for one blob: Range lengths, or the whole blob for a plain GET. */
function blobBytes(reg: TestRegistry, digest: string, size: number): number {
  let total = 0;
  for (const r of reg.requests()) {
    if (r.method !== 'GET' || !r.path.includes(`/blobs/sha256:${digest}`) || r.status >= 400) continue;
    const m = /bytes=(\d+)-(\d*)/.exec(r.range ?? '');
    total += m ? (m[2] ? Number(m[2]) : size - 1) - Number(m[1]) + 1 : size;
  }
  return total;
}

class SnapshotterProcess {
  proc?: ChildProcess;
  constructor(
    readonly configPath: string,
    readonly address: string,
    readonly logFile: string,
  ) {}

  async start(): Promise<void> {
    const out = fs.openSync(this.logFile, 'a');
    this.proc = spawn(path.join(REPO_ROOT, 'bin', 'containerd-nydus-grpc'), ['--config', this.configPath], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !fs.existsSync(this.address)) {
      if (this.proc.exitCode !== null) throw new Error(`snapshotter exited: ${fs.readFileSync(this.logFile, 'utf8').slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!fs.existsSync(this.address)) throw new Error('snapshotter socket did not appear');
  }

  async kill9(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc!.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
  }
}

d('nydus image through containerd-nydus-grpc', () => {
  let dir: string;
  let root: string;
  let reg: TestRegistry | undefined;
  let ctd: Containerd | undefined;
  let snp: SnapshotterProcess | undefined;
  let ref: string;
  let image: Awaited<ReturnType<typeof nydusDebianLayout>>;

  const daemonPids = (): number[] => {
    const db = new Database(path.join(root, 'metadata.db'), { readonly: true });
    try {
      return (db.prepare("SELECT value FROM records WHERE kind = 'daemon'").all() as { value: string }[]).map((r) => JSON.parse(r.value).pid as number);
    } finally {
      db.close();
    }
  };

  beforeAll(async () => {
    image = await nydusDebianLayout();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snn-'));
    root = path.join(dir, 'root');
    reg = await startRegistry();
    ref = `${reg.host}/nydus/debian:latest`;
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${image.layout}:latest`, `docker://${ref}`], { timeout: 10 * 60_000 });
    fs.mkdirSync(path.join(dir, 'certs.d'));
    const configPath = path.join(dir, 'config.toml');
    fs.writeFileSync(
      configPath,
      `version = 1
root = "${root}"
address = "${dir}/nydus.sock"
daemon_mode = "shared"
[daemon]
nydusd_config = "${path.join(REPO_ROOT, 'config', 'nydusd.json')}"
recover_policy = "restart"
[remote.mirrors_config]
dir = "${dir}/certs.d"
[log]
level = "debug"
`,
    );
    snp = new SnapshotterProcess(configPath, path.join(dir, 'nydus.sock'), path.join(dir, 'snapshotter.log'));
    await snp.start();
    ctd = await startContainerd({ snapshotterSocket: snp.address });
    reg.clearRequests();
  }, 30 * 60_000);

  afterAll(async () => {
    await ctd?.stop();
    await snp?.kill9();
    if (root && fs.existsSync(path.join(root, 'metadata.db'))) {
      for (const pid of daemonPids()) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Already gone.
        }
      }
    }
    if (dir) {
      for (const m of fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1]).filter((m) => m && m.startsWith(dir)).sort((a, b) => b.length - a.length)) {
        try {
          execFileSync('umount', ['-l', m], { stdio: 'ignore' });
        } catch {
          // Gone with its parent.
        }
      }
      fs.rmSync(dir, { recursive: true, force: true });
    }
    await reg?.stop();
  }, 120_000);

  test('ctr-remote rpull is lazy; python3 runs from the rafs mount; the registry served a small fraction of the blob', async () => {
    await ctd!.ctrRemote(['image', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref]);
    // Only the bootstrap layer was downloaded by the pull.
    expect(blobBytes(reg!, image.bootDigest, 1)).toBeGreaterThan(0);
    expect(blobBytes(reg!, image.blobDigest, image.blobSize)).toBe(0);
    const { stdout } = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'py-1', 'python3', '-c', 'import json,sys; print(json.dumps({"sum": sum(range(10))}), sys.version_info[0])']);
    expect(stdout.trim()).toBe('{"sum": 45} 3');
    const served = blobBytes(reg!, image.blobDigest, image.blobSize);
    expect(served).toBeGreaterThan(0);
    expect(served).toBeLessThan(image.blobSize * 0.3);
  });

  test('kill -9 of the snapshotter: the running container keeps running, new containers start', async () => {
    await ctd!.ctr(['run', '-d', '--snapshotter', 'nydus', ref, 'long-1', 'sleep', '600']);
    const before = daemonPids();
    await snp!.kill9();
    await snp!.start();
    // The restarted snapshotter adopted the running nydusd instead of replacing it.
    expect(daemonPids()).toEqual(before);
    expect(process.kill(before[0], 0)).toBe(true);
    const tasks = await ctd!.ctr(['tasks', 'ls']);
    expect(tasks.stdout).toMatch(/long-1\s+\d+\s+RUNNING/);
    const ex = await ctd!.ctr(['tasks', 'exec', '--exec-id', 'e1', 'long-1', 'python3', '-c', 'print(open("/etc/debian_version").read().strip() != "")']);
    expect(ex.stdout.trim()).toBe('True');
    // containerd reconnects to the new socket on its own (backoff <= 3 s); bounded retries.
    let out = '';
    for (let i = 0; i < 20 && !out; i++) {
      out = await ctd!
        .ctr(['run', '--rm', '--snapshotter', 'nydus', ref, `py-2-${i}`, 'python3', '-c', 'print("after-restart")'])
        .then((r) => r.stdout, async () => {
          await new Promise((r) => setTimeout(r, 500));
          return '';
        });
    }
    expect(out.trim()).toBe('after-restart');
    await ctd!.ctr(['tasks', 'kill', '-s', 'SIGKILL', 'long-1']);
  });

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
        .ctr(['run', '--rm', '--snapshotter', 'nydus', ref, `py-3-${i}`, 'python3', '-c', 'import hashlib; print(hashlib.sha256(b"x").hexdigest()[:8])'])
        .then((r) => r.stdout, async () => {
          await new Promise((r) => setTimeout(r, 500));
          return '';
        });
    }
    expect(out.trim()).toBe('2d711642');
  });

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
  });
});
