/**
 * Benchmark of issues 6 and 18: cold start, from pull to the first output of a python command,
 * over a rate-limited link: OCI (containerd's overlayfs snapshotter), eStargz (the stargz
 * snapshotter) and nydus (containerd-nydus-grpc), in the same run, rounds interleaved.
 *
 *   images    small: the Debian/python rootfs (~260 MB unpacked, one layer)
 *             large: the same plus a ~700 MB data layer (~990 MB unpacked)
 *   link      the registry runs in its own network namespace behind a veth pair shaped with tc htb
 *             (200 Mbit/s by default, BENCH_RATE_MBIT), so every byte pulled crosses the limit
 *   OCI       ctr images pull --snapshotter overlayfs, then ctr run python3 -c 'print(...)'
 *   stargz    Debian's ctr-remote images rpull --snapshotter stargz, with bench/stargz-grpc (a small
 *             Go main serving Debian's stargz-snapshotter source as a proxy plugin), image converted
 *             by ctr-remote images convert --estargz --oci (kept in the fixtures cache)
 *   nydus     our ctr-remote images rpull --snapshotter nydus, then the same ctr run
 *   nydus-prefetch   the same with prefetch from a recorded access pattern: a trial run of the
 *             plain nydus image (before the link is shaped) records the files python reads
 *             (`nydusctl prefetch-list`), nydusify converts the image again with that list as
 *             --prefetch-patterns (those files first in the blob, in the prefetch table), and the
 *             snapshotter's nydusd template has fs_prefetch enabled (the template otherwise the same),
 *             and the snapshotter mounts the image on pull (`[snapshot] mount_on_pull`)
 *   nydus-prefetch-go   the same, pulled with Debian's ctr-remote (the stargz row's Go client)
 *   nydus-erofs-prefetch-go   the same in kernel EROFS mode (snapshotter `fs_driver = "erofs"`):
 *             the kernel mounts the bootstrap over nydusd's blob view, so the program's lookups and
 *             cached reads never reach nydusd (docs/nydusd.md "Kernel EROFS mode")
 * Every measurement starts cold: a fresh containerd, a fresh snapshotter root and an empty blob
 * cache. Bytes are counted on the registry's side of the link. The nydus runs are broken into
 * phases (rpull's output lines as they arrive, the snapshotter's and nydusd's mount log lines,
 * nydusd's first read) and their reads counted (nydusd's API right after the first output).
 *
 *   node dist-bench/bench/coldstart.js            both images, writes bench-out/coldstart.md
 *   node dist-bench/bench/coldstart.js --demo     the small image only, one round (scripts/demo.sh)
 *   BENCH_ROUNDS=N (default 3), BENCH_MODES=nydus,nydus-prefetch (only those modes, figures on stderr, no
 *   report; with --demo a quick harness for the reads phase of the two nydus variants),
 *   BENCH_NYDUSD_CONFIG=FILE (the nydusd template, to try levers), BENCH_LOGS=DIR (keep logs),
 *   BENCH_FS_PREFETCH='{...}' (the prefetch variants' fs_prefetch, JSON, to try prefetch settings),
 *   BENCH_MOUNT_ON_PULL=0 (the prefetch variants without the snapshotter's mount_on_pull),
 *   BENCH_NYDUSD_PATH=FILE (the nydusd the snapshotter starts, e.g. a wrapper that profiles it)
 */
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
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
/** The nydusd template the snapshotter uses (BENCH_NYDUSD_CONFIG, for trying levers such as amplify_io). */
const NYDUSD_CONFIG = path.resolve(process.env.BENCH_NYDUSD_CONFIG ?? path.join(ROOT, 'config', 'nydusd.json'));
/** BENCH_MODES=nydus (comma-separated) measures only those modes and prints their figures, no report. */
const ALL_MODES: Mode[] = ['oci', 'stargz', 'nydus', 'nydus-prefetch', 'nydus-prefetch-go', 'nydus-erofs-prefetch-go'];
const MODES = (process.env.BENCH_MODES ?? ALL_MODES.join(',')).split(',') as Mode[];
for (const m of MODES) if (!ALL_MODES.includes(m)) throw new Error(`BENCH_MODES: unknown mode ${JSON.stringify(m)} (${ALL_MODES.join(', ')})`);
/** fs_prefetch of the prefetch variants: upstream's keys; merged ranges of 1 MiB, 4 at once, the image's table only. */
/** BENCH_NYDUSD_PATH: the nydusd the snapshotter starts (a wrapper that profiles or traces it). */
const NYDUSD_PATH = process.env.BENCH_NYDUSD_PATH;
/** The prefetch variants run the snapshotter with `[snapshot] mount_on_pull` (BENCH_MOUNT_ON_PULL=0: without). */
const MOUNT_ON_PULL = process.env.BENCH_MOUNT_ON_PULL !== '0';
/** The program's binary in the image: its first read marks the exec. */
const PROGRAM_BINARY = /\/bin\/python3[.0-9]*$/;
const FS_PREFETCH = process.env.BENCH_FS_PREFETCH ? JSON.parse(process.env.BENCH_FS_PREFETCH) : { enable: true, threads_count: 4, merging_size: 1 << 20, prefetch_all: false };
const NS = `nbench${process.pid % 100000}`;
const HOST_IF = `nbh${process.pid % 100000}`;
const NS_IF = `nbn${process.pid % 100000}`;
/** A /30 of its own in 198.19.0.0/16 (inside the benchmark range 198.18.0.0/15), so runs of other
 * benchmarks and tests with namespaces of their own do not share its addresses. */
