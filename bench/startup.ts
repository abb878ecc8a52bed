/**
 * Fixed start-up costs of the cold start (issue 18): nydusd's mount and ctr-remote's start.
 *
 * A. nydusd mount (the "nydusd mount" phase of the cold start): the time from
 * `POST /api/v1/mount` to its answer for the Debian fixture bootstrap (built by our nydus-image), on
 * a shared daemon already running, as the snapshotter mounts it. Then the first `find` + stat walk
 * of the fresh mount, which is where a lazily decoded tree pays for what the mount skipped.
 *
 * Baselines in the same run, rounds interleaved:
 *   - `decodeBootstrap` of the same bytes in this process: the whole-tree decode a mount used to do
 *     before answering (what `inspect` and `check` still do);
 *   - with BENCH_STARTUP_BEFORE=DIR, the nydusd of another checkout (DIR/bin/nydusd, built), e.g. the
 *     commit before a change, measured the same way.
 *    Then the resident memory of one shared daemon with 10 such images mounted, each touched as a
 *    container start touches it (two files read, a few directories looked up), not walked whole
 *    (bench/read.ts part C walks each image whole).
 * B. ctr-remote: wall time of `ctr-remote --help` and of loading what `images rpull` loads before
 *    its first request (the CLI run against a containerd socket that does not exist, so it stops at
 *    its first call), with the number of JavaScript modules each loads; baseline: `node -e 0`.
 *    Also for BENCH_STARTUP_BEFORE's checkout.
 * C. ctr-remote images rpull, a real pull (issue 18: our client's start and first requests cost the
 *    cold start ~0.6 s more than Debian's Go client): the cold-start benchmark's small image
 *    (bench/coldstart.ts buildLayout, converted by nydusify) from docker-registry on 127.0.0.1 into
 *    a private containerd 1.6 with containerd-nydus-grpc. Wall and CPU time (user + system, all
 *    threads) of the whole command for this build, BENCH_STARTUP_BEFORE's build and Debian's Go
 *    ctr-remote, rounds interleaved; after each pull `ctr images rm --sync` removes the image, its
 *    content and snapshots, so every pull finds containerd empty.
 *    BENCH_STARTUP_PARTS=C (or A,B,C) runs only those parts.
 * Writes bench-out/startup.md.
 */
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { killPids, recordedDaemons, startContainerd, unmountBelow } from '../src/snapshotter/private-containerd';
import { buildLayout } from './coldstart';
import { median, timed } from './measure';
import { Daemon, findStat, localfsConfig, rssMiB, startDaemon, stopDaemon, unmount } from './read';
import { Teardown } from './support/teardown';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const NYDUS_IMAGE = path.join(ROOT, 'dist', 'cli', 'nydus-image.js');
const ROUNDS = Number(process.env.BENCH_STARTUP_ROUNDS ?? 5);
const BEFORE = process.env.BENCH_STARTUP_BEFORE;
const PARTS = (process.env.BENCH_STARTUP_PARTS ?? 'A,B,C').split(',');

interface Build {
  name: string;
  nydusd: string;
  mount: number[];
  walk: number[];
}

/** One daemon start, one API mount (timed), one first walk (timed), unmount, stop. */
async function round(b: Build, work: string, boot: string, cfg: object, r: number): Promise<void> {
  const mp = path.join(work, `mnt-${b.name}-${r}`);
  fs.mkdirSync(mp, { recursive: true });
  const d: Daemon = await startDaemon(work, `${b.name}${r}`, [], b.nydusd);
  try {
    const t0 = process.hrtime.bigint();
    await d.client.mount(mp, boot, cfg);
    b.mount.push(Number(process.hrtime.bigint() - t0) / 1e9);
    b.walk.push(findStat(mp));
    await d.client.umount(mp);
  } finally {
    unmount(mp);
    await stopDaemon(d);
  }
}

const ms = (x: number): string => `${(x * 1000).toFixed(0)} ms`;
const roundsMs = (xs: number[]): string => xs.map((x) => (x * 1000).toFixed(0)).join(', ');

