/**
 * Benchmark of issue 4 (acceptance 7) and issue 14 (acceptance 5): reading through nydusd on its own
 * FUSE session; also reports the sizes of the READ requests that reach nydusd and page-cache folio sizes.
 *   A. sequential read of a 256 MiB file with `cat`:
 *      cold  fresh daemon, empty blob cache, localfs backend; the page cache is dropped
 *            (`echo 1 > /proc/sys/vm/drop_caches`, root) right before the read, so the blob comes
 *            from disk; the residency of the blob is checked with fincore and reported
 *      warm  the same file again: the first re-read, then the median of the next passes (the
 *            kernel keeps the pages: kernel_cache); the daemon's read count shows none reached it
 *      cache a restarted daemon with the blob cache full, page cache dropped (the daemon's own warm path)
 *      baseline: `cat` of the same file on the host, cold (page cache dropped) and warm
 *      floor: the same passes over a do-nothing filesystem on nydusd's FUSE session (support/fuse-floor.ts)
 *   B. `find` + stat of every entry of the Debian tree: nydusd mount vs an overlayfs over a copy
 *      (first walk and second walk)
 *   C. daemon RSS with 1 and with 10 Debian images mounted (each walked once)
 * Targets: warm within 1.2x of native, cold at least 40 % of native throughput, RSS <= 150 MB with 10.
 * Writes bench-out/read.md.
 */
import { execFileSync, spawn, ChildProcess } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { NydusdClient } from '../src/daemon/client';
import { median, timed } from './measure';
import { cat, coldThenWarm, dropCaches, readSeries, STEADY_PASSES } from './support/read-passes';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const NYDUS_IMAGE = path.join(ROOT, 'dist', 'cli', 'nydus-image.js');
/** The launcher users and the snapshotter run (it sets the daemon's malloc tuning). */
const NYDUSD = path.join(ROOT, 'bin', 'nydusd');
const FLOOR = path.join(ROOT, 'dist-bench', 'bench', 'support', 'fuse-floor.js');
const FILE_MIB = Number(process.env.BENCH_READ_MIB ?? 256);
const ROUNDS = 3;
/** Parts to run (comma-separated): read, find, rss. All by default. */
const PARTS = new Set((process.env.BENCH_READ_PARTS ?? 'read,find,rss').split(','));



export function findStat(dir: string): number {
  return timed(() => execFileSync('sh', ['-c', 'find "$1" -printf "%i %s %m %u %g %T@ %l\\n" > /dev/null', 'sh', dir], { stdio: 'inherit' }));
}

export function unmount(dir: string): void {
  for (const [c, a] of [['fusermount', ['-uz', dir]], ['umount', ['-l', dir]]] as const) {
    try {
      execFileSync(c, [...a], { stdio: 'ignore' });
    } catch {
      /* not mounted */
    }
  }
}

export interface Daemon {
  proc: ChildProcess;
  client: NydusdClient;
}

export async function startDaemon(work: string, name: string, args: string[], nydusd = NYDUSD): Promise<Daemon> {
  const sock = path.join(work, `${name}.sock`);
  const log = fs.openSync(path.join(work, `${name}.log`), 'a');
  const proc = spawn(nydusd, ['--apisock', sock, '--log-level', 'warn', ...args], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  // Generous: mounting a Debian image on a loaded 2-core machine can take seconds.
  const client = new NydusdClient(sock, 60_000);
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) break;
    try {
      if ((await client.daemonInfo()).state === 'RUNNING') return { proc, client };
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill('SIGKILL');
  throw new Error(`nydusd ${name} did not start; see ${path.join(work, `${name}.log`)}`);
}

export async function stopDaemon(d: Daemon): Promise<void> {
  const gone = new Promise((r) => d.proc.once('exit', r));
  d.proc.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 20_000))]);
  if (d.proc.exitCode === null) d.proc.kill('SIGKILL');
}

export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

export function localfsConfig(blobs: string, cache: string): object {
  return { device: { backend: { type: 'localfs', config: { dir: blobs } }, cache: { type: 'blobcache', config: { work_dir: cache } } }, mode: 'direct' };
}

/** Half random, half repetitive: zstd has something to do, as with real binaries. */
export function writeDataFile(file: string, mib: number): void {
  const fd = fs.openSync(file, 'w');
  const text = Buffer.alloc(32768, 'nydus lazy image service benchmark line of text\n');
  for (let i = 0; i < mib * 16; i++) {
    fs.writeSync(fd, crypto.randomBytes(32768));
    fs.writeSync(fd, text);
  }
  fs.closeSync(fd);
}

