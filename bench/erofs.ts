/**
 * Benchmark of issue 16 (acceptance 4): nydusd's kernel EROFS mode beside its FUSE mode and the
 * native baselines, all in the same run.
 *   A. `find` + stat of every entry of the Debian tree, first and second walk after a fresh mount:
 *      erofs mode, FUSE mode, overlayfs over a copy of the tree
 *   B. sequential `cat` of a 256 MiB file: cold (page cache dropped, empty blob cache, localfs blob
 *      on disk) and warm (first re-read, then the median of the next passes): erofs mode, FUSE mode,
 *      native file, and erofs mode's floor: the same EROFS mount over a do-nothing blob view holding
 *      the blob's uncompressed bytes in memory (support/fuse-floor.ts --blob-view); every cold read
 *      twice per round, with free memory settled and warm (support/free-memory.ts says why)
 *   C. cold start of the Debian/python image through containerd over a rate-limited link
 *      (bench/coldstart.ts): OCI + overlayfs, nydus FUSE mode, nydus erofs mode
 * Targets: first walk within 1.5x of overlayfs; cold read at least 50 % of native throughput; warm
 * re-read within 1.1x of native; cold start no slower than FUSE mode. Writes bench-out/erofs.md.
 *   BENCH_EROFS_PARTS=find,read,coldstart (default all), BENCH_READ_MIB (default 256),
 *   BENCH_EROFS_COLD_ROUNDS (default 1), BENCH_RATE_MBIT (bench/coldstart.ts, default 200)
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { median } from './measure';
import { bigFileImage, Daemon, findStat, localfsConfig, startDaemon, startFloor, stopDaemon, stopFloor, unmount } from './read';
import { mountErofs } from '../src/daemon/erofs-mount';
import { coldThenWarm, readSeries, ReadSeries } from './support/read-passes';
import { buildLayout, coldStart, measured, REG, Result, startLink } from './coldstart';
import { Teardown } from './support/teardown';
import { freshPageCost, reportedBlockKiB, settleFreeMemory, warmFreeMemory } from './support/free-memory';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const NYDUS_IMAGE = path.join(ROOT, 'dist', 'cli', 'nydus-image.js');
const FILE_MIB = Number(process.env.BENCH_READ_MIB ?? 256);
const ROUNDS = 3;
/** Cold starts per mode (each is a fresh containerd, snapshotter and blob cache; one, like bench/coldstart.ts). */
const COLD_ROUNDS = Number(process.env.BENCH_EROFS_COLD_ROUNDS ?? 1);
const PARTS = new Set((process.env.BENCH_EROFS_PARTS ?? 'find,read,coldstart').split(','));

type Mode = 'erofs' | 'fuse';
const f2 = (x: number) => x.toFixed(2);
/**
 * Lets the event loop see the daemon's API close an idle keep-alive connection (after a long
 * synchronous `cat`), so the next request opens a new one instead of writing into a closed socket.
 */
const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));
const f3 = (x: number) => x.toFixed(3);
const list = (xs: number[]) => xs.map(f2).join(', ');