const SUBNET = `198.19.${(process.pid % 250) + 1}`;
const HOST_IP = `${SUBNET}.1`;
const REG_IP = `${SUBNET}.2`;
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

type Mode = 'oci' | 'nydus' | 'stargz' | 'nydus-prefetch' | 'nydus-prefetch-go' | 'nydus-erofs-prefetch-go';
const SNAPSHOTTER: Record<Mode, string> = { oci: 'overlayfs', nydus: 'nydus', stargz: 'stargz', 'nydus-prefetch': 'nydus', 'nydus-prefetch-go': 'nydus', 'nydus-erofs-prefetch-go': 'nydus' };
/** The proxy plugin each run's containerd is configured with (OCI uses none of it: its name must not clash with overlayfs). */
const PROXY_NAME: Record<Mode, string> = { oci: 'unused', nydus: 'nydus', stargz: 'stargz', 'nydus-prefetch': 'nydus', 'nydus-prefetch-go': 'nydus', 'nydus-erofs-prefetch-go': 'nydus' };
const isNydus = (m: Mode): boolean => m === 'nydus' || isPrefetch(m);
const isPrefetch = (m: Mode): boolean => m === 'nydus-prefetch' || isGoClient(m);
/** The nydus variants pulled with Debian's Go ctr-remote (the stargz row's client). */
const isGoClient = (m: Mode): boolean => m === 'nydus-prefetch-go' || m === 'nydus-erofs-prefetch-go';

/** The nydusd template of the nydus-prefetch variant: the plain one with fs_prefetch enabled. */
function prefetchTemplate(dir: string): string {
  let base: Record<string, unknown>;
  try {
    base = JSON.parse(fs.readFileSync(NYDUSD_CONFIG, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${NYDUSD_CONFIG}: the nydus-prefetch variant needs a JSON nydusd template: ${(e as Error).message}`);
  }
  const file = path.join(dir, 'nydusd-prefetch.json');
  fs.writeFileSync(file, JSON.stringify({ ...base, fs_prefetch: FS_PREFETCH }, null, 2));
  return file;
}

/** Where the time of a nydus cold start went, and what the container's reads cost. */
interface Breakdown {
  /** [phase, seconds], in the order they happen; they add up to the cold start. */
  phases: [string, number][];
  /** Bytes the program read through FUSE, and its read requests. */
  readBytes: number;
  fuseReads: number;
  /** Requests to the registry for chunk data, their bytes, and the time spent waiting on them (summed over concurrent requests). */
  backendRequests: number;
  backendBytes: number;
  backendWaitMs: number;
  /** CPU time of decompression and of digest verification of the fetched chunks. */
  decompressMs: number;
  verifyMs: number;
  /** Compressed size of the bootstrap layer rpull downloaded. */
  bootstrapBytes: number;
  /** Bytes nydusd's background prefetch had fetched when the first output came (uncompressed). */
  prefetchBytes: number;
}

export interface Result {
  seconds: number;
  /** Of which the pull. */
  pullSeconds: number;
  bytes: number;
  output: string;
  breakdown?: Breakdown;
}

/** Stops a snapshotter process; for nydus, then every nydusd it recorded in its store (they outlive it by design). */
async function stopSnapshotter(sn: ChildProcess, root?: string): Promise<void> {
  if (sn.exitCode === null && sn.signalCode === null) {
    const gone = new Promise((r) => sn.once('exit', r));
    sn.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
    if (sn.exitCode === null && sn.signalCode === null) sn.kill('SIGKILL');
  }
  if (root) killPids(recordedDaemons(root).map((r) => r.pid));
}

/** Runs a command, resolving with each stdout line and the time (Date.now()) it arrived. */
function timedLines(cmd: string, args: string[], timeoutMs: number): Promise<{ at: number; line: string }[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: { at: number; line: string }[] = [];
    let buf = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d: Buffer) => {
      const at = Date.now();
      buf += d.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const line of parts) lines.push({ at, line });
    });
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('exit', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolve(lines);
      else reject(new Error(`${path.basename(cmd)} ${args.join(' ')}: exit ${code ?? sig}: ${err.trim().slice(-500)}`));
    });
  });
}

/** The rpull phase a line of our ctr-remote's output closes (src/ctr/progress.ts). */
function rpullPhase(line: string): string | undefined {
  if (/: resolved sha256:/.test(line)) return 'rpull: start, resolve manifest';
  if (/^config-sha256:/.test(line)) return 'rpull: config';
  if (/^(manifest|index)-sha256:/.test(line)) return 'rpull: content records';
  if (/^layer-sha256:.*remote snapshot/.test(line)) return 'rpull: blob layers (Prepare, remote snapshot)';
  if (/^layer-sha256:.*done \(/.test(line)) return 'rpull: bootstrap layer (download + unpack + commit)';
  if (/^done: /.test(line)) return 'rpull: image record';
  return undefined;
}

/** Every JSON log line (pino's format) of the file `p`, or of the files below the directory `p`. */
function jsonLogLines(p: string): Record<string, unknown>[] {
  if (!fs.existsSync(p)) return [];
  if (fs.statSync(p).isDirectory()) return fs.readdirSync(p).flatMap((e) => jsonLogLines(path.join(p, e)));
  const out: Record<string, unknown>[] = [];
  for (const l of fs.readFileSync(p, 'utf8').split('\n')) {
    try {
      if (l.startsWith('{')) out.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      // A line cut by a log still being written.
    }
  }
  return out;
}

/** GET of a nydusd API path over its unix socket. */
function nydusdGet(apiSock: string, p: string): Promise<Record<string, unknown> & unknown[]> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: apiSock, path: p, timeout: 10_000 }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${p}: HTTP ${res.statusCode} ${body}`))));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error(`${p}: timeout`)));
  });
}