/** A `mib` MiB data file under `<work>/data`, built by our nydus-image into `<work>/big.boot` and one blob in `<work>/blobs`. */
export function bigFileImage(work: string, mib: number): { bigFile: string; boot: string; blobs: string; blob: string } {
  const dataDir = path.join(work, 'data');
  fs.mkdirSync(dataDir);
  const bigFile = path.join(dataDir, 'big.bin');
  writeDataFile(bigFile, mib);
  const blobs = path.join(work, 'blobs');
  const boot = path.join(work, 'big.boot');
  execFileSync('node', [NYDUS_IMAGE, 'create', '-B', boot, '-D', blobs, dataDir], { stdio: 'ignore' });
  return { bigFile, boot, blobs, blob: path.join(blobs, fs.readdirSync(blobs)[0]) };
}

const f2 = (x: number) => x.toFixed(2);
const f3 = (x: number) => x.toFixed(3);

async function main(): Promise<void> {
  execFileSync('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian'], { stdio: 'inherit' });
  const debian = path.join(FIXTURES, 'debian-rootfs');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-read-'));
  const mounts: string[] = [];
  const daemons: Daemon[] = [];
  const lines: string[] = [];
  try {
    if (PARTS.has('read')) await partRead(work, mounts, lines);
    const dblobs = path.join(work, 'dblobs');
    const dboot = path.join(work, 'debian.boot');
    execFileSync('node', [NYDUS_IMAGE, 'create', '-B', dboot, '-D', dblobs, debian], { stdio: 'ignore' });
    const dcfg = path.join(work, 'debian.json');
    fs.writeFileSync(dcfg, JSON.stringify(localfsConfig(dblobs, path.join(work, 'cache-debian'))));
    const entries = Number(execFileSync('sh', ['-c', `find "${debian}" | wc -l`]).toString().trim());
    if (PARTS.has('find')) await partFind(work, mounts, lines, debian, dboot, dcfg, entries);
    if (PARTS.has('rss')) await partRss(work, mounts, daemons, lines, dboot, dcfg, entries);
  } finally {
    for (const d of daemons) d.proc.kill('SIGKILL');
    for (const m of mounts) unmount(m);
    fs.rmSync(work, { recursive: true, force: true });
  }
  const md = lines.join('\n') + '\n';
  fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench-out', 'read.md'), md);
  process.stdout.write(md);
}

async function daemonReads(d: Daemon): Promise<number> {
  return (await d.client.call<{ read_count: number }>('GET', '/api/v1/metrics')).read_count;
}

/** How long after a walk the RSS is read again (the daemon collects garbage after 0.5-1 s of quiet). */
const QUIET_MS = 1500;

/**
 * Average page-cache folio size of a warm file, in 4 KiB pages (scripts/folio-sizes.py, reading
 * /proc/kpageflags); undefined when python3 is missing or the kernel hides the flags.
 */
function folioPages(file: string): number | undefined {
  try {
    const out = execFileSync('python3', [path.join(ROOT, 'scripts', 'folio-sizes.py'), file], { stdio: ['ignore', 'pipe', 'ignore'] });
    return (JSON.parse(out.toString()) as { avg_pages_per_folio: number }).avg_pages_per_folio;
  } catch {
    return undefined;
  }
}

/** Starts the transport-floor filesystem (support/fuse-floor.js) serving `source` at `mnt`; `extra`: its further arguments. */
export async function startFloor(source: string, mnt: string, extra: string[] = []): Promise<ChildProcess> {
  // The pool sized as bin/_run sizes it for nydusd, so both read /dev/fuse the same way.
  const proc = spawn('node', [FLOOR, source, mnt, ...extra], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' } });
  const up = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), 30_000);
    proc.stdout!.on('data', (d: Buffer) => d.toString().includes('mounted') && (clearTimeout(timer), resolve(true)));
    proc.once('exit', () => (clearTimeout(timer), resolve(false)));
  });
  if (!up) {
    proc.kill('SIGKILL');
    throw new Error(`fuse-floor did not mount ${mnt}`);
  }
  return proc;
}

export async function stopFloor(proc: ChildProcess): Promise<void> {
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 10_000))]);
  if (proc.exitCode === null) proc.kill('SIGKILL');
}