/** CPU time of a process so far (user + system, every thread), seconds (/proc/PID/stat). */
function cpuSeconds(pid: number): number {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name, in clock ticks.
  return (Number(rest[11]) + Number(rest[12])) / CLK_TCK;
}
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** Dirty page-cache MiB machine-wide (/proc/meminfo). */
function dirtyMiB(): number {
  const m = /^Dirty:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** The localfs config of one image, in FUSE mode or kernel EROFS mode (cache type "erofs"). */
function configFile(work: string, name: string, blobs: string, cache: string, mode: Mode): string {
  const cfg = localfsConfig(blobs, cache) as { device: { cache: { type: string } } };
  if (mode === 'erofs') cfg.device.cache.type = 'erofs';
  const file = path.join(work, `${name}-${mode}.json`);
  fs.writeFileSync(file, JSON.stringify(cfg));
  return file;
}

/** Starts nydusd with one image at `mnt`; in erofs mode checks the kernel really mounted it. */
async function mountImage(work: string, name: string, cfg: string, boot: string, mnt: string, mode: Mode): Promise<Daemon> {
  const d = await startDaemon(work, name, ['--config', cfg, '--bootstrap', boot, '--mountpoint', mnt]);
  const driver = Object.values((await d.client.daemonInfo()).backend_collection)[0]?.fs_driver;
  if (driver !== (mode === 'erofs' ? 'erofs' : 'fusedev')) {
    await stopDaemon(d);
    throw new Error(`${name}: expected fs_driver ${mode}, the daemon reports ${driver}; see ${path.join(work, `${name}.log`)}`);
  }
  return d;
}

async function partFind(work: string, mounts: string[], lines: string[]): Promise<void> {
  const debian = path.join(FIXTURES, 'debian-rootfs');
  const entries = Number(execFileSync('sh', ['-c', `find "${debian}" | wc -l`]).toString().trim());
  const blobs = path.join(work, 'dblobs');
  const boot = path.join(work, 'debian.boot');
  execFileSync('node', [NYDUS_IMAGE, 'create', '-B', boot, '-D', blobs, debian], { stdio: 'ignore' });
  const ovl = path.join(work, 'ovl');
  for (const d of ['upper', 'work', 'merged']) fs.mkdirSync(path.join(ovl, d), { recursive: true });
  const lower = path.join(ovl, 'lower');
  execFileSync('cp', ['-a', debian, lower]);
  const walks: Record<Mode | 'overlayfs', number[][]> = { erofs: [], fuse: [], overlayfs: [] };
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of ['erofs', 'fuse'] as const) {
      const m = path.join(work, `mnt-debian-${mode}`);
      mounts.push(m);
      const d = await mountImage(work, `find-${mode}-${r}`, configFile(work, `debian-${r}`, blobs, path.join(work, `cache-debian-${mode}-${r}`), mode), boot, m, mode);
      walks[mode].push([findStat(m), findStat(m)]);
      await settle();
      await stopDaemon(d);
    }
    const merged = path.join(ovl, 'merged');
    mounts.push(merged);
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${path.join(ovl, 'upper')},workdir=${path.join(ovl, 'work')}`, merged]);
    walks.overlayfs.push([findStat(merged), findStat(merged)]);
    unmount(merged);
  }
  const med = (k: keyof typeof walks, i: number) => median(walks[k].map((x) => x[i]));
  lines.push(`### find + stat walks`, '');
  lines.push(`\`find\` printing inode, size, mode, owner, mtime and link target of every entry of the Debian tree (${entries} entries); a fresh mount (new daemon, empty blob cache) each round, median of ${ROUNDS}:`, '');
  lines.push('| walk | erofs mode (s) | FUSE mode (s) | overlayfs (s) | erofs / overlayfs | FUSE / overlayfs |', '|---|---:|---:|---:|---:|---:|');
  for (const [i, name] of [[0, 'first walk after mount'], [1, 'second walk']] as const) {
    const e = med('erofs', i);
    const fu = med('fuse', i);
    const o = med('overlayfs', i);
    lines.push(`| ${name} | ${f3(e)} | ${f3(fu)} | ${f3(o)} | **${f2(e / o)}x** | ${f2(fu / o)}x |`);
  }
  const first = med('erofs', 0) / med('overlayfs', 0);
  lines.push('', `Target: first walk within 1.5x of overlayfs: ${first <= 1.5 ? 'met' : 'NOT met'} (${f2(first)}x).`, '');
}

/**
 * Free memory's state before each cold read (support/free-memory.ts): "settled", as on a node whose
 * memory has been idle (on this kind of VM the host has taken it back), and "warm", pages the host
 * still backs (as on bare metal). Without free page reporting the two are the same: one is run.
 */
type MemState = 'settled' | 'warm';
const WARM_MIB = 1024;
const STATE_TEXT: Record<MemState, string> = {
  settled: 'free memory settled (the host has taken back what the guest freed, as on a node whose memory has been idle)',
  warm: `free memory warm (${WARM_MIB} MiB of 2 MiB pages written and freed right before the read, so allocations find pages the host still backs, as on bare metal)`,
};

interface StateSeries {
  native: ReadSeries;
  floor: ReadSeries;
  ny: Record<Mode, ReadSeries>;
  /** CPU seconds (user + system, all threads) the daemon spent on each cold read. */
  cpu: Record<Mode, number[]>;
  /** Milliseconds the daemon spent decompressing and verifying chunks during each cold read (its backend metrics). */
  compute: Record<Mode, number[]>;
}

