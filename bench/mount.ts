/**
 * Benchmark of nydusd's mount cost (issue 18, "nydusd mount" phase of the cold start): the time from
 * `POST /api/v1/mount` to its answer for the Debian fixture bootstrap (built by our nydus-image), on
 * a shared daemon already running, as the snapshotter mounts it. Then the first `find` + stat walk
 * of the fresh mount, which is where a lazily decoded tree pays for what the mount skipped.
 *
 * Baselines in the same run, rounds interleaved:
 *   - `decodeBootstrap` of the same bytes in this process: the whole-tree decode a mount used to do
 *     before answering (what `inspect` and `check` still do);
 *   - with BENCH_MOUNT_BEFORE=DIR, the nydusd of another checkout (DIR/bin/nydusd, built), e.g. the
 *     commit before a change, measured the same way.
 * Writes bench-out/mount.md.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { median, timed } from './measure';
import { Daemon, findStat, localfsConfig, startDaemon, stopDaemon, unmount } from './read';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
const NYDUS_IMAGE = path.join(ROOT, 'dist', 'cli', 'nydus-image.js');
const ROUNDS = Number(process.env.BENCH_MOUNT_ROUNDS ?? 5);
const BEFORE = process.env.BENCH_MOUNT_BEFORE;

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

async function main(): Promise<void> {
  execFileSync('bash', [path.join(ROOT, 'scripts', 'fixtures.sh'), 'debian'], { stdio: 'inherit' });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-mount-'));
  try {
    const blobs = path.join(work, 'blobs');
    const boot = path.join(work, 'debian.boot');
    execFileSync('node', [NYDUS_IMAGE, 'create', '-t', 'tar-rafs', '-B', boot, '-D', blobs, path.join(FIXTURES, 'debian-rootfs.tar')], { stdio: 'ignore' });
    const cfg = localfsConfig(blobs, path.join(work, 'cache'));
    const bytes = fs.readFileSync(boot);
    const builds: Build[] = [{ name: 'this', nydusd: path.join(ROOT, 'bin', 'nydusd'), mount: [], walk: [] }];
    if (BEFORE) builds.push({ name: 'before', nydusd: path.join(path.resolve(BEFORE), 'bin', 'nydusd'), mount: [], walk: [] });
    const decode: number[] = [];
    let entries = 0;
    for (let r = 0; r < ROUNDS; r++) {
      for (const b of r % 2 ? [...builds].reverse() : builds) await round(b, work, boot, cfg, r);
      decode.push(timed(() => {
        const img = decodeBootstrap(bytes);
        entries = img.root.children?.size ?? 0;
      }));
    }
    const entryCount = Number(execFileSync('sh', ['-c', 'tar -tf "$1" | wc -l', 'sh', path.join(FIXTURES, 'debian-rootfs.tar')]).toString().trim());
    const ms = (x: number) => `${(x * 1000).toFixed(0)} ms`;
    const load = os.loadavg();
    const lines = [
      '## nydusd mount: POST /api/v1/mount until its answer',
      '',
      `The Debian fixture (${entryCount} tar entries, bootstrap ${(bytes.length / 1e6).toFixed(1)} MB uncompressed, built by our nydus-image, localfs backend) mounted through the API of a shared nydusd that is already running, as the snapshotter does; then the first \`find\` + stat walk of that fresh mount. Median of ${ROUNDS} rounds, a fresh daemon each round. "Whole-tree decode" is \`decodeBootstrap\` of the same bytes in the benchmark's process (${entries} root entries): what a mount did before answering until the tree was decoded on demand. Load average (1, 15 min) at the end: ${load[0].toFixed(1)}, ${load[2].toFixed(1)}.`,
      '',
      '| | POST /api/v1/mount | first find + stat walk |',
      '|---|---:|---:|',
      ...builds.map((b) => `| nydusd (${b.name === 'this' ? 'this build' : `before: ${BEFORE}`}) | ${ms(median(b.mount))} | ${ms(median(b.walk))} |`),
      `| whole-tree decode (reference) | ${ms(median(decode))} | |`,
      '',
      `Rounds (ms): ${builds.map((b) => `${b.name} mount ${b.mount.map((x) => (x * 1000).toFixed(0)).join(', ')}; walk ${b.walk.map((x) => (x * 1000).toFixed(0)).join(', ')}`).join('; ')}; decode ${decode.map((x) => (x * 1000).toFixed(0)).join(', ')}.`,
    ];
    if (BEFORE) {
      const [a, b] = builds;
      lines.push('', `Mount time, this build / before: **${(median(a.mount) / median(b.mount)).toFixed(2)}x**; first walk: ${(median(a.walk) / median(b.walk)).toFixed(2)}x.`);
    }
    fs.mkdirSync(path.join(ROOT, 'bench-out'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, 'bench-out', 'mount.md'), lines.join('\n') + '\n');
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
