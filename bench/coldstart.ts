/**
 * Benchmark of issue 6 (acceptance 4): cold start, from pull to the first output of a python
 * command, over a rate-limited link, OCI with containerd's overlayfs snapshotter against nydus with
 * containerd-nydus-grpc, in the same run.
 *
 *   images    small: the Debian/python rootfs (~235 MB unpacked, one layer)
 *             large: the same plus a ~700 MB data layer (~950 MB unpacked)
 *   link      the registry runs in its own network namespace behind a veth pair shaped with tc htb
 *             (200 Mbit/s by default, BENCH_RATE_MBIT), so every byte pulled crosses the limit
 *   OCI       ctr images pull --snapshotter overlayfs, then ctr run python3 -c 'print(...)'
 *   nydus     ctr-remote images rpull --snapshotter nydus, then the same ctr run
 * Every measurement starts cold: a fresh containerd, a fresh snapshotter root and an empty blob
 * cache. Bytes are counted on the registry's side of the link.
 *
 *   node dist-bench/bench/coldstart.js            both images, writes bench-out/coldstart.md
 *   node dist-bench/bench/coldstart.js --demo     the small image only (what scripts/demo.sh runs)
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import * as zlib from 'node:zlib';
import { pack } from 'tar-stream';
import { NydusdClient } from '../src/daemon/client';
import { killPids, recordedDaemons, startContainerd, unmountBelow } from '../src/snapshotter/private-containerd';
import { Teardown } from './support/teardown';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const RATE_MBIT = Number(process.env.BENCH_RATE_MBIT ?? 200);
const DATA_MB = Number(process.env.BENCH_DATA_MB ?? 700);
const NS = `nbench${process.pid % 100000}`;
const HOST_IF = `nbh${process.pid % 100000}`;
const NS_IF = `nbn${process.pid % 100000}`;
const HOST_IP = '198.18.0.1';
const REG_IP = '198.18.0.2';
export const REG = `${REG_IP}:5000`;
const ENV = ['--env', 'PATH=/usr/local/bin:/usr/bin:/bin'];
const PY = ['python3', '-c', 'import json, sys; print(json.dumps({"python": sys.version.split()[0]}))'];

const T0 = Date.now();
/** Progress on stderr, with the time since the run began. */
const say = (msg: string): void => void process.stderr.write(`coldstart [${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s]: ${msg}\n`);

function sh(cmd: string, args: string[], timeoutMs = 30 * 60_000): string {
  return execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs, maxBuffer: 64 << 20 }).toString();
}

function trySh(cmd: string, args: string[]): void {
  try {
    sh(cmd, args, 30_000);
  } catch {
    // Cleanup of something already gone.
  }
}

// ---------------------------------------------------------------- images (OCI layouts, cached)

interface Layer {
  digest: string;
  diffId: string;
  size: number;
  /** Bytes of the uncompressed tar. */
  tarBytes: number;
}

const hasher = (h: crypto.Hash, count?: { n: number }): Transform =>
  new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
      if (count) count.n += chunk.length;
      cb(null, chunk);
    },
  });

/** Gzips a tar stream into `blobs/`, hashing both sides on the way. */
async function writeLayer(blobs: string, source: NodeJS.ReadableStream): Promise<Layer> {
  const diff = crypto.createHash('sha256');
  const comp = crypto.createHash('sha256');
  const tmp = path.join(blobs, `.tmp-${process.pid}`);
  const count = { n: 0 };
  await pipeline(source, hasher(diff, count), zlib.createGzip({ level: 1 }), hasher(comp), fs.createWriteStream(tmp));
  const digest = comp.digest('hex');
  fs.renameSync(tmp, path.join(blobs, digest));
  return { digest, diffId: diff.digest('hex'), size: fs.statSync(path.join(blobs, digest)).size, tarBytes: count.n };
}