async function partMount(work: string, lines: string[]): Promise<void> {
  const blobs = path.join(work, 'blobs');
  const boot = path.join(work, 'debian.boot');
  execFileSync('node', [NYDUS_IMAGE, 'create', '-t', 'tar-rafs', '-B', boot, '-D', blobs, path.join(FIXTURES, 'debian-rootfs.tar')], { stdio: 'ignore' });
  const cfg = localfsConfig(blobs, path.join(work, 'cache'));
  const bytes = fs.readFileSync(boot);
  const builds: Build[] = [{ name: 'this', nydusd: path.join(ROOT, 'bin', 'nydusd'), mount: [], walk: [] }];
  if (BEFORE) builds.push({ name: 'before', nydusd: path.join(path.resolve(BEFORE), 'bin', 'nydusd'), mount: [], walk: [] });
  const decode: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    for (const b of r % 2 ? [...builds].reverse() : builds) await round(b, work, boot, cfg, r);
    decode.push(timed(() => void decodeBootstrap(bytes)));
  }
  const entryCount = Number(execFileSync('sh', ['-c', 'tar -tf "$1" | wc -l', 'sh', path.join(FIXTURES, 'debian-rootfs.tar')]).toString().trim());
  const rss = new Map<Build, number>();
  for (const b of builds) rss.set(b, await tenImagesTouched(b, work, boot, cfg));
  lines.push(
    '### nydusd mount: POST /api/v1/mount until its answer',
    '',
    `The Debian fixture (${entryCount} tar entries, bootstrap ${(bytes.length / 1e6).toFixed(1)} MB uncompressed, built by our nydus-image, localfs backend) mounted through the API of a shared nydusd that is already running, as the snapshotter does; then the first \`find\` + stat walk of that fresh mount. Median of ${ROUNDS} rounds, a fresh daemon each round. "Whole-tree decode" is \`decodeBootstrap\` of the same bytes in the benchmark's own process (JIT warm after the first round): what a mount did before it answered until the tree was decoded on demand.`,
    '',
    '| | POST /api/v1/mount | first find + stat walk |',
    '|---|---:|---:|',
    ...builds.map((b) => `| nydusd (${b.name === 'this' ? 'this build' : `before: ${BEFORE}`}) | ${ms(median(b.mount))} | ${ms(median(b.walk))} |`),
    `| whole-tree decode (reference) | ${ms(median(decode))} | |`,
    '',
    `Rounds (ms): ${builds.map((b) => `${b.name} mount ${roundsMs(b.mount)}; walk ${roundsMs(b.walk)}`).join('; ')}; decode ${roundsMs(decode)}.`,
    '',
    `Resident memory of one shared daemon with 10 of these images mounted, two files of each read (\`/usr/bin/perl\`, \`/etc/os-release\`: what a container start touches, not a walk of the whole tree), 1.5 s after the last read: ${builds.map((b) => `${b.name === 'this' ? 'this build' : 'before'} ${rss.get(b)!.toFixed(1)} MiB`).join(', ')}.`,
  );
  if (BEFORE) {
    const [a, b] = builds;
    lines.push('', `Mount time, this build / before: **${(median(a.mount) / median(b.mount)).toFixed(2)}x**; first walk: ${(median(a.walk) / median(b.walk)).toFixed(2)}x.`);
  }
}

/** RSS (MiB) of one shared daemon with 10 images mounted, two files of each read, 1.5 s after the last read. */
async function tenImagesTouched(b: Build, work: string, boot: string, cfg: object): Promise<number> {
  const d = await startDaemon(work, `rss-${b.name}`, [], b.nydusd);
  const mps: string[] = [];
  try {
    for (let i = 0; i < 10; i++) {
      const mp = path.join(work, `rss-${b.name}-${i}`);
      mps.push(mp);
      await d.client.mount(mp, boot, cfg);
      execFileSync('sh', ['-c', 'cat "$1/usr/bin/perl" "$1/etc/os-release" > /dev/null', 'sh', mp]);
    }
    // The daemon collects garbage after 0.5-1 s without FUSE requests (src/daemon/idle-gc.ts).
    await new Promise((r) => setTimeout(r, 1500));
    return rssMiB(d.proc.pid!);
  } finally {
    for (const mp of mps) unmount(mp);
    await stopDaemon(d);
  }
}