async function partRead(work: string, mounts: string[], lines: string[]): Promise<void> {
  const { bigFile, boot, blobs, blob } = bigFileImage(work, FILE_MIB);
  const states: MemState[] = reportedBlockKiB() === undefined ? ['settled'] : ['settled', 'warm'];
  const series = {} as Record<MemState, StateSeries>;
  for (const st of states) {
    series[st] = { native: readSeries(), floor: readSeries(), ny: { erofs: readSeries(), fuse: readSeries() }, cpu: { erofs: [], fuse: [] }, compute: { erofs: [], fuse: [] } };
  }
  /** The blob's uncompressed address space (the erofs-mode blob cache after the first cold read), for the floor. */
  const flat = path.join(work, 'big-uncompressed.blob');
  const blobId = path.basename(blob);
  const residentAtCold: number[] = [];
  /** Blob bytes the erofs-mode daemon served during the warm passes (should be 0: the kernel's page cache answers). */
  const warmViewBytes: number[] = [];
  /** Dirty page-cache MiB right after each erofs-mode cold read (the blob cache not yet written back). */
  const dirtyAfterCold: number[] = [];
  const compute = async (d: Daemon): Promise<number> => {
    const m = await d.client.call<{ decompress_millis_total: number; verify_millis_total: number }>('GET', '/api/v1/metrics/backend');
    return m.decompress_millis_total + m.verify_millis_total;
  };
  for (let r = 0; r < ROUNDS; r++) {
    for (const st of states) {
      const s = series[st];
      const prepare = async (): Promise<void> => (st === 'settled' ? settleFreeMemory() : warmFreeMemory(WARM_MIB));
      process.stderr.write(`erofs read: round ${r + 1}/${ROUNDS}, ${st} memory\n`);
      await coldThenWarm(bigFile, s.native, { prepare, resident: { file: bigFile, into: residentAtCold } });
      for (const mode of ['erofs', 'fuse'] as const) {
        const cache = path.join(work, `cache-big-${mode}`);
        fs.rmSync(cache, { recursive: true, force: true });
        const mnt = path.join(work, `mnt-big-${mode}`);
        mounts.push(mnt);
        const d = await mountImage(work, `big-${mode}-${st}-${r}`, configFile(work, 'big', blobs, cache, mode), boot, mnt, mode);
        let before = 0;
        let cpu0 = 0;
        let ms0 = 0;
        await coldThenWarm(path.join(mnt, 'big.bin'), s.ny[mode], {
          prepare: async () => {
            ms0 = await compute(d);
            await prepare();
            cpu0 = cpuSeconds(d.proc.pid!);
          },
          resident: { file: blob, into: residentAtCold },
          between: async () => {
            s.cpu[mode].push(cpuSeconds(d.proc.pid!) - cpu0);
            if (mode === 'erofs') dirtyAfterCold.push(dirtyMiB());
            await settle();
            s.compute[mode].push((await compute(d)) - ms0);
            before = (await d.client.daemonInfo()).blob_view?.read_bytes ?? 0;
          },
        });
        await settle();
        if (mode === 'erofs') warmViewBytes.push(((await d.client.daemonInfo()).blob_view?.read_bytes ?? 0) - before);
        await stopDaemon(d);
        if (mode === 'erofs' && !fs.existsSync(flat)) fs.copyFileSync(path.join(cache, `${blobId}.blob.data`), flat);
      }
      await readFloor(work, mounts, flat, blobId, boot, s.floor, prepare);
    }
  }
  const probe = states.includes('warm') ? await freshPageCost(FILE_MIB) : undefined;
  lines.push(`### Sequential read of a ${FILE_MIB} MiB file`, '');
  lines.push(
    `\`cat\` of a ${FILE_MIB} MiB file (half random, half text; zstd, 1 MiB chunks, localfs blob), median of ${ROUNDS} rounds; native, erofs mode, FUSE mode and the floor one after the other in each round. ` +
      `"Cold": page cache dropped right before the read and an empty blob cache, so the blob comes from disk and every chunk is decompressed and verified. Page-cache bytes of the file / blob at each cold start (fincore): ${residentAtCold.join(', ')}. ` +
      `"Warm": the first re-read after the cold read, then the median of the next passes. Blob-view bytes the erofs-mode daemon served during each round's warm passes: ${warmViewBytes.join(', ')}. ` +
      `Dirty page cache right after each erofs-mode cold read, MiB (/proc/meminfo; the blob cache the daemon wrote, still to be written back while the first re-read runs): ${dirtyAfterCold.map((x) => x.toFixed(0)).join(', ')}.`,
    '',
    `"Floor": erofs mode with nothing to do, the same EROFS mount (same bootstrap, read-ahead and FUSE settings) over a blob view that holds the blob's uncompressed bytes in memory and answers each READ with a slice of them (bench/support/fuse-floor.ts --blob-view): no fetch, decompression, digest or cache write. What it costs beyond native is the kernel's EROFS-over-FUSE path, which erofs mode cannot go below.`,
    '',
  );
  if (probe) {
    const blk = reportedBlockKiB()!;
    lines.push(
      `Free memory: this machine reports free ${blk >= 1024 ? `${blk / 1024} MiB` : `${blk} KiB`} blocks to its host (free page reporting), which takes back their backing about two seconds after they are freed. ` +
        `Writing ${FILE_MIB} MiB of fresh 2 MiB pages took ${f3(probe.settled)} s once memory had settled, ${f3(probe.reused)} s right after the same amount was freed, and ${f3(probe.warmWrite)} s for a second write (support/free-memory.ts). ` +
        'The kernel fills the EROFS page cache with 2 MiB folios (erofs mode and the floor) and the blob cache file\'s with large ones (both modes), so they pay that cost on a settled machine; FUSE mode\'s page cache takes 4 KiB pages, which come from smaller free blocks the host never took, and a native read\'s pages are filled by the host (DMA), which pays on its own side. Each cold read below is therefore measured in both states, every case alike.',
      '',
    );
  }
  const verdicts: string[] = [];
  for (const st of states) verdicts.push(stateTable(st, series[st], lines));
  // Re-reads allocate nothing, so free memory's state does not touch them: every round counts.
  const all = (pick: (s: StateSeries) => number[]) => median(states.flatMap((st) => pick(series[st])));
  const first = all((s) => s.ny.erofs.first) / all((s) => s.native.first);
  const steady = all((s) => s.ny.erofs.steady) / all((s) => s.native.steady);
  verdicts.push(`warm re-read within 1.1x of native (medians of all ${states.length * ROUNDS} rounds): ${first <= 1.1 ? 'met' : 'NOT met'} (first re-read ${f2(first)}x, steady ${f2(steady)}x)`);
  lines.push(`Targets: ${verdicts.join('; ')}.`, '');
}