/** A tar of `mb` MiB of incompressible files under /opt/data (what a big image carries and python never reads). */
function dataTar(mb: number): NodeJS.ReadableStream {
  const p = pack();
  const fileMb = 10;
  const seed = crypto.createHash('sha256').update('coldstart').digest();
  void (async () => {
    p.entry({ name: 'opt/', type: 'directory', mode: 0o755, mtime: new Date(0) });
    p.entry({ name: 'opt/data/', type: 'directory', mode: 0o755, mtime: new Date(0) });
    for (let i = 0; i < Math.ceil(mb / fileMb); i++) {
      // AES-CTR keystream: fast, deterministic, incompressible.
      const c = crypto.createCipheriv('aes-256-ctr', seed, Buffer.alloc(16, i));
      const data = c.update(Buffer.alloc(fileMb << 20));
      await new Promise<void>((resolve, reject) => p.entry({ name: `opt/data/part-${String(i).padStart(3, '0')}.bin`, size: data.length, mode: 0o644, mtime: new Date(0) }, data, (e) => (e ? reject(e) : resolve())));
    }
    p.finalize();
  })().catch((e: Error) => p.destroy(e));
  return p as unknown as NodeJS.ReadableStream; // tar-stream packs are streamx streams: pipeable, typed apart
}