/** Wall time and JavaScript modules compiled by one `node` run in `cwd` (modules counted by a preload). */
function nodeRun(counter: string, cwd: string, args: string[]): { s: number; modules: number } {
  const out = path.join(path.dirname(counter), 'modules.txt');
  fs.rmSync(out, { force: true });
  const s = timed(() => execFileSync('node', ['-r', counter, ...args], { cwd, stdio: 'ignore', env: { ...process.env, COUNT_MODULES_TO: out } }));
  return { s, modules: Number(fs.readFileSync(out, 'utf8')) };
}

function partCtrRemote(work: string, lines: string[]): void {
  const counter = path.join(work, 'count-modules.js');
  fs.writeFileSync(counter, [
    "const M = require('module'); let n = 0; const c = M.prototype._compile;",
    'M.prototype._compile = function (...a) { n++; return c.apply(this, a); };',
    "process.on('exit', () => require('fs').writeFileSync(process.env.COUNT_MODULES_TO, String(n)));",
  ].join('\n'));
  // What the rpull action requires before its first request (before this change: the CLI's imports).
  const rpullModules = "require(require.resolve('commander', { paths: [process.cwd()] })); for (const m of ['registry/credentials', 'ctr/containerd-client', 'ctr/progress', 'ctr/rpull']) require(process.cwd() + '/dist/' + m);";
  const roots = [{ name: 'this build', dir: ROOT }, ...(BEFORE ? [{ name: `before: ${BEFORE}`, dir: path.resolve(BEFORE) }] : [])];
  const rows = roots.map((r) => ({ ...r, help: [] as number[], rpull: [] as number[], helpMods: 0, rpullMods: 0 }));
  const bare: number[] = [];
  for (let i = 0; i < ROUNDS * 2; i++) {
    bare.push(nodeRun(counter, ROOT, ['-e', '0']).s);
    for (const r of rows) {
      const h = nodeRun(counter, r.dir, ['dist/cli/ctr-remote.js', '--help']);
      const p = nodeRun(counter, r.dir, ['-e', rpullModules]);
      r.help.push(h.s);
      r.rpull.push(p.s);
      r.helpMods = h.modules;
      r.rpullMods = p.modules;
    }
  }
  lines.push(
    '',
    '### ctr-remote start-up',
    '',
    `Wall time of \`node dist/cli/ctr-remote.js --help\` and of a node process that loads what \`images rpull\` loads before its first request (commander, the registry client, the containerd client, rpull), with the JavaScript modules each compiles; baseline: \`node -e 0\`. Median of ${ROUNDS * 2} runs, interleaved.`,
    '',
    '| | --help | modules | rpull\'s modules loaded | modules |',
    '|---|---:|---:|---:|---:|',
    ...rows.map((r) => `| ${r.name} | ${ms(median(r.help))} | ${r.helpMods} | ${ms(median(r.rpull))} | ${r.rpullMods} |`),
    `| bare node (\`node -e 0\`) | ${ms(median(bare))} | 0 | | |`,
    '',
    `Runs (ms): bare ${roundsMs(bare)}; ${rows.map((r) => `${r.name}: help ${roundsMs(r.help)}, rpull ${roundsMs(r.rpull)}`).join('; ')}.`,
  );
}

/** A port on 127.0.0.1 nobody holds right now. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

async function waitFor(what: string, ok: () => boolean | Promise<boolean>, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (await ok()) return;
  throw new Error(`${what} did not come up within ${ms / 1000} s`);
}

function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    p.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    p.kill('SIGTERM');
  });
}

/**
 * Wall and CPU seconds (user + system of the command and its threads) of one run of `argv`, taken
 * inside a bash around the command alone: spawning from this process costs a child far more here
 * than the command itself (seconds on the loaded machine, and bash's children times start above
 * zero), so both are differences of readings just before and after the command.
 */