/** One memory state's table, budget and rounds of the cold read, appended to `lines`; returns its verdict. */
function stateTable(st: MemState, s: StateSeries, lines: string[]): string {
  const nc = median(s.native.cold);
  const n1 = median(s.native.first);
  const ns = median(s.native.steady);
  const m = (mode: Mode, k: 'cold' | 'first' | 'steady') => median(s.ny[mode][k]);
  const fl = (k: 'cold' | 'first' | 'steady') => median(s.floor[k]);
  const pct = (x: number) => `${f2((100 * nc) / x)} %`;
  lines.push(`#### Cold read, ${STATE_TEXT[st]}`, '');
  lines.push('| case | native (s) | erofs mode (s) | FUSE mode (s) | floor (s) | erofs vs native | FUSE vs native | floor vs native |', '|---|---:|---:|---:|---:|---:|---:|---:|');
  lines.push(`| cold | ${f3(nc)} | ${f3(m('erofs', 'cold'))} | ${f3(m('fuse', 'cold'))} | ${f3(fl('cold'))} | **${pct(m('erofs', 'cold'))}** of native throughput | ${pct(m('fuse', 'cold'))} | ${pct(fl('cold'))} |`);
  lines.push(`| warm, first re-read | ${f3(n1)} | ${f3(m('erofs', 'first'))} | ${f3(m('fuse', 'first'))} | ${f3(fl('first'))} | **${f2(m('erofs', 'first') / n1)}x** native time | ${f2(m('fuse', 'first') / n1)}x | ${f2(fl('first') / n1)}x |`);
  lines.push(`| warm, steady | ${f3(ns)} | ${f3(m('erofs', 'steady'))} | ${f3(m('fuse', 'steady'))} | ${f3(fl('steady'))} | **${f2(m('erofs', 'steady') / ns)}x** native time | ${f2(m('fuse', 'steady') / ns)}x | ${f2(fl('steady') / ns)}x |`);
  const cold = nc / m('erofs', 'cold');
  // 50 % of native throughput leaves the daemon 2 x native - floor seconds for its cold work.
  const budget = 2 * nc - fl('cold');
  lines.push(
    '',
    `Cold-read budget at 50 % of native: ${f3(2 * nc)} s, of which the floor takes ${f3(fl('cold'))} s, leaving ${f3(budget)} s for the daemon's cold work. ` +
      `That work, per cold read: CPU seconds (user + system, all threads) erofs mode ${list(s.cpu.erofs)}, FUSE mode ${list(s.cpu.fuse)}; of it, decompressing and verifying chunks alone (the daemon's backend metrics), erofs mode ${s.compute.erofs.map((x) => (x / 1000).toFixed(3)).join(', ')} s, FUSE mode ${s.compute.fuse.map((x) => (x / 1000).toFixed(3)).join(', ')} s, on ${os.cpus().length} CPUs.`,
    '',
    `Rounds (s): native cold ${list(s.native.cold)}, first ${list(s.native.first)}, steady ${list(s.native.steady)}; erofs cold ${list(s.ny.erofs.cold)}, first ${list(s.ny.erofs.first)}, steady ${list(s.ny.erofs.steady)}; FUSE cold ${list(s.ny.fuse.cold)}, first ${list(s.ny.fuse.first)}, steady ${list(s.ny.fuse.steady)}; floor cold ${list(s.floor.cold)}, first ${list(s.floor.first)}, steady ${list(s.floor.steady)}.`,
    '',
  );
  return `cold at least 50 % of native throughput with ${st} memory: ${cold >= 0.5 ? 'met' : 'NOT met'} (${f2(100 * cold)} %, ${f2(FILE_MIB / m('erofs', 'cold'))} MiB/s; the floor ${pct(fl('cold'))})`;
}