/**
 * A. Sequential read of one big file: cold, warm (page cache), restarted (blob cache), each next to
 * native `cat` and to the FUSE transport floor, all in the same rounds.
 */
async function partRead(work: string, mounts: string[], lines: string[]): Promise<void> {
  const { bigFile, blobs, blob } = bigFileImage(work, FILE_MIB);
  fs.writeFileSync(path.join(work, 'big.json'), JSON.stringify(localfsConfig(blobs, path.join(work, 'cache-big'))));
  const native = readSeries();
  const fl = readSeries();
  const ny = { ...readSeries(), restarted: [] as number[] };
  /** Page-cache bytes of the file about to be read cold, per cold read (all should be 0). */
  const residentAtCold: number[] = [];
  const warmDaemonReads: number[] = [];
  /** READ request sizes (bytes -> count) that reached nydusd during the cold reads, all rounds. */
  const coldSizes: Record<string, number> = {};
  /** Folio sizes of the warm file (last round): native, floor, nydusd. */
  const folios: Record<string, number | undefined> = {};
  const last = (r: number) => r === ROUNDS - 1;
  const mnt = path.join(work, 'mnt-big');
  const floorMnt = path.join(work, 'mnt-floor');
  const args = ['--config', path.join(work, 'big.json'), '--bootstrap', path.join(work, 'big.boot'), '--mountpoint', mnt];
  mounts.push(mnt, floorMnt);
  for (let r = 0; r < ROUNDS; r++) {
    await coldThenWarm(bigFile, native, { resident: { file: bigFile, into: residentAtCold } });
    if (last(r)) folios.native = folioPages(bigFile);

    const floor = await startFloor(bigFile, floorMnt);
    await coldThenWarm(path.join(floorMnt, 'data'), fl);
    if (last(r)) folios.floor = folioPages(path.join(floorMnt, 'data'));
    await stopFloor(floor);

    fs.rmSync(path.join(work, 'cache-big'), { recursive: true, force: true });
    let d = await startDaemon(work, `big${r}`, args);
    let before = 0;
    await coldThenWarm(path.join(mnt, 'big.bin'), ny, {
      resident: { file: blob, into: residentAtCold },
      between: async () => {
        const sizes = (await d.client.call<{ fuse_read_sizes: Record<string, number> }>('GET', '/api/v1/metrics')).fuse_read_sizes;
        for (const [k, v] of Object.entries(sizes)) coldSizes[k] = (coldSizes[k] ?? 0) + v;
        before = await daemonReads(d);
      },
    });
    warmDaemonReads.push((await daemonReads(d)) - before);
    if (last(r)) folios.nydusd = folioPages(path.join(mnt, 'big.bin'));
    await stopDaemon(d);
    d = await startDaemon(work, `big${r}b`, args);
    dropCaches();
    ny.restarted.push(cat(path.join(mnt, 'big.bin')));
    await stopDaemon(d);
  }
  const mib = FILE_MIB;
  const nc = median(native.cold);
  const n1 = median(native.first);
  const ns = median(native.steady);
  const fc = median(fl.cold);
  const f1 = median(fl.first);
  const fs_ = median(fl.steady);
  const c = median(ny.cold);
  const w1 = median(ny.first);
  const ws = median(ny.steady);
  const cr = median(ny.restarted);
  const pct = (x: number) => `${f2((100 * nc) / x)} %`;
  lines.push('## nydusd read path (issues 4 and 14)', '');
  lines.push(
    "Transport: nydusd's own FUSE session over /dev/fuse (src/fuse/, 1 MiB READs, readers in libuv's pool). Figures published before issue 14 were measured on fuse-native (libfuse 2, READs of at most 128 KiB), which is gone; they are not comparable and are not repeated here: every ratio below is against native `cat` and the FUSE floor of this same run.",
    '',
  );
  lines.push(
    `Sequential \`cat\` of a ${mib} MiB file (half random, half text; zstd, 1 MiB chunks), median of ${ROUNDS} rounds; in each round native, floor and nydusd are measured one after the other. ` +
      `"Cold": the whole page cache is dropped (\`sync; echo 1 > /proc/sys/vm/drop_caches\`) right before the read; nydusd also starts with an empty blob cache, so it reads the localfs blob from disk, decompresses, verifies sha256 and writes its cache. ` +
      `Page-cache bytes of the host file / the blob at the start of each cold read (fincore): ${residentAtCold.join(', ')}. ` +
      `"Warm, first re-read": the file read again right after the cold read; "warm, steady": the median of the ${STEADY_PASSES} re-reads after that (kernel page cache, \`kernel_cache\`). FUSE read requests that reached nydusd during each round's warm passes: ${warmDaemonReads.join(', ')}. ` +
      `"Floor": a filesystem on nydusd's own FUSE session (src/fuse/) that holds the file in memory and answers each read with a slice of it and nothing else (bench/support/fuse-floor.ts), mounted with the same options: the cost of the kernel's FUSE path and the session's hand-off, which nydusd cannot go below.`,
    '',
  );
  lines.push('| case | native `cat` (s) | floor (s) | nydusd (s) | floor vs native | nydusd vs native |', '|---|---:|---:|---:|---:|---:|');
  lines.push(`| cold | ${f3(nc)} | ${f3(fc)} | ${f3(c)} | ${pct(fc)} of native throughput | **${pct(c)}** of native throughput |`);
  lines.push(`| warm, first re-read | ${f3(n1)} | ${f3(f1)} | ${f3(w1)} | ${f2(f1 / n1)}x native time | **${f2(w1 / n1)}x** native time |`);
  lines.push(`| warm, steady | ${f3(ns)} | ${f3(fs_)} | ${f3(ws)} | ${f2(fs_ / ns)}x native time | **${f2(ws / ns)}x** native time |`);
  lines.push(`| nydusd restarted, blob cache full, page cache dropped | ${f3(nc)} | | ${f3(cr)} | | ${pct(cr)} of native throughput |`);
  lines.push('');
  lines.push(
    `Targets: warm within 1.2x of native: first re-read ${w1 / n1 <= 1.2 ? 'met' : 'NOT met'} (${f2(w1 / n1)}x; the floor: ${f2(f1 / n1)}x), steady ${ws / ns <= 1.2 ? 'met' : 'NOT met'} (${f2(ws / ns)}x; the floor: ${f2(fs_ / ns)}x); ` +
      `cold at least 40 % of native throughput: ${nc / c >= 0.4 ? 'met' : 'NOT met'} (${pct(c)}; the floor: ${pct(fc)}). Throughput ${f2(mib / c)} MiB/s cold, ${f2(mib / ws)} MiB/s warm.`,
    '',
  );
  const bySize = Object.entries(coldSizes).sort((a, b) => b[1] - a[1]);
  const totalReqs = bySize.reduce((a, [, n]) => a + n, 0);
  lines.push(
    `READ requests that reached nydusd during the ${ROUNDS} cold reads (the kernel's request sizes, GET /api/v1/metrics \`fuse_read_sizes\`): ${totalReqs} requests; ` +
      bySize.map(([size, n]) => `${n} of ${Number(size) % 1024 === 0 ? `${Number(size) / 1024} KiB` : `${size} B`}`).join(', ') +
      '.',
    '',
  );
  if (folios.native !== undefined) {
    lines.push(
      `Page-cache folio size of the warm file, in 4 KiB pages on average (scripts/folio-sizes.py, /proc/kpageflags): native ${folios.native}, floor ${folios.floor ?? '?'}, nydusd ${folios.nydusd ?? '?'}. ` +
        'The kernel caches a FUSE file in single pages where ext4 uses large folios, so the first re-read after a cold read (which activates every folio on the LRU) and every later pass walk many more folios: that is the warm gap, for any FUSE filesystem.',
      '',
    );
  }
  const list = (xs: number[]) => xs.map(f2).join(', ');
  lines.push(
    `Rounds (s): native cold ${list(native.cold)}, first re-read ${list(native.first)}, steady ${list(native.steady)}; floor cold ${list(fl.cold)}, first ${list(fl.first)}, steady ${list(fl.steady)}; ` +
      `nydusd cold ${list(ny.cold)}, first ${list(ny.first)}, steady ${list(ny.steady)}, restarted ${list(ny.restarted)}.`,
    '',
  );
}