function timedRun(argv: string[], env: NodeJS.ProcessEnv): { wall: number; cpu: number } {
  const r = spawnSync('bash', ['-c', 'times; s=$EPOCHREALTIME; "$@" >/dev/null; rc=$?; e=$EPOCHREALTIME; times; echo "$s $e"; exit $rc', 'bash', ...argv], { env, encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: exit ${r.status}: ${r.stderr.trim().slice(-400)}`);
  const lines = r.stdout.trim().split('\n');
  const children = (line: string): number => {
    const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(line.trim());
    if (!m) throw new Error(`no times in ${JSON.stringify(r.stdout)}`);
    return Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4]);
  };
  const [s, e] = lines[4].split(' ').map(Number);
  return { wall: e - s, cpu: children(lines[3]) - children(lines[1]) };
}

/** Part C: real pulls with each client (see the header). */
async function partRpull(work: string, lines: string[], td: Teardown): Promise<void> {
  const layout = await buildLayout('small');
  const port = await freePort();
  const reg = `127.0.0.1:${port}`;
  fs.writeFileSync(path.join(work, 'registry.yml'), `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${work}/registry\n  delete:\n    enabled: true\nhttp:\n  addr: ${reg}\n`);
  const registry = spawn('/usr/bin/docker-registry', ['serve', path.join(work, 'registry.yml')], { stdio: 'ignore' });
  td.add('docker-registry', () => stopProcess(registry));
  await waitFor('docker-registry', () => fetch(`http://${reg}/v2/`).then((r) => r.ok, () => false), 30_000);
  const ref = `${reg}/bench/small:nydus`;
  execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout.dir}:latest`, `docker://${reg}/bench/small:oci`], { stdio: 'ignore', timeout: 30 * 60_000 });
  execFileSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'nydusify.js'), 'convert', '--source', `${reg}/bench/small:oci`, '--target', ref, '--plain-http'], { stdio: 'ignore', timeout: 30 * 60_000 });
  const sock = path.join(work, 'nydus.sock');
  const root = path.join(work, 'root');
  fs.writeFileSync(path.join(work, 'snapshotter.toml'), `version = 1\nroot = "${root}"\naddress = "${sock}"\ndaemon_mode = "shared"\n[daemon]\nnydusd_config = "${path.join(ROOT, 'config', 'nydusd.json')}"\n`);
  const log = fs.openSync(path.join(work, 'snapshotter.log'), 'a');
  const sn = spawn(process.execPath, [path.join(ROOT, 'dist', 'cli', 'containerd-nydus-grpc.js'), '--config', path.join(work, 'snapshotter.toml')], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  td.add('snapshotter and its nydusd', async () => {
    await stopProcess(sn);
    killPids(recordedDaemons(root).map((r) => r.pid));
    unmountBelow(root);
  });
  await waitFor('containerd-nydus-grpc', () => fs.existsSync(sock), 30_000);
  const ctd = await startContainerd({ snapshotterSocket: sock, dir: path.join(work, 'ctd') });
  td.add('containerd', () => ctd.stop());
  const clients: { name: string; argv: string[]; env: Record<string, string> }[] = [
    { name: 'this build', argv: [process.execPath, path.join(ROOT, 'dist', 'cli', 'ctr-remote.js')], env: {} },
    ...(BEFORE ? [{ name: `before: ${BEFORE}`, argv: [process.execPath, path.join(path.resolve(BEFORE), 'dist', 'cli', 'ctr-remote.js')], env: {} }] : []),
    { name: "Debian's Go ctr-remote", argv: ['/usr/bin/ctr-remote'], env: {} },
  ];
  const runs = clients.map((c) => ({ ...c, wall: [] as number[], cpu: [] as number[] }));
  const pull = (c: (typeof clients)[number]): { wall: number; cpu: number } => {
    const t = timedRun([...c.argv, '-a', ctd.address, '-n', ctd.namespace, 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], { ...process.env, ...c.env });
    execFileSync('ctr', ['-a', ctd.address, '-n', ctd.namespace, 'images', 'rm', '--sync', ref], { stdio: 'ignore', timeout: 60_000 });
    return t;
  };
  pull(clients[0]); // the first pull after containerd started is not one of the rounds
  const rounds = ROUNDS * 2;
  for (let i = 0; i < rounds; i++) {
    for (const c of i % 2 ? [...runs].reverse() : runs) {
      const t = pull(c);
      c.wall.push(t.wall);
      c.cpu.push(t.cpu);
    }
  }
  const ours = runs[0];
  const go = runs[runs.length - 1];
  const before = BEFORE ? runs[1] : undefined;
  lines.push(
    '',
    '### ctr-remote images rpull: a real pull',
    '',
    `The cold-start benchmark's small image (nydusify-converted; bootstrap layer ${bootstrapSize(ctd.address, ref, clients[0])}) from docker-registry on 127.0.0.1 into a private containerd 1.6 with containerd-nydus-grpc, the whole \`ctr-remote images rpull --plain-http --snapshotter nydus\` command: wall time and CPU time (user + system of all its threads). Median of ${rounds} pulls per client, interleaved; after each pull \`ctr images rm --sync\` empties containerd again; one pull before the rounds is not counted.`,
    '',
    '| client | wall | CPU |',
    '|---|---:|---:|',
    ...runs.map((c) => `| ${c.name} | ${ms(median(c.wall))} | ${ms(median(c.cpu))} |`),
    '',
    `This build / Go client: wall **${(median(ours.wall) / median(go.wall)).toFixed(2)}x**, our time above Go's ${ms(median(ours.wall) - median(go.wall))}; CPU ${(median(ours.cpu) / median(go.cpu)).toFixed(2)}x.`,
    ...(before ? [`This build / before: wall **${(median(ours.wall) / median(before.wall)).toFixed(2)}x** (${ms(median(before.wall) - median(ours.wall))} less), CPU **${(median(ours.cpu) / median(before.cpu)).toFixed(2)}x**; before / Go client: ${(median(before.wall) / median(go.wall)).toFixed(2)}x, its time above Go's ${ms(median(before.wall) - median(go.wall))}.`] : []),
    '',
    `Pulls (ms): ${runs.map((c) => `${c.name}: wall ${roundsMs(c.wall)}; CPU ${roundsMs(c.cpu)}`).join('; ')}.`,
  );
}