/** One cold-then-warm pass of erofs mode's floor: EROFS over an in-memory blob view of `flat`. */
async function readFloor(work: string, mounts: string[], flat: string, blobId: string, boot: string, into: ReadSeries, prepare: () => Promise<void>): Promise<void> {
  const view = path.join(work, 'floor-view');
  const mnt = path.join(work, 'mnt-big-floor');
  mounts.push(mnt, view);
  const proc = await startFloor(flat, view, ['--blob-view', blobId]);
  try {
    await mountErofs(boot, mnt, [path.join(view, blobId)]);
    try {
      await coldThenWarm(path.join(mnt, 'big.bin'), into, { prepare });
    } finally {
      unmount(mnt);
    }
  } finally {
    await stopFloor(proc);
  }
}

async function partColdstart(lines: string[]): Promise<void> {
  const say = (msg: string): void => void process.stderr.write(`erofs coldstart: ${msg}\n`);
  const td = new Teardown(say);
  td.onSignals();
  try {
    const layout = await buildLayout('small');
    const link = await startLink();
    td.add('registry and network namespace', () => link.close());
    const certs = fs.mkdtempSync(path.join(os.tmpdir(), 'erofs-certs-'));
    td.add('certs.d', () => fs.rmSync(certs, { recursive: true, force: true }));
    fs.mkdirSync(path.join(certs, REG));
    fs.writeFileSync(path.join(certs, REG, 'hosts.toml'), `server = "http://${REG}"\n`);
    const src = `${REG}/bench/small:oci`;
    const dst = `${REG}/bench/small:nydus`;
    execFileSync('skopeo', ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout.dir}:latest`, `docker://${src}`]);
    execFileSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'nydusify.js'), 'convert', '--source', src, '--target', dst, '--plain-http'], { stdio: 'ignore' });
    link.shape();
    const runs: Record<'oci' | 'fuse' | 'erofs', Result[]> = { oci: [], fuse: [], erofs: [] };
    for (let r = 0; r < COLD_ROUNDS; r++) {
      runs.oci.push(await measured(td, 'OCI run', (s) => coldStart(link, 'oci', src, certs, s)));
      runs.fuse.push(await measured(td, 'nydus FUSE run', (s) => coldStart(link, 'nydus', dst, certs, s, 'fs_driver = "fusedev"')));
      runs.erofs.push(await measured(td, 'nydus erofs run', (s) => coldStart(link, 'nydus', dst, certs, s, 'fs_driver = "erofs"')));
      say(`round ${r}: OCI ${f2(runs.oci[r].seconds)} s, FUSE ${f2(runs.fuse[r].seconds)} s, erofs ${f2(runs.erofs[r].seconds)} s`);
      for (const k of ['fuse', 'erofs'] as const) if (runs[k][r].output !== runs.oci[r].output) throw new Error(`outputs differ: OCI ${runs.oci[r].output} vs ${k} ${runs[k][r].output}`);
    }
    const s = (k: keyof typeof runs) => median(runs[k].map((x) => x.seconds));
    const b = (k: keyof typeof runs) => median(runs[k].map((x) => x.bytes));
    const rate = process.env.BENCH_RATE_MBIT ?? '200';
    lines.push('### Cold start through containerd', '');
    lines.push(
      `From \`pull\` to the first output of \`python3 -c ...\` in a new container (the Debian/python image, one layer), through a private containerd with runc, registry behind a ${rate} Mbit/s link (bench/coldstart.ts); fresh containerd, snapshotter root and blob cache each run; median of ${COLD_ROUNDS}. ` +
        'nydus: `ctr-remote images rpull` + containerd-nydus-grpc (shared nydusd) with `fs_driver = "fusedev"` or `"erofs"`.',
      '',
    );
    lines.push('| | OCI + overlayfs | nydus, FUSE mode | nydus, erofs mode |', '|---|---:|---:|---:|');
    lines.push(`| seconds | ${f2(s('oci'))} | ${f2(s('fuse'))} | **${f2(s('erofs'))}** |`);
    lines.push(`| MB pulled | ${(b('oci') / 1e6).toFixed(1)} | ${(b('fuse') / 1e6).toFixed(1)} | ${(b('erofs') / 1e6).toFixed(1)} |`);
    const ratio = s('erofs') / s('fuse');
    lines.push('', `Target: no slower than FUSE mode: ${ratio <= 1 ? 'met' : 'NOT met'} (erofs / FUSE = ${f2(ratio)}).`, '');
    lines.push(`Rounds (s): OCI ${runs.oci.map((x) => f2(x.seconds)).join(', ')}; FUSE ${runs.fuse.map((x) => f2(x.seconds)).join(', ')}; erofs ${runs.erofs.map((x) => f2(x.seconds)).join(', ')}.`, '');
  } finally {
    await td.run();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (mounts, page cache drops, containerd)');
  execFileSync('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian'], { stdio: 'inherit' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-erofs-'));
  const mounts: string[] = [];
  const lines: string[] = ['## Kernel EROFS mode (issue 16)', ''];
  lines.push(
    'nydusd in kernel EROFS mode (`cache.type = "erofs"`, snapshotter `fs_driver = "erofs"`): the kernel mounts the bootstrap as a file-backed EROFS over the daemon\'s blob view, beside the same image in FUSE mode and the native baselines, in the same run.',
    '',
  );
  try {
    if (PARTS.has('find')) await partFind(work, mounts, lines);
    if (PARTS.has('read')) await partRead(work, mounts, lines);
  } finally {
    for (const m of mounts) unmount(m);
    unmount(path.join(work, 'blob-view'));
    fs.rmSync(work, { recursive: true, force: true });
  }
  if (PARTS.has('coldstart')) await partColdstart(lines);
  const md = lines.join('\n') + '\n';
  fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench-out', 'erofs.md'), md);
  process.stdout.write(md);
}

main().catch((e) => {
  process.stderr.write(`bench erofs: error: ${(e as Error).message}\n`);
  process.exit(1);
});