/** The cached OCI layout of an image and its unpacked size (sum of the layer tars). */
export async function buildLayout(name: 'small' | 'large'): Promise<{ dir: string; unpacked: number }> {
  const dir = path.join(FIXTURES, 'bench-coldstart', `${name}-${name === 'large' ? DATA_MB : 0}`);
  const sizeFile = path.join(dir, 'unpacked-bytes');
  if (fs.existsSync(sizeFile)) return { dir, unpacked: Number(fs.readFileSync(sizeFile, 'utf8')) };
  say(`building the ${name} OCI image (cached in ${dir})`);
  sh('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian']);
  const work = `${dir}.partial-${process.pid}`;
  const blobs = path.join(work, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const layers = [await writeLayer(blobs, fs.createReadStream(path.join(FIXTURES, 'debian-rootfs.tar')))];
  if (name === 'large') layers.push(await writeLayer(blobs, dataTar(DATA_MB)));
  const put = (obj: unknown): { digest: string; size: number } => {
    const b = Buffer.from(JSON.stringify(obj));
    const digest = crypto.createHash('sha256').update(b).digest('hex');
    fs.writeFileSync(path.join(blobs, digest), b);
    return { digest: `sha256:${digest}`, size: b.length };
  };
  const config = put({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'LANG=C.UTF-8'], Cmd: ['/usr/bin/python3'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => `sha256:${l.diffId}`) },
  });
  const manifest = put({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${l.digest}`, size: l.size })),
  });
  fs.writeFileSync(path.join(work, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(
    path.join(work, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }),
  );
  const unpacked = layers.reduce((a, l) => a + l.tarBytes, 0);
  fs.writeFileSync(path.join(work, 'unpacked-bytes'), String(unpacked));
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(work, dir);
  return { dir, unpacked };
}

// ---------------------------------------------------------------- shaped link + registry

export interface Link {
  registry: ChildProcess;
  dir: string;
  txBytes(): number;
  shape(): void;
  close(): void;
}

export async function startLink(): Promise<Link> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'coldstart-reg-'));
  sh('ip', ['netns', 'add', NS]);
  const inNs = (...args: string[]): string => sh('ip', ['netns', 'exec', NS, ...args]);
  let registry: ChildProcess | undefined;
  const close = (): void => {
    if (registry && registry.exitCode === null) registry.kill('SIGKILL');
    trySh('ip', ['netns', 'del', NS]);
    trySh('ip', ['link', 'del', HOST_IF]);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    sh('ip', ['link', 'add', HOST_IF, 'type', 'veth', 'peer', 'name', NS_IF]);
    sh('ip', ['link', 'set', NS_IF, 'netns', NS]);
    sh('ip', ['addr', 'add', `${HOST_IP}/30`, 'dev', HOST_IF]);
    sh('ip', ['link', 'set', HOST_IF, 'up']);
    inNs('ip', 'addr', 'add', `${REG_IP}/30`, 'dev', NS_IF);
    inNs('ip', 'link', 'set', NS_IF, 'up');
    inNs('ip', 'link', 'set', 'lo', 'up');
    fs.writeFileSync(
      path.join(dir, 'config.yml'),
      `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/data\n  delete:\n    enabled: true\nhttp:\n  addr: ${REG}\n`,
    );
    const out = fs.openSync(path.join(dir, 'registry.log'), 'a');
    registry = spawn('ip', ['netns', 'exec', NS, '/usr/bin/docker-registry', 'serve', path.join(dir, 'config.yml')], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    for (let i = 0; i < 100; i++) {
      const ok = await fetch(`http://${REG}/v2/`).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (i === 99) throw new Error(`registry at ${REG} did not answer: ${fs.readFileSync(path.join(dir, 'registry.log'), 'utf8').slice(-500)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (e) {
    close();
    throw e;
  }
  return {
    registry: registry!,
    dir,
    txBytes: () => Number(inNs('cat', `/sys/class/net/${NS_IF}/statistics/tx_bytes`).trim()),
    shape() {
      // Both directions, so the link looks like one 200 Mbit/s line.
      for (const [ns, dev] of [[true, NS_IF], [false, HOST_IF]] as const) {
        const pre = ns ? ['ip', 'netns', 'exec', NS] : [];
        const tc = (...a: string[]): string => sh(pre[0] ?? 'tc', [...pre.slice(1), ...(pre.length ? ['tc'] : []), ...a]);
        tc('qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '10', 'r2q', '1000');
        tc('class', 'add', 'dev', dev, 'parent', '1:', 'classid', '1:10', 'htb', 'rate', `${RATE_MBIT}mbit`, 'ceil', `${RATE_MBIT}mbit`);
      }
    },
    close,
  };
}

// ---------------------------------------------------------------- one cold start

export interface Result {
  seconds: number;
  /** Of which the pull. */
  pullSeconds: number;
  bytes: number;
  output: string;
}


/** Stops the snapshotter, then every nydusd it recorded in its store (they outlive it by design). */
async function stopSnapshotter(sn: ChildProcess, root: string): Promise<void> {
  if (sn.exitCode === null && sn.signalCode === null) {
    const gone = new Promise((r) => sn.once('exit', r));
    sn.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
    if (sn.exitCode === null && sn.signalCode === null) sn.kill('SIGKILL');
  }
  killPids(recordedDaemons(root).map((r) => r.pid));
}


/** Runs the pull, then `ctr run`; resolves at the first output line of the python command. Whatever
 * it starts is registered in `td` as it starts, so a failure or Ctrl-C at any point undoes it.
 * `daemonToml`: extra keys of the snapshotter's [daemon] table (bench/erofs.ts: fs_driver). */
export async function coldStart(link: Link, mode: 'oci' | 'nydus', ref: string, certsDir: string, td: Teardown, daemonToml = ''): Promise<Result> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `cs-${mode}-`));
  td.add(`work dir ${work}`, () => {
    // BENCH_LOGS=DIR keeps the snapshotter's and nydusd's logs of each run for a closer look.
    if (process.env.BENCH_LOGS) {
      const keep = path.join(process.env.BENCH_LOGS, `${mode}-${path.basename(ref).replace(/[:/]/g, '_')}`);
      fs.mkdirSync(keep, { recursive: true });
      trySh('bash', ['-c', `cp -r ${work}/snapshotter.log ${work}/root/logs ${work}/ctd/containerd.log ${keep}/ 2>/dev/null; true`]);
    }
    unmountBelow(work);
    fs.rmSync(work, { recursive: true, force: true });
  });
  const sock = path.join(work, 'nydus.sock');
  if (mode === 'nydus') {
    fs.writeFileSync(
      path.join(work, 'config.toml'),
      `version = 1\nroot = "${work}/root"\naddress = "${sock}"\ndaemon_mode = "shared"\n[daemon]\nnydusd_config = "${ROOT}/config/nydusd.json"\n${daemonToml}\n[remote.mirrors_config]\ndir = "${certsDir}"\n[log]\nlevel = "${process.env.BENCH_LOGS ? 'debug' : 'warn'}"\n`,
    );
    const out = fs.openSync(path.join(work, 'snapshotter.log'), 'a');
    const sn = spawn(process.execPath, [path.join(ROOT, 'dist', 'cli', 'containerd-nydus-grpc.js'), '--config', path.join(work, 'config.toml')], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    td.add('snapshotter and its nydusd', () => stopSnapshotter(sn, path.join(work, 'root')));
    for (let i = 0; i < 300 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
    if (!fs.existsSync(sock)) throw new Error(`snapshotter did not start: ${fs.readFileSync(path.join(work, 'snapshotter.log'), 'utf8').slice(-1000)}`);
    // A deployed snapshotter has its shared nydusd up long before a pull: wait for it here too,
    // as the OCI run finds containerd's overlayfs snapshotter ready.
    let running = false;
    for (let i = 0; i < 300 && !running; i++) {
      const rec = recordedDaemons(path.join(work, 'root'))[0];
      running = rec ? await new NydusdClient(rec.apiSock, 1000).daemonInfo().then((d) => d.state === 'RUNNING', () => false) : false;
      if (!running) await new Promise((r) => setTimeout(r, 100));
    }
    if (!running) throw new Error(`the shared nydusd did not reach RUNNING; its log: ${lastLines(path.join(work, 'root', 'logs'))}`);
  }
  const ctd = await startContainerd({ snapshotterSocket: sock, dir: path.join(work, 'ctd') });
  td.add('containerd', () => ctd.stop());
  const before = link.txBytes();
  const t0 = process.hrtime.bigint();
  if (mode === 'oci') await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ref], 30 * 60_000);
  else await ctd.ctrRemote(['images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], 30 * 60_000);
  const pullSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const output = await new Promise<string>((resolve, reject) => {
    const p = spawn('ctr', ['--address', ctd.address, '-n', ctd.namespace, 'run', '--runc-root', ctd.runcRoot, '--rm', ...ENV, '--snapshotter', mode === 'oci' ? 'overlayfs' : 'nydus', ref, `cs-${mode}`, ...PY]);
    const drop = td.add('ctr run', () => p.exitCode === null && p.kill('SIGKILL'));
    let err = '';
    let done = false;
    p.stdout.on('data', (d: Buffer) => {
      if (!done) {
        done = true;
        resolve(d.toString().trim());
      }
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code) => {
      drop();
      if (!done) reject(new Error(`ctr run (${mode}) exited ${code} without output: ${err.trim()}`));
    });
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  return { seconds, pullSeconds, bytes: link.txBytes() - before, output };
}

/** The last lines of the newest log file in `dir`, for an error message. */
function lastLines(dir: string): string {
  const logs = fs.existsSync(dir) ? fs.readdirSync(dir).map((f) => path.join(dir, f)).filter((f) => fs.statSync(f).isFile()) : [];
  if (!logs.length) return '(no log)';
  const newest = logs.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
  return fs.readFileSync(newest, 'utf8').trim().split('\n').slice(-5).join(' | ');
}

// ---------------------------------------------------------------- report

const mb = (b: number): string => `${(b / 1e6).toFixed(1)} MB`;

function report(rows: { image: string; unpacked: number; oci: Result; nydus: Result }[]): string {
  const lines: string[] = [];
  lines.push('## Cold start: containerd-nydus-grpc vs OCI (overlayfs)');
  lines.push('');
  lines.push(
    `From \`pull\` to the first output of \`python3 -c ...\` in a new container, through a private containerd ${sh('containerd', ['--version']).split(' ')[2]} with runc; ` +
      `the registry sits behind a ${RATE_MBIT} Mbit/s link (tc htb on a veth pair). Each run starts cold (fresh containerd, snapshotter root and blob cache). ` +
      'OCI: `ctr images pull` + overlayfs snapshotter. nydus: `ctr-remote images rpull` + containerd-nydus-grpc (shared nydusd, no prefetch), image converted by nydusify.',
  );
  lines.push('');
  lines.push('| image | unpacked | OCI | nydus | nydus / OCI | OCI bytes pulled | nydus bytes pulled |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    lines.push(`| ${r.image} | ${mb(r.unpacked)} | ${r.oci.seconds.toFixed(2)} s | ${r.nydus.seconds.toFixed(2)} s | ${((r.nydus.seconds / r.oci.seconds) * 100).toFixed(1)} % | ${mb(r.oci.bytes)} | ${mb(r.nydus.bytes)} |`);
  }
  lines.push('');
  lines.push('```mermaid');
  lines.push('xychart-beta');
  lines.push('  title "Cold start to first python output (s)"');
  lines.push(`  x-axis [${rows.flatMap((r) => [`"${r.image} OCI"`, `"${r.image} nydus"`]).join(', ')}]`);
  lines.push('  y-axis "seconds"');
  lines.push(`  bar [${rows.flatMap((r) => [r.oci.seconds.toFixed(2), r.nydus.seconds.toFixed(2)]).join(', ')}]`);
  lines.push('```');
  lines.push('');
  const max = Math.max(...rows.flatMap((r) => [r.oci.seconds, r.nydus.seconds]));
  lines.push('```');
  for (const r of rows) {
    for (const [k, v] of [['OCI  ', r.oci.seconds], ['nydus', r.nydus.seconds]] as const) {
      lines.push(`${r.image.padEnd(6)} ${k} ${'#'.repeat(Math.max(1, Math.round((v / max) * 50))).padEnd(50)} ${v.toFixed(2)} s`);
    }
  }
  lines.push('```');
  lines.push('');
  const nydusMax = Math.max(...rows.map((r) => r.nydus.seconds));
  const checks = [`nydus at most 2.5 s: ${nydusMax <= 2.5 ? 'met' : 'missed'} (slowest ${nydusMax.toFixed(2)} s)`];
  if (rows.length > 1) {
    const small = rows[0];
    const large = rows[rows.length - 1];
    checks.push(`flat in image size: large / small nydus time = ${(large.nydus.seconds / small.nydus.seconds).toFixed(2)} (OCI: ${(large.oci.seconds / small.oci.seconds).toFixed(2)})`);
    const pct = (large.nydus.seconds / large.oci.seconds) * 100;
    checks.push(`at most 20 % of the OCI time for the larger image: ${pct <= 20 ? 'met' : 'missed'} (${pct.toFixed(1)} %)`);
  }
  lines.push('Targets (issue 6):');
  lines.push('');
  for (const c of checks) lines.push(`- ${c}`);
  return lines.join('\n') + '\n';
}

async function main(): Promise<void> {
  const demo = process.argv.includes('--demo');
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespace, containerd, FUSE)');
  for (const f of ['dist/cli/containerd-nydus-grpc.js', 'dist/cli/nydusd.js', 'dist/cli/nydusify.js']) {
    if (!fs.existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: run npm run build`);
  }
  const images = demo ? (['small'] as const) : (['small', 'large'] as const);
  const td = new Teardown(say);
  td.onSignals();
  try {
    const layouts = new Map<string, { dir: string; unpacked: number }>();
    for (const name of images) layouts.set(name, await buildLayout(name));
    const link = await startLink();
    td.add('registry and network namespace', () => link.close());
    const certs = fs.mkdtempSync(path.join(os.tmpdir(), 'coldstart-certs-'));
    td.add('certs.d', () => fs.rmSync(certs, { recursive: true, force: true }));
    // nydusd reaches this registry over plain HTTP, as containerd's hosts.toml says.
    fs.mkdirSync(path.join(certs, REG));
    fs.writeFileSync(path.join(certs, REG, 'hosts.toml'), `server = "http://${REG}"\n`);
    const rows = [];
    for (const name of images) {
      const src = `${REG}/bench/${name}:oci`;
      const dst = `${REG}/bench/${name}:nydus`;
      say(`${name}: pushing and converting (before the link is shaped)`);
      sh('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layouts.get(name)!.dir}:latest`, `docker://${src}`]);
      sh(process.execPath, [path.join(ROOT, 'dist', 'cli', 'nydusify.js'), 'convert', '--source', src, '--target', dst, '--plain-http']);
      rows.push({ image: name, unpacked: layouts.get(name)!.unpacked, src, dst });
    }
    link.shape();
    const results = [];
    for (const r of rows) {
      say(`${r.image}: OCI cold start over ${RATE_MBIT} Mbit/s`);
      const oci = await measured(td, 'OCI run', (scope) => coldStart(link, 'oci', r.src, certs, scope));
      say(`${r.image}: OCI ${oci.seconds.toFixed(2)} s, pull ${oci.pullSeconds.toFixed(2)} s (${oci.output})`);
      say(`${r.image}: nydus cold start over ${RATE_MBIT} Mbit/s`);
      const nydus = await measured(td, 'nydus run', (scope) => coldStart(link, 'nydus', r.dst, certs, scope));
      say(`${r.image}: nydus ${nydus.seconds.toFixed(2)} s, pull ${nydus.pullSeconds.toFixed(2)} s (${nydus.output})`);
      if (nydus.output !== oci.output) throw new Error(`outputs differ: OCI ${oci.output} vs nydus ${nydus.output}`);
      results.push({ image: r.image, unpacked: r.unpacked, oci, nydus });
    }
    const md = report(results);
    if (demo) {
      process.stdout.write(md);
    } else {
      fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
      fs.writeFileSync(path.join(ROOT, 'bench-out', 'coldstart.md'), md);
      process.stdout.write(md);
    }
  } finally {
    await td.run();
  }
}

/** One cold start in its own teardown scope: what it started is gone before the next one. */
export async function measured<T>(td: Teardown, name: string, run: (scope: Teardown) => Promise<T>): Promise<T> {
  const scope = td.scope(name);
  try {
    return await run(scope);
  } finally {
    await scope.run();
  }
}

// Run as a program; bench/erofs.ts imports the helpers above.
if (require.main === module) {
  main().catch((e: Error) => {
    process.stderr.write(`coldstart: error: ${e.message}\n`);
    process.exit(1);
  });
}