/** The size of the image's nydus bootstrap layer, from one pull's output. */
function bootstrapSize(address: string, ref: string, c: { argv: string[]; env: Record<string, string> }): string {
  const out = execFileSync(c.argv[0], [...c.argv.slice(1), '-a', address, '-n', 'bench-size', 'images', 'rpull', '--plain-http', '--snapshotter', 'nydus', ref], { env: { ...process.env, ...c.env }, encoding: 'utf8', timeout: 120_000 });
  execFileSync('ctr', ['-a', address, '-n', 'bench-size', 'images', 'rm', '--sync', ref], { stdio: 'ignore', timeout: 60_000 });
  const m = /done \((\d+) bytes\)/.exec(out);
  return m ? `${(Number(m[1]) / 1e6).toFixed(1)} MB` : 'size unknown';
}

async function main(): Promise<void> {
  execFileSync('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian'], { stdio: 'inherit' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-startup-'));
  const load = os.loadavg();
  try {
    const lines = ['## Start-up costs: nydusd mount, ctr-remote', ''];
    if (PARTS.includes('A')) await partMount(work, lines);
    if (PARTS.includes('B')) partCtrRemote(work, lines);
    if (PARTS.includes('C')) {
      const td = new Teardown((m) => process.stderr.write(`startup: ${m}\n`));
      td.onSignals();
      try {
        await partRpull(work, lines, td);
      } finally {
        await td.run();
      }
    }
    const end = os.loadavg();
    lines.push('', `Load average (1 min) at the start and the end: ${load[0].toFixed(1)}, ${end[0].toFixed(1)} (2 cores; other sessions' tests were running).`);
    fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, 'bench-out', 'startup.md'), lines.join('\n') + '\n');
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (require.main === module) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
