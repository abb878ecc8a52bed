/**
 * Benchmark of issue 3 (acceptance 4): registry-to-registry conversion of the Debian image.
 *   ours      ./bin/nydusify convert (pull, build nydus blobs + bootstrap, push)
 *   baseline  ctr-remote (stargz-snapshotter) against a private containerd:
 *             content fetch + image convert --estargz --oci + image push
 * Both read the same source from the same local docker-registry and push to it, in the same run,
 * one round each with fresh target repositories (nothing cached on the target side).
 * Writes bench-out/convert.md.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const LAYOUT = path.join(FIXTURES, 'oci-images', 'debian');

function run(cmd: string, args: string[], timeoutMs = 15 * 60_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 1 << 26 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(cmd)} ${args.join(' ')}: ${(stderr || err.message).trim().split('\n').slice(-3).join(' | ')}`));
      else resolve(stdout);
    });
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });
}

async function waitFor(what: string, ok: () => Promise<boolean>, proc: ChildProcess): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) throw new Error(`${what} exited with ${proc.exitCode}`);
    if (await ok().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not start within 30 s`);
}

/** The Debian OCI layout the tests also use (test/helpers/images.ts); built here if missing. */
async function debianLayout(work: string): Promise<string> {
  if (fs.existsSync(path.join(LAYOUT, 'index.json'))) return LAYOUT;
  await run('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian'], 30 * 60_000);
  const layout = path.join(work, 'layout');
  await run('umoci', ['init', '--layout', layout]);
  await run('umoci', ['new', '--image', `${layout}:latest`]);
  await run('umoci', ['raw', 'add-layer', '--image', `${layout}:latest`, path.join(FIXTURES, 'debian-rootfs.tar')]);
  return layout;
}

async function startRegistry(dir: string): Promise<{ host: string; proc: ChildProcess }> {
  const port = await freePort();
  const cfg = path.join(dir, 'registry.yml');
  fs.writeFileSync(cfg, [
    'version: 0.1', 'log:', '  level: warn', '  accesslog:', '    disabled: true',
    'storage:', '  filesystem:', `    rootdirectory: ${dir}/registry`,
    'http:', `  addr: 127.0.0.1:${port}`, `  secret: ${randomBytes(8).toString('hex')}`,
  ].join('\n') + '\n');
  const proc = spawn('docker-registry', ['serve', cfg], { stdio: 'ignore' });
  const host = `127.0.0.1:${port}`;
  await waitFor('docker-registry', async () => (await fetch(`http://${host}/v2/`)).status === 200, proc);
  return { host, proc };
}

async function startContainerd(dir: string): Promise<{ sock: string; proc: ChildProcess }> {
  fs.mkdirSync(dir, { recursive: true });
  const sock = path.join(dir, 'containerd.sock');
  const cfg = path.join(dir, 'containerd.toml');
  fs.writeFileSync(cfg, [
    'version = 2', `root = "${dir}/root"`, `state = "${dir}/state"`, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`, '[debug]', '  address = ""',
  ].join('\n') + '\n');
  const proc = spawn('containerd', ['--config', cfg], { stdio: 'ignore' });
  await waitFor('containerd', async () => { await run('ctr', ['-a', sock, 'version'], 5000); return true; }, proc);
  return { sock, proc };
}

async function pushedBytes(host: string, repo: string, tag: string): Promise<{ layers: number; bytes: number }> {
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  const m = (await res.json()) as { layers: { size: number }[] };
  return { layers: m.layers.length, bytes: m.layers.reduce((a, l) => a + l.size, 0) };
}

const mib = (n: number) => `${(n / (1 << 20)).toFixed(1)} MiB`;

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-bench-convert-'));
  const procs: ChildProcess[] = [];
  try {
    const layout = await debianLayout(work);
    const reg = await startRegistry(work);
    procs.push(reg.proc);
    const source = `${reg.host}/src/debian:v1`;
    await run('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout}:latest`, `docker://${source}`]);
    const src = await pushedBytes(reg.host, 'src/debian', 'v1');
    const ctrd = await startContainerd(path.join(work, 'containerd'));
    procs.push(ctrd.proc);
    // stargz-snapshotter's ctr-remote (Debian): its `images convert --estargz` is the eStargz baseline.
    const ctr = (args: string[]) => run('/usr/bin/ctr-remote', ['-a', ctrd.sock, '-n', 'bench', ...args]);

    const ours = await timed(() => run(process.execPath, [path.join(ROOT, 'dist', 'cli', 'nydusify.js'), 'convert', '--source', source,
      '--target', `${reg.host}/nydus/debian:v1`, '--plain-http', '--work-dir', work]));
    const estargzTarget = `${reg.host}/estargz/debian:v1`;
    const base = await timed(async () => {
      await ctr(['content', 'fetch', '--plain-http', source]);
      await ctr(['images', 'convert', '--estargz', '--oci', source, estargzTarget]);
      await ctr(['images', 'push', '--plain-http', estargzTarget]);
    });
    const nydusOut = await pushedBytes(reg.host, 'nydus/debian', 'v1');
    const esgzOut = await pushedBytes(reg.host, 'estargz/debian', 'v1');
    const ratio = base / ours;
    const md = [
      '## nydusify convert vs ctr-remote --estargz (registry to registry)',
      '',
      `Source: the Debian bookworm image (python3, perl), ${src.layers} layer, ${mib(src.bytes)} gzip, in a local docker-registry; target: the same registry, fresh repositories. One round each, same run.`,
      '',
      '| converter | wall time | layers pushed | bytes pushed |',
      '|---|---|---|---|',
      `| nydusify convert (nydus RAFS v6, zstd, 1 MiB chunks) | ${ours.toFixed(1)} s | ${nydusOut.layers} | ${mib(nydusOut.bytes)} |`,
      `| ctr-remote content fetch + images convert --estargz --oci + push | ${base.toFixed(1)} s | ${esgzOut.layers} | ${mib(esgzOut.bytes)} |`,
      '',
      `**Ratio: nydusify is ${ratio.toFixed(2)}x ${ratio >= 1 ? 'faster' : 'slower'} than the eStargz converter** (target: faster).`,
      '',
    ].join('\n');
    process.stdout.write(md + '\n');
    fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, 'bench-out', 'convert.md'), md);
  } finally {
    for (const p of procs.reverse()) {
      if (p.exitCode !== null) continue;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000).unref())]);
      if (p.exitCode === null) p.kill('SIGKILL');
    }
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((e: Error) => {
  process.stderr.write(`bench convert: error: ${e.message}\n`);
  process.exit(1);
});