/** The Go program of bench/stargz-grpc/, built once per source version into the fixtures cache. */
function stargzBinary(): string {
  const src = path.join(ROOT, 'bench', 'stargz-grpc', 'main.go');
  const tag = crypto.createHash('sha256').update(fs.readFileSync(src)).digest('hex').slice(0, 12);
  const dir = path.join(FIXTURES, 'bench-coldstart', 'go');
  const bin = path.join(dir, `stargz-grpc-${tag}`);
  if (fs.existsSync(bin)) return bin;
  say('building bench/stargz-grpc (Go, offline from /usr/share/gocode; about 2 minutes the first time)');
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('go', ['build', '-o', `${bin}.tmp`, src], {
    env: { ...process.env, GOPATH: '/usr/share/gocode', GO111MODULE: 'off', GOFLAGS: '', GOCACHE: path.join(dir, 'cache') },
    stdio: ['ignore', 'ignore', 'pipe'],
    timeout: 20 * 60_000,
  });
  fs.renameSync(`${bin}.tmp`, bin);
  return bin;
}

/** Starts the snapshotter of `mode` (none for OCI: containerd's own overlayfs) and waits until it serves. */
async function startSnapshotter(mode: Mode, work: string, certsDir: string, td: Teardown, daemonToml = '', nydusdConfig = NYDUSD_CONFIG, mountOnPull = false): Promise<string> {
  const sock = path.join(work, `${mode}.sock`);
  if (mode === 'oci') return sock;
  const out = fs.openSync(path.join(work, 'snapshotter.log'), 'a');
  let sn: ChildProcess;
  if (isNydus(mode)) {
    fs.writeFileSync(
      path.join(work, 'config.toml'),
      `version = 1\nroot = "${work}/root"\naddress = "${sock}"\ndaemon_mode = "shared"\n[daemon]\nnydusd_config = "${nydusdConfig}"\n${NYDUSD_PATH ? `nydusd_path = "${NYDUSD_PATH}"\n` : ''}${daemonToml}\n[snapshot]\nmount_on_pull = ${mountOnPull}\n[remote.mirrors_config]\ndir = "${certsDir}"\n[log]\nlevel = "${process.env.BENCH_LOGS ? 'debug' : 'info'}"\n`,
    );
    sn = spawn(process.execPath, [path.join(ROOT, 'dist', 'cli', 'containerd-nydus-grpc.js'), '--config', path.join(work, 'config.toml')], { stdio: ['ignore', out, out] });
    td.add('snapshotter and its nydusd', () => stopSnapshotter(sn, path.join(work, 'root')));
  } else {
    sn = spawn(stargzBinary(), ['-address', sock, '-root', path.join(work, 'root'), '-plain-http', REG], { stdio: ['ignore', out, out] });
    td.add('stargz snapshotter', () => stopSnapshotter(sn));
  }
  fs.closeSync(out);
  for (let i = 0; i < 300 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
  if (!fs.existsSync(sock)) throw new Error(`${mode} snapshotter did not start: ${fs.readFileSync(path.join(work, 'snapshotter.log'), 'utf8').slice(-1000)}`);
  if (isNydus(mode)) {
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
  return sock;
}

/** Runs the pull, then `ctr run`; resolves at the first output line of the python command. Whatever
 * it starts is registered in `td` as it starts, so a failure or Ctrl-C at any point undoes it.
 * `daemonToml`: extra keys of the snapshotter's [daemon] table (bench/erofs.ts: fs_driver).
 * `opts.nydusdConfig`: the nydusd template (nydus modes); `opts.mountOnPull`: the snapshotter's
 * `[snapshot] mount_on_pull`; `opts.record`: after the first output, write the files the program
 * read there with `nydusctl prefetch-list` (a trial run). */
export async function coldStart(link: Link, mode: Mode, ref: string, certsDir: string, td: Teardown, daemonToml = '', opts: { nydusdConfig?: string; record?: string; mountOnPull?: boolean } = {}): Promise<Result> {
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
  const sock = await startSnapshotter(mode, work, certsDir, td, daemonToml, opts.nydusdConfig, opts.mountOnPull);
  const ctd = await startContainerd({ snapshotterSocket: sock, snapshotterName: PROXY_NAME[mode], dir: path.join(work, 'ctd') });
  td.add('containerd', () => ctd.stop());
  const before = link.txBytes();
  const startMs = Date.now();
  const t0 = process.hrtime.bigint();
  const base = ['--address', ctd.address, '-n', ctd.namespace];
  let pullLines: { at: number; line: string }[] = [];
  if (mode === 'oci') await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ref], 30 * 60_000);
  else if (mode === 'stargz') await timedLines('/usr/bin/ctr-remote', [...base, 'images', 'rpull', '--plain-http', '--snapshotter', 'stargz', ref], 30 * 60_000);
  // nydus-prefetch-go pulls with the stargz row's client (Debian's Go ctr-remote; our snapshotter
  // reads its remote/stargz.* labels): the snapshotter and nydusd compared with no client in between.
  else if (isGoClient(mode)) await timedLines('/usr/bin/ctr-remote', [...base, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], 30 * 60_000);
  else if (isNydus(mode)) pullLines = await timedLines(path.join(ROOT, 'bin', 'ctr-remote'), [...base, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], 30 * 60_000);
  const pullSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const runStartMs = Date.now();
  const output = await new Promise<string>((resolve, reject) => {
    const p = spawn('ctr', [...base, 'run', '--runc-root', ctd.runcRoot, '--rm', ...ENV, '--snapshotter', SNAPSHOTTER[mode], ref, `cs-${mode}`, ...PY]);
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
  const endMs = startMs + seconds * 1000;
  const bytes = link.txBytes() - before;
  const breakdown = isNydus(mode) ? await nydusBreakdown(work, pullLines, startMs, runStartMs, endMs) : undefined;
  if (opts.record) {
    const rec = recordedDaemons(path.join(work, 'root'))[0];
    sh(path.join(ROOT, 'bin', 'nydusctl'), ['--sock', rec.apiSock, 'prefetch-list', '--output', opts.record]);
  }
  return { seconds, pullSeconds, bytes, output, breakdown };
}

/**
 * The phases of a nydus cold start, from the times rpull's lines arrived, the snapshotter's and
 * nydusd's logs (mount done, its duration) and nydusd's access pattern (first read in the image),
 * and the read-path counters of nydusd's API right after the first output.
 */
async function nydusBreakdown(work: string, pullLines: { at: number; line: string }[], startMs: number, runStartMs: number, endMs: number): Promise<Breakdown> {
  const phases: [string, number][] = [];
  const add = (name: string, ms: number): void => {
    const known = phases.find((p) => p[0] === name);
    if (known) known[1] += ms / 1000;
    else phases.push([name, ms / 1000]);
  };
  let prev = startMs;
  let bootstrapBytes = 0;
  for (const { at, line } of pullLines) {
    const phase = rpullPhase(line);
    if (!phase) continue;
    add(phase, at - prev);
    prev = at;
    const m = /done \((\d+) bytes\)/.exec(line);
    if (m) bootstrapBytes += Number(m[1]);
  }
  add(pullLines.length ? 'rpull: exit' : "rpull (Debian's ctr-remote: one phase)", runStartMs - prev);
  const logs = [...jsonLogLines(path.join(work, 'root', 'logs')), ...jsonLogLines(path.join(work, 'snapshotter.log'))];
  const nydusdMount = logs.find((l) => l.component === 'nydusd' && l.msg === 'rafs instance mounted');
  const managerMount = logs.find((l) => l.component === 'daemon-manager' && l.msg === 'rafs instance mounted');
  const rec = recordedDaemons(path.join(work, 'root'))[0];
  const pattern = rec ? ((await nydusdGet(rec.apiSock, '/api/v1/metrics/pattern')) as unknown as { first_access_time_secs: number; first_access_time_nanos: number }[]) : [];
  const firstRead = Math.min(...pattern.map((p) => p.first_access_time_secs * 1000 + p.first_access_time_nanos / 1e6));
  if (!managerMount || !nydusdMount) throw new Error(`nydus run: mount times missing from the logs (manager: ${!!managerMount}, nydusd: ${!!nydusdMount})`);
  const mountedAt = Number(managerMount.time);
  const mountMs = Number(nydusdMount.ms ?? 0);
  // Kernel EROFS mode (bench/erofs.ts): the kernel serves the files and nydusd sees blob reads
  // only, so there is no per-file access pattern to split the rest by.
  const after = Number.isFinite(firstRead) ? firstRead : endMs;
  const until = Number.isFinite(firstRead) ? "container create until the image's first read" : 'container create, task start and the program until its first output (kernel EROFS: no per-file reads seen)';
  // The program's exec: the first read of the python binary (the kernel reads its ELF header).
  const exec = Math.min(...pattern.filter((p) => PROGRAM_BINARY.test((p as { path?: string }).path ?? '')).map((p) => p.first_access_time_secs * 1000 + p.first_access_time_nanos / 1e6));
  if (mountedAt - mountMs >= runStartMs) {
    add('ctr run: create, Prepare until nydusd mounts', mountedAt - runStartMs - mountMs);
    add('nydusd mount (bootstrap load + FUSE mount)', mountMs);
    add(until, after - mountedAt);
  } else if (mountedAt > runStartMs) {
    // mount_on_pull: the mount began during the pull; only its rest is on the path.
    add('nydusd mount on pull, its part after the pull', mountedAt - runStartMs);
    add(until, after - mountedAt);
  } else {
    add(`ctr run: ${until.replace('container create', 'create')} (mounted during the pull)`, after - runStartMs);
  }
  if (Number.isFinite(firstRead)) {
    if (Number.isFinite(exec) && exec >= firstRead) {
      add("task create + start until the program's exec", exec - firstRead);
      add('the program until its first output', endMs - exec);
    } else {
      add('task create + start and the program until its first output', endMs - firstRead);
    }
  }
  const m = await nydusdGet(rec.apiSock, '/api/v1/metrics');
  const b = await nydusdGet(rec.apiSock, '/api/v1/metrics/backend');
  const c = await nydusdGet(rec.apiSock, '/api/v1/metrics/blobcache');
  return {
    phases,
    readBytes: Number(m.data_read),
    fuseReads: Number(m.read_count),
    backendRequests: Number(b.read_count),
    backendBytes: Number(b.read_amount_total),
    backendWaitMs: Number(b.read_cumulative_latency_millis_total),
    decompressMs: Number(b.decompress_millis_total ?? NaN),
    verifyMs: Number(b.verify_millis_total ?? NaN),
    bootstrapBytes,
    prefetchBytes: Number(c.prefetch_data_amount ?? 0),
  };
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
const sec = (x: number): string => `${x.toFixed(2)} s`;

interface Row {
  image: string;
  unpacked: number;
  oci: Result;
  stargz: Result;
  nydus: Result;
  /** The nydus-prefetch variant, and its recorded list (files, bytes of those files in the image). */
  prefetch: Result;
  /** The same, pulled with Debian's ctr-remote (the stargz row's client). */
  prefetchGo: Result;
  /** The same in kernel EROFS mode. */
  erofsGo: Result;
  list: { files: number; bytes: number };
  /** Every round's time, per mode, for the record. */
  rounds: Record<Mode, number[]>;
}

function report(rows: Row[]): string {
  const lines: string[] = [];
  const rounds = rows[0].rounds.nydus.length;
  lines.push('## Cold start: containerd-nydus-grpc vs the stargz snapshotter vs OCI (overlayfs)');
  lines.push('');
  lines.push(
    `From \`pull\` to the first output of \`python3 -c ...\` in a new container, through a private containerd ${sh('containerd', ['--version']).split(' ')[2]} with runc; ` +
      `the registry sits behind a ${RATE_MBIT} Mbit/s link (tc htb on a veth pair). Each run starts cold (fresh containerd, snapshotter root and blob cache). ` +
      'OCI: `ctr images pull` + overlayfs snapshotter. stargz: `ctr-remote images rpull` (Debian\'s) + the stargz snapshotter (bench/stargz-grpc, default configuration: prefetch and background fetch on), image converted by `ctr-remote images convert --estargz --oci` ' +
      'without a prioritized-files record (`ctr-remote images optimize` was not run), so it prefetches only what its own heuristics pick. ' +
      'nydus: our `ctr-remote images rpull` + containerd-nydus-grpc (shared nydusd, config/nydusd.json), image converted by nydusify. ' +
      `nydus+prefetch: the same image converted again with \`nydusify convert --prefetch-patterns\` fed the files a trial run of the plain nydus image read until the first output (\`nydusctl prefetch-list\`: ${rows.map((r) => `${r.image} ${r.list.files} files, ${mb(r.list.bytes)}`).join('; ')}), ` +
      `so their data is the head of the blob and the image's prefetch table, and nydusd's \`fs_prefetch\` enabled (${JSON.stringify(FS_PREFETCH)}): it fetches that region in merged parallel requests from the mount on, while runc starts. ` +
      (MOUNT_ON_PULL ? 'The prefetch rows also set the snapshotter\'s `[snapshot] mount_on_pull`: the image is mounted (and its prefetch started) when the pull commits its bootstrap layer, as the stargz snapshotter mounts during its pull, not at the container\'s Prepare. ' : '') +
      'The record is the workload\'s own, so this row is the comparison with an *optimized* image; the stargz row has no record of its own (read the nydus row for the like-for-like comparison). ' +
      'nydus+prefetch, Go client: the same, pulled with Debian\'s `ctr-remote images rpull` (the stargz row\'s client) instead of ours, so the two lazy snapshotters are compared behind one client; our ctr-remote\'s own start-up (Node.js and its modules) is the difference between the two prefetch rows. ' +
      'Kernel EROFS + prefetch, Go client: that row with the snapshotter\'s `fs_driver = "erofs"`: the kernel mounts the bootstrap over nydusd\'s blob view, so lookups and cached reads stay in the kernel (its "bytes the program read" is the FUSE rows\' figure: nydusd sees only blob reads there). ' +
      `Median of ${rounds} round(s) (the lower middle one for an even count), the modes interleaved in each round; bytes are counted on the registry's side of the link. ` +
      `Load average of the machine (${os.cpus().length} cores) when the report was written: ${os.loadavg()[0].toFixed(1)} (1 min), ${os.loadavg()[2].toFixed(1)} (15 min); times are wall clock and grow with it.`,
  );
  lines.push('');
  lines.push('| image | unpacked | OCI | stargz | nydus | nydus+prefetch | nydus+prefetch, Go client | kernel EROFS + prefetch, Go client | nydus / stargz | nydus+prefetch / stargz | Go client / stargz | EROFS, Go client / stargz | nydus / OCI | bytes pulled OCI | stargz | nydus | nydus+prefetch | Go client | EROFS, Go client |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    lines.push(
      `| ${r.image} | ${mb(r.unpacked)} | ${sec(r.oci.seconds)} | ${sec(r.stargz.seconds)} | ${sec(r.nydus.seconds)} | ${sec(r.prefetch.seconds)} | ${sec(r.prefetchGo.seconds)} | ${sec(r.erofsGo.seconds)} | **${(r.nydus.seconds / r.stargz.seconds).toFixed(2)}x** | **${(r.prefetch.seconds / r.stargz.seconds).toFixed(2)}x** | **${(r.prefetchGo.seconds / r.stargz.seconds).toFixed(2)}x** | **${(r.erofsGo.seconds / r.stargz.seconds).toFixed(2)}x** | ${((r.nydus.seconds / r.oci.seconds) * 100).toFixed(1)} % | ${mb(r.oci.bytes)} | ${mb(r.stargz.bytes)} | ${mb(r.nydus.bytes)} | ${mb(r.prefetch.bytes)} | ${mb(r.prefetchGo.bytes)} | ${mb(r.erofsGo.bytes)} |`,
    );
  }
  lines.push('');
  lines.push('```');
  const max = Math.max(...rows.flatMap((r) => [r.oci.seconds, r.stargz.seconds, r.nydus.seconds, r.prefetch.seconds, r.prefetchGo.seconds, r.erofsGo.seconds]));
  for (const r of rows) {
    for (const [k, v] of [['OCI     ', r.oci.seconds], ['stargz  ', r.stargz.seconds], ['nydus   ', r.nydus.seconds], ['nydus+pf', r.prefetch.seconds], ['pf, Go  ', r.prefetchGo.seconds], ['EROFS,Go', r.erofsGo.seconds]] as const) {
      lines.push(`${r.image.padEnd(6)} ${k} ${'#'.repeat(Math.max(1, Math.round((v / max) * 50))).padEnd(50)} ${sec(v)}`);
    }
  }
  lines.push('```');
  lines.push('');
  // One column per image and nydus variant.
  const cols = rows.flatMap((r) => [
    { name: `${r.image} nydus`, res: r.nydus, r },
    { name: `${r.image} +prefetch`, res: r.prefetch, r },
    { name: `${r.image} +prefetch, Go client`, res: r.prefetchGo, r },
    { name: `${r.image} kernel EROFS +prefetch, Go client`, res: r.erofsGo, r },
  ]);
  lines.push('Where the nydus cold start goes (the median round; the phases add up to its time):');
  lines.push('');
  lines.push(`| phase | ${cols.map((c) => c.name).join(' | ')} |`);
  lines.push(`|---|${cols.map(() => '---:').join('|')}|`);
  const phaseNames = [...new Set(cols.flatMap((c) => c.res.breakdown!.phases.map((p) => p[0])))];
  for (const name of phaseNames) {
    lines.push(`| ${name} | ${cols.map((c) => sec(c.res.breakdown!.phases.find((p) => p[0] === name)?.[1] ?? 0)).join(' | ')} |`);
  }
  lines.push(`| **total** | ${cols.map((c) => `**${sec(c.res.seconds)}**`).join(' | ')} |`);
  lines.push('');
  lines.push(
    "The container's reads (nydusd's API right after the first output; backend requests and bytes include the background prefetch; network wait is summed over concurrent requests, decompression and verification are CPU time):",
  );
  lines.push('');
  lines.push(`| | ${cols.map((c) => c.name).join(' | ')} |`);
  lines.push(`|---|${cols.map(() => '---:').join('|')}|`);
  const b = (f: (x: Breakdown, res: Result, r: Row) => string): string => cols.map((c) => f(c.res.breakdown!, c.res, c.r)).join(' | ');
  lines.push(`| bytes the program read (FUSE) | ${b((x) => mb(x.readBytes))} |`);
  lines.push(`| FUSE read requests | ${b((x) => String(x.fuseReads))} |`);
  lines.push(`| prefetch list (files, their bytes) | ${cols.map((c) => (c.res !== c.r.nydus ? `${c.r.list.files}, ${mb(c.r.list.bytes)}` : '-')).join(' | ')} |`);
  lines.push(`| prefetched in the background (uncompressed) | ${b((x) => mb(x.prefetchBytes))} |`);
  lines.push(`| backend requests | ${b((x) => String(x.backendRequests))} |`);
  lines.push(`| backend bytes (compressed chunks) | ${b((x) => mb(x.backendBytes))} |`);
  lines.push(`| waiting on the network | ${b((x) => `${x.backendWaitMs} ms`)} |`);
  lines.push(`| decompression | ${b((x) => `${x.decompressMs.toFixed(0)} ms`)} |`);
  lines.push(`| digest verification | ${b((x) => `${x.verifyMs.toFixed(0)} ms`)} |`);
  lines.push(`| bootstrap layer | ${b((x) => mb(x.bootstrapBytes))} |`);
  lines.push(`| bytes pulled over the link (all requests) | ${b((_x, res) => mb(res.bytes))} |`);
  lines.push(`| pulled / (read + bootstrap) | ${b((x, res) => `${(res.bytes / (x.readBytes + x.bootstrapBytes)).toFixed(2)}x`)} |`);
  lines.push('');
  const modes: [Mode, string][] = [['oci', 'oci'], ['stargz', 'stargz'], ['nydus', 'nydus'], ['nydus-prefetch', 'nydus+prefetch'], ['nydus-prefetch-go', 'nydus+prefetch (Go client)'], ['nydus-erofs-prefetch-go', 'kernel EROFS + prefetch (Go client)']];
  lines.push(`Rounds (s): ${rows.map((r) => modes.map(([m, label]) => `${r.image} ${label} ${r.rounds[m].map((x) => x.toFixed(2)).join(', ')}`).join('; ')).join('; ')}.`);
  lines.push('');
  const checks: string[] = [];
  for (const r of rows) {
    for (const [label, res] of [['nydus', r.nydus], ['nydus+prefetch', r.prefetch], ['nydus+prefetch (Go client)', r.prefetchGo], ['kernel EROFS + prefetch (Go client)', r.erofsGo]] as const) {
      const ratio = res.seconds / r.stargz.seconds;
      checks.push(`${r.image}: ${label} at most 0.9x the stargz snapshotter: ${ratio <= 0.9 ? 'met' : 'NOT met'} (${ratio.toFixed(2)}x)`);
      checks.push(`${r.image}: ${label} at most 1.2 s: ${res.seconds <= 1.2 ? 'met' : 'NOT met'} (${sec(res.seconds)})`);
      const x = res.breakdown!;
      const pulled = res.bytes / (x.readBytes + x.bootstrapBytes);
      checks.push(`${r.image}: ${label} bytes pulled at most 1.5x read + bootstrap: ${pulled <= 1.5 ? 'met' : 'NOT met'} (${pulled.toFixed(2)}x)`);
    }
  }
  if (rows.length > 1) {
    const small = rows[0];
    const large = rows[rows.length - 1];
    const flat = (f: (r: Row) => number): string => (f(large) / f(small)).toFixed(2);
    checks.push(
      `flat in image size: large / small time = nydus ${flat((r) => r.nydus.seconds)}, nydus+prefetch ${flat((r) => r.prefetch.seconds)}, Go client ${flat((r) => r.prefetchGo.seconds)}, kernel EROFS ${flat((r) => r.erofsGo.seconds)} (stargz: ${flat((r) => r.stargz.seconds)}, OCI: ${flat((r) => r.oci.seconds)})`,
    );
  }
  lines.push('Targets (issue 18):');
  lines.push('');
  for (const c of checks) lines.push(`- ${c}`);
  return lines.join('\n') + '\n';
}

/**
 * Converts `src` to eStargz as `dst` with Debian's ctr-remote in a private containerd, and pushes it.
 * The result is kept as an OCI layout in the fixtures (the conversion takes minutes on 2 cores);
 * `layoutDir` is the source image's cached layout, whose name says what it holds.
 */
async function convertEstargz(src: string, dst: string, layoutDir: string, td: Teardown): Promise<void> {
  const cached = `${layoutDir}-esgz`;
  if (fs.existsSync(path.join(cached, 'index.json'))) {
    sh('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${cached}:latest`, `docker://${dst}`]);
    return;
  }
  const scope = td.scope('eStargz conversion');
  try {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cs-esgz-'));
    scope.add(`work dir ${dir}`, () => fs.rmSync(dir, { recursive: true, force: true }));
    const ctd = await startContainerd({ snapshotterSocket: path.join(dir, 'none.sock'), snapshotterName: 'none', dir: path.join(dir, 'ctd') });
    scope.add('containerd', () => ctd.stop());
    const base = ['--address', ctd.address, '-n', ctd.namespace];
    sh('ctr', [...base, 'content', 'fetch', '--plain-http', src]);
    sh('ctr-remote', [...base, 'images', 'convert', '--estargz', '--oci', src, dst]);
    sh('ctr', [...base, 'images', 'push', '--plain-http', dst]);
    const tmp = `${cached}.partial-${process.pid}`;
    sh('skopeo', ['copy', '--quiet', '--src-tls-verify=false', `docker://${dst}`, `oci:${tmp}:latest`]);
    fs.renameSync(tmp, cached);
  } finally {
    await scope.run();
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)];

async function main(): Promise<void> {
  const demo = process.argv.includes('--demo');
  const roundsWanted = Number(process.env.BENCH_ROUNDS ?? (demo ? 1 : 3));
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
    stargzBinary();
    const link = await startLink();
    td.add('registry and network namespace', () => link.close());
    const certs = fs.mkdtempSync(path.join(os.tmpdir(), 'coldstart-certs-'));
    td.add('certs.d', () => fs.rmSync(certs, { recursive: true, force: true }));
    // nydusd reaches this registry over plain HTTP, as containerd's hosts.toml says.
    fs.mkdirSync(path.join(certs, REG));
    fs.writeFileSync(path.join(certs, REG, 'hosts.toml'), `server = "http://${REG}"\n`);
    const lists = fs.mkdtempSync(path.join(os.tmpdir(), 'coldstart-lists-'));
    td.add('prefetch lists', () => fs.rmSync(lists, { recursive: true, force: true }));
    const pfTemplate = prefetchTemplate(lists);
    const nydusify = path.join(ROOT, 'dist', 'cli', 'nydusify.js');
    const images2 = [];
    for (const name of images) {
      const refs: Record<Mode, string> = {
        oci: `${REG}/bench/${name}:oci`,
        nydus: `${REG}/bench/${name}:nydus`,
        stargz: `${REG}/bench/${name}:esgz`,
        'nydus-prefetch': `${REG}/bench/${name}:nydus-prefetch`,
        'nydus-prefetch-go': `${REG}/bench/${name}:nydus-prefetch`,
        'nydus-erofs-prefetch-go': `${REG}/bench/${name}:nydus-prefetch`,
      };
      say(`${name}: pushing and converting (before the link is shaped)`);
      sh('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layouts.get(name)!.dir}:latest`, `docker://${refs.oci}`]);
      sh(process.execPath, [nydusify, 'convert', '--source', refs.oci, '--target', refs.nydus, '--plain-http']);
      if (MODES.includes('stargz')) await convertEstargz(refs.oci, refs.stargz, layouts.get(name)!.dir, td);
      let list = { files: 0, bytes: 0 };
      if (MODES.some(isPrefetch)) {
        // The trial run: the plain nydus image, unshaped link; what python read until its first output.
        const file = path.join(lists, `${name}.txt`);
        await measured(td, 'trial run', (scope) => coldStart(link, 'nydus', refs.nydus, certs, scope, '', { record: file }));
        const paths = fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
        if (paths.length === 0) throw new Error(`${name}: the trial run recorded no reads`);
        // Sizes from the Debian rootfs the image was built from (the data layer holds nothing python reads).
        const size = (p: string): number => fs.lstatSync(path.join(FIXTURES, 'debian-rootfs', p), { throwIfNoEntry: false })?.size ?? 0;
        list = { files: paths.length, bytes: paths.reduce((a, p) => a + size(p), 0) };
        say(`${name}: trial run read ${list.files} files (${mb(list.bytes)}); converting with them as --prefetch-patterns`);
        execFileSync(process.execPath, [nydusify, 'convert', '--source', refs.oci, '--target', refs['nydus-prefetch'], '--plain-http', '--prefetch-patterns'], {
          input: fs.readFileSync(file),
          stdio: ['pipe', 'ignore', 'pipe'],
          timeout: 30 * 60_000,
        });
      }
      images2.push({ image: name, unpacked: layouts.get(name)!.unpacked, refs, list });
    }
    link.shape();
    const rows: Row[] = [];
    for (const r of images2) {
      const all: Record<Mode, Result[]> = { oci: [], stargz: [], nydus: [], 'nydus-prefetch': [], 'nydus-prefetch-go': [], 'nydus-erofs-prefetch-go': [] };
      for (let round = 1; round <= roundsWanted; round++) {
        for (const mode of MODES) {
          say(`${r.image}: ${mode} cold start over ${RATE_MBIT} Mbit/s (round ${round}/${roundsWanted})`);
          const opts = isPrefetch(mode) ? { nydusdConfig: pfTemplate, mountOnPull: MOUNT_ON_PULL } : {};
          const driver = mode === 'nydus-erofs-prefetch-go' ? 'fs_driver = "erofs"' : '';
          const res = await measured(td, `${mode} run`, (scope) => coldStart(link, mode, r.refs[mode], certs, scope, driver, opts));
          // The stargz snapshotter keeps fetching whole layers in the background until it is gone;
          // the next run must not count the tail of that.
          await linkQuiet(link);
          // The OCI runs write a gigabyte: its writeback must not run into the next measurement.
          execFileSync('sync');
          say(`${r.image}: ${mode} ${sec(res.seconds)}, pull ${sec(res.pullSeconds)}, ${mb(res.bytes)} (${res.output})`);
          if (res.breakdown) say(`${r.image}: ${mode} ${JSON.stringify(res.breakdown)}`);
          if (all.oci.length && res.output !== all.oci[0].output) throw new Error(`outputs differ: OCI ${all.oci[0].output} vs ${mode} ${res.output}`);
          all[mode].push(res);
        }
      }
      const pick = (xs: Result[]): Result => xs.find((x) => x.seconds === median(xs.map((y) => y.seconds)))!;
      // Debian's ctr-remote prints no byte counts: the bootstrap layer is the same image's as in the
      // nydus-prefetch run.
      for (const x of [...all['nydus-prefetch-go'], ...all['nydus-erofs-prefetch-go']]) if (x.breakdown && all['nydus-prefetch'][0]?.breakdown) x.breakdown.bootstrapBytes = all['nydus-prefetch'][0].breakdown.bootstrapBytes;
      // In kernel EROFS mode nydusd sees blob reads, not the program's file reads: the program and
      // the image are the same as in the FUSE rows, so it read the bytes they counted.
      const fuseRun = [...all['nydus-prefetch-go'], ...all['nydus-prefetch'], ...all.nydus].find((x) => x.breakdown);
      for (const x of all['nydus-erofs-prefetch-go']) if (x.breakdown && fuseRun) x.breakdown.readBytes = fuseRun.breakdown!.readBytes;
      const times = (m: Mode): number[] => all[m].map((x) => x.seconds);
      rows.push({
        image: r.image,
        unpacked: r.unpacked,
        oci: pick(all.oci),
        stargz: pick(all.stargz),
        nydus: pick(all.nydus),
        prefetch: pick(all['nydus-prefetch']),
        prefetchGo: pick(all['nydus-prefetch-go']),
        erofsGo: pick(all['nydus-erofs-prefetch-go']),
        list: r.list,
        rounds: { oci: times('oci'), stargz: times('stargz'), nydus: times('nydus'), 'nydus-prefetch': times('nydus-prefetch'), 'nydus-prefetch-go': times('nydus-prefetch-go'), 'nydus-erofs-prefetch-go': times('nydus-erofs-prefetch-go') },
      });
    }
    if (ALL_MODES.some((m) => !MODES.includes(m))) return;
    const md = report(rows);
    if (!demo) {
      fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
      fs.writeFileSync(path.join(ROOT, 'bench-out', 'coldstart.md'), md);
    }
    process.stdout.write(md);
  } finally {
    await td.run();
  }
}

/** Waits (at most 60 s) until the link carries less than 64 KB in half a second. */
async function linkQuiet(link: Link): Promise<void> {
  let last = link.txBytes();
  for (let i = 0; i < 120; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = link.txBytes();
    if (now - last < 64 << 10) return;
    last = now;
  }
  say('the link did not go quiet within 60 s; the next run may count foreign bytes');
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