/** B. find + stat over the Debian tree: nydusd vs overlayfs. */
async function partFind(work: string, mounts: string[], lines: string[], debian: string, dboot: string, dcfg: string, entries: number): Promise<void> {
  const ovl = path.join(work, 'ovl');
  for (const d of ['upper', 'work', 'merged']) fs.mkdirSync(path.join(ovl, d), { recursive: true });
  const lower = path.join(ovl, 'lower');
  execFileSync('cp', ['-a', debian, lower]);
  const findN: number[][] = [];
  const findO: number[][] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const m = path.join(work, 'mnt-debian');
    mounts.push(m);
    const d = await startDaemon(work, `find${r}`, ['--config', dcfg, '--bootstrap', dboot, '--mountpoint', m]);
    findN.push([findStat(m), findStat(m)]);
    await stopDaemon(d);
    const merged = path.join(ovl, 'merged');
    mounts.push(merged);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${path.join(ovl, 'upper')},workdir=${path.join(ovl, 'work')}`, merged]);
    findO.push([findStat(merged), findStat(merged)]);
    unmount(merged);
  }
  const fn1 = median(findN.map((x) => x[0]));
  const fn2 = median(findN.map((x) => x[1]));
  const fo1 = median(findO.map((x) => x[0]));
  const fo2 = median(findO.map((x) => x[1]));
  lines.push(`\`find\` + stat of every entry of the Debian tree (${entries} entries), fresh mount each round, median of ${ROUNDS}:`, '');
  lines.push('| walk | nydusd (s) | overlayfs (s) | nydusd / overlayfs |', '|---|---|---|---|');
  lines.push(`| first walk after mount | ${f2(fn1)} | ${f2(fo1)} | ${f2(fn1 / fo1)}x |`);
  lines.push(`| second walk (kernel caches entries and attributes) | ${f2(fn2)} | ${f2(fo2)} | ${f2(fn2 / fo2)}x |`, '');

}

/** C. RSS of one shared daemon with 1 and with 10 Debian images mounted. */
async function partRss(work: string, mounts: string[], daemons: Daemon[], lines: string[], dboot: string, dcfg: string, entries: number): Promise<void> {
  const shared = await startDaemon(work, 'rss', []);
  daemons.push(shared);
  const cfgObj = JSON.parse(fs.readFileSync(dcfg, 'utf8'));
  const base = rssMiB(shared.proc.pid!);
  /** Per measured count of images: RSS right after the walk, and 1.5 s later. */
  const rss: { images: number; now: number; quiet: number }[] = [];
  for (let i = 0; i < 10; i++) {
    const m = path.join(work, `rss-${i}`);
    mounts.push(m);
    await shared.client.mount(m, dboot, cfgObj);
    findStat(m);
    execFileSync('sh', ['-c', `cat "${m}/usr/bin/perl" "${m}/etc/os-release" > /dev/null`]);
    if (i === 0 || i === 9) {
      const now = rssMiB(shared.proc.pid!);
      // nydusd collects a burst's garbage after 0.5-1 s without FUSE requests (src/daemon/idle-gc.ts).
      await new Promise((r) => setTimeout(r, QUIET_MS));
      rss.push({ images: i + 1, now, quiet: rssMiB(shared.proc.pid!) });
    }
  }
  // The same daemon after 10 s without requests.
  await new Promise((r) => setTimeout(r, 10_000));
  const settled = rssMiB(shared.proc.pid!);
  const ten = rss[1];
  lines.push(
    `Resident memory of one shared daemon (Debian image: ${entries} entries, each mount walked with find + stat and two files read), right after the last walk and ${QUIET_MS / 1000} s later, when the daemon has collected the walk's garbage (it does so after 0.5-1 s without FUSE requests):`,
    '',
  );
  lines.push(`| images mounted | RSS right after (MiB) | RSS ${QUIET_MS / 1000} s later (MiB) |`, '|---|---|---|');
  lines.push(`| 0 | ${f2(base)} | |`);
  for (const r of rss) lines.push(`| ${r.images} | ${f2(r.now)} | ${f2(r.quiet)} |`);
  lines.push(`| 10, after 10 s idle | | ${f2(settled)} |`, '');
  const mb = (mib: number) => mib * 1.048576;
  lines.push(
    `Target: RSS at most 150 MB with 10 images: ${mb(ten.quiet) <= 150 ? 'met' : 'NOT met'} (${f2(mb(ten.quiet))} MB ${QUIET_MS / 1000} s after the walks; ${f2(mb(ten.now))} MB right after them, garbage included; ${f2(mb(settled))} MB after 10 s idle).`,
    '',
  );
  await stopDaemon(shared);
  daemons.length = 0;
}

// Run as a program; bench/erofs.ts imports the helpers above.
if (require.main === module) {
  main().catch((e) => {
    process.stderr.write(`bench read: error: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
