/**
 * nydusd's own FUSE session (src/fuse/) under a real kernel mount of a hand-made image: every
 * operation a read-only nydusd serves, READ requests of 1 MiB reaching the daemon, several readers
 * at once, INTERRUPT of a read that is stuck, and a clean unmount (also with a file still open).
 * File access goes through child processes and async fs so this process's event loop is free to
 * answer the kernel.
 *
 * Timing-sensitive parts (interrupt, unmount with an open file) were run in a loop:
 *   for i in $(seq 20); do npx jest --runInBand test/fuse.session.test.ts || break; done
 */
import { execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { LocalFsSource } from '../src/fetch/localfs';
import { FetchMetrics } from '../src/fetch/metrics';
import { ChunkPipeline } from '../src/fetch/pipeline';
import { Inode, newInode, RafsImage } from '../src/format/model';
import { FuseMount } from '../src/daemon/fuse';
import { RafsInstance } from '../src/daemon/rafs';
import { Init, Op } from '../src/fuse/abi';
import { FuseSession } from '../src/fuse/session';
import { forceUnmount, isMounted, makeTestBlob } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';

const run = promisify(execFile);
const MiB = 1 << 20;
const CS = MiB;
const BIG = 8 * MiB;

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i += 4) b.writeUInt32LE(((i * 2654435761) ^ seed) >>> 0, i);
  return b;
}

const big = pattern(BIG, 1);
const parts = Array.from({ length: 4 }, (_, i) => pattern(2 * MiB, 100 + i));
const small = Buffer.from('small file\n');

let tmp: string;
let rafs: RafsInstance;
let cache: BlobCacheManager;
let source: LocalFsSource;

function stats(fm: FuseMount): FuseSession['stats'] {
  return fm.fuseSession!.stats;
}
const count = (fm: FuseMount, op: number) => stats(fm).requests.get(op) ?? 0;

/** A FuseMount whose reads of the file named `gatedPath` wait until `openGate()` is called. */
class GatedMount extends FuseMount {
  gatedPath = '';
  private waiters: (() => void)[] = [];
  started = 0;
  async read(nodeid: number, fh: number, offset: number, size: number): Promise<Buffer[]> {
    const data = await super.read(nodeid, fh, offset, size);
    if (this.gatedPath && (this as unknown as { nodes: Map<number, { name: string }> }).nodes.get(nodeid)?.name === this.gatedPath) {
      this.started++;
      await new Promise<void>((r) => this.waiters.push(r));
    }
    return data;
  }
  openGate(): void {
    this.gatedPath = '';
    for (const w of this.waiters.splice(0)) w();
  }
}

function buildImage(): RafsImage {
  const chunks = [...Array.from({ length: BIG / CS }, (_, i) => big.subarray(i * CS, (i + 1) * CS)), ...parts.flatMap((p) => [p.subarray(0, CS), p.subarray(CS)]), small];
  const tb = makeTestBlob(chunks, { chunkSize: CS });
  fs.mkdirSync(path.join(tmp, 'blobs'));
  fs.writeFileSync(path.join(tmp, 'blobs', tb.blob.blobId), tb.bytes);
  const root = newInode('dir', 0o755);
  const file = (data: Buffer, from: number, n: number, mode = 0o644): Inode => newInode('file', mode, { size: data.length, chunks: tb.chunks.slice(from, from + n), mtime: 1700000000, mtimeNsec: 5000 });
  root.children!.set('big', file(big, 0, 8));
  const par = newInode('dir', 0o755);
  parts.forEach((p, i) => par.children!.set(`p${i}`, file(p, 8 + 2 * i, 2)));
  root.children!.set('parts', par);
  const s = file(small, 16, 1);
  s.xattrs.set('user.a', Buffer.from('1'));
  s.xattrs.set('user.long', Buffer.alloc(300, 0x61));
  root.children!.set('small', s);
  root.children!.set('small-link', s);
  root.children!.set('sym', newInode('symlink', 0o777, { target: 'small', size: 5 }));
  // Enough names that a listing takes several READDIR requests.
  const many = newInode('dir', 0o755);
  for (let i = 0; i < 400; i++) many.children!.set(`entry-with-a-longish-name-${String(i).padStart(4, '0')}`, newInode('fifo', 0o644));
  root.children!.set('many', many);
  return { root, blobs: [tb.blob], chunkSize: CS, digester: 'sha256', compressor: 'zstd', prefetch: [] };
}

function fresh(): { pipeline: ChunkPipeline; metrics: FetchMetrics } {
  const metrics = new FetchMetrics();
  return { metrics, pipeline: new ChunkPipeline({ cache, sources: [source], metrics, amplifyIo: 0 }) };
}

describeWith(['root', 'fuse'], 'nydusd FUSE session', () => {
  let mnt: string;
  let fm: GatedMount;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fuse-session-'));
    mnt = path.join(tmp, 'mnt');
    const image = buildImage();
    cache = new BlobCacheManager(path.join(tmp, 'cache'));
    source = new LocalFsSource({ dir: path.join(tmp, 'blobs') });
    rafs = new RafsInstance(image, fresh().pipeline);
    fm = new GatedMount(rafs, mnt);
    await fm.mount();
  }, 60_000);

  afterAll(async () => {
    fm?.openGate();
    await fm?.unmount().catch(() => forceUnmount(mnt));
    forceUnmount(mnt);
    await cache?.close();
    await source?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('INIT: protocol 7.x with max_pages for 1 MiB reads and the flags nydusd asks for', () => {
    const n = fm.fuseSession!.negotiated!;
    expect(n.major).toBe(7);
    expect(n.minor).toBeGreaterThanOrEqual(28);
    expect(n.maxPages).toBe(256);
    const want = ['PARALLEL_DIROPS', 'DO_READDIRPLUS', 'READDIRPLUS_AUTO', 'CACHE_SYMLINKS', 'NO_OPENDIR_SUPPORT', 'EXPORT_SUPPORT', 'MAX_PAGES'] as const;
    for (const f of want) expect([f, (n.accepted & BigInt(Init[f as keyof typeof Init])) !== 0n]).toEqual([f, true]);
  });

  test('lookup, getattr, readlink, statfs, xattrs, hard links, readdir(plus) over several requests', async () => {
    const st = async (p: string) => (await run('stat', ['-c', '%F|%a|%s|%Y|%h|%i', path.join(mnt, p)])).stdout.trim();
    expect(await st('.')).toMatch(/^directory\|755\|/);
    expect(count(fm, Op.GETATTR)).toBeGreaterThan(0);
    expect(await st('big')).toBe(`regular file|644|${BIG}|1700000000|1|${(await fs.promises.stat(path.join(mnt, 'big'))).ino}`);
    expect(await st('small')).toMatch(/\|2\|\d+$/);
    expect((await fs.promises.stat(path.join(mnt, 'small-link'))).ino).toBe((await fs.promises.stat(path.join(mnt, 'small'))).ino);
    expect(count(fm, Op.LOOKUP)).toBeGreaterThan(0);

    expect(await fs.promises.readlink(path.join(mnt, 'sym'))).toBe('small');
    expect(await fs.promises.readlink(path.join(mnt, 'sym'))).toBe('small');
    expect(count(fm, Op.READLINK)).toBe(1); // FUSE_CACHE_SYMLINKS: the kernel keeps the target

    const df = (await run('stat', ['-f', '-c', '%S|%c|%l', mnt])).stdout.trim();
    expect(df).toBe(`4096|${rafs.entryCount}|255`);
    expect(count(fm, Op.STATFS)).toBeGreaterThan(0);

    const { stdout } = await run('getfattr', ['--absolute-names', '-d', '-m', '-', path.join(mnt, 'small')]);
    expect(stdout).toContain('user.a="1"');
    expect(stdout).toContain(`user.long="${'a'.repeat(300)}"`);
    await expect(run('getfattr', ['--absolute-names', '-n', 'user.none', path.join(mnt, 'small')])).rejects.toMatchObject({ stderr: expect.stringMatching(/No such attribute/) });
    expect(count(fm, Op.GETXATTR)).toBeGreaterThan(0);
    expect(count(fm, Op.LISTXATTR)).toBeGreaterThan(0);

    const names = (await run('ls', ['-a', '-i', path.join(mnt, 'many')])).stdout.split('\n').filter(Boolean);
    expect(names.length).toBe(402);
    expect(names.map((l) => l.trim().split(/\s+/)[1])).toEqual(expect.arrayContaining(['.', '..', 'entry-with-a-longish-name-0399']));
    expect(count(fm, Op.READDIR) + count(fm, Op.READDIRPLUS)).toBeGreaterThan(2);
    // `ls -l` stats every entry: READDIRPLUS handed the attributes over, so no lookup per name.
    const lookups = count(fm, Op.LOOKUP);
    await run('ls', ['-l', path.join(mnt, 'many')]);
    expect(count(fm, Op.LOOKUP) - lookups).toBeLessThan(10);
    expect((await fs.promises.readdir(mnt)).sort()).toEqual(['big', 'many', 'parts', 'small', 'small-link', 'sym']);
    // Zero-message OPENDIR (upstream rafs's): the first OPENDIR was answered ENOSYS, no other came,
    // and nothing is released.
    await new Promise((r) => setTimeout(r, 100));
    expect(count(fm, Op.OPENDIR)).toBe(1);
    expect(count(fm, Op.RELEASEDIR)).toBe(0);
  });

  test('reads: contents exact, READ requests of 1 MiB reach the daemon, files opened without OPEN', async () => {
    const { stdout } = await run('sh', ['-c', `dd if=${path.join(mnt, 'big')} bs=1M status=none | sha256sum`]);
    expect(stdout.split(' ')[0]).toBe(require('node:crypto').createHash('sha256').update(big).digest('hex'));
    const sizes = stats(fm).readSizes;
    process.stdout.write(`READ sizes (bytes: count): ${JSON.stringify([...sizes].sort((a, b) => a[0] - b[0]))} negotiated ${JSON.stringify(fm.fuseSession!.negotiated, (_k, v) => (typeof v === 'bigint' ? v.toString(16) : v))}\n`);
    expect(sizes.get(MiB) ?? 0).toBeGreaterThanOrEqual(4);
    expect(await fs.promises.readFile(path.join(mnt, 'small'), 'utf8')).toBe(small.toString());
    // Zero-message OPEN (upstream rafs's): one OPEN answered ENOSYS, then none, no RELEASE; one
    // FLUSH answered ENOSYS, then none.
    await new Promise((r) => setTimeout(r, 100));
    expect(count(fm, Op.OPEN)).toBe(1);
    expect(count(fm, Op.RELEASE)).toBe(0);
    expect(count(fm, Op.FLUSH)).toBe(1);
  });

  test('a READ straddling two chunks is answered with the right bytes of both (O_DIRECT, 1 MiB at 512 KiB)', async () => {
    const at = MiB / 2;
    const { stdout } = await run('sh', ['-c', `dd if=${path.join(mnt, 'big')} iflag=direct,skip_bytes skip=${at} bs=1M count=2 status=none | sha256sum`]);
    expect(stdout.split(' ')[0]).toBe(require('node:crypto').createHash('sha256').update(big.subarray(at, at + 2 * MiB)).digest('hex'));
  });

  test('several readers at once: each gets its own bytes, and reads overlap in the daemon', async () => {
    const sums = await Promise.all(parts.map((_, i) => run('sh', ['-c', `sha256sum < ${path.join(mnt, 'parts', `p${i}`)}`]).then((r) => r.stdout.split(' ')[0])));
    const { createHash } = require('node:crypto') as typeof import('node:crypto');
    expect(sums).toEqual(parts.map((p) => createHash('sha256').update(p).digest('hex')));
    expect(stats(fm).maxInFlight).toBeGreaterThan(1);
  });

  test('a stuck O_DIRECT read is interrupted when its reader is killed; the session keeps serving', async () => {
    fm.gatedPath = 'p0';
    const dd = spawn('dd', [`if=${path.join(mnt, 'parts', 'p0')}`, 'of=/dev/null', 'bs=4k', 'count=1', 'iflag=direct', 'status=none'], { stdio: 'ignore' });
    const exited = new Promise<string | number | null>((r) => dd.on('exit', (c, s) => r(s ?? c)));
    for (let i = 0; i < 100 && fm.started === 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(fm.started).toBeGreaterThanOrEqual(1);
    const interrupts = count(fm, Op.INTERRUPT);
    dd.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    // At least one: the dying reader's FLUSH may be interrupted too, and an INTERRUPT that overtakes
    // its request in another reader is answered EAGAIN and comes again.
    expect(count(fm, Op.INTERRUPT)).toBeGreaterThanOrEqual(interrupts + 1);
    expect((fm.fuseSession as unknown as { inFlight: Set<bigint> }).inFlight.size).toBe(0);
    fm.openGate(); // the late answer is dropped, not written to the kernel
    expect((await fs.promises.readFile(path.join(mnt, 'parts', 'p1'))).equals(parts[1])).toBe(true);
  });

  test('forgotten nodes are dropped: BATCH_FORGET/FORGET after the kernel evicts its inodes', async () => {
    const nodes = (fm as unknown as { nodes: Map<number, unknown> }).nodes;
    const before = nodes.size;
    expect(before).toBeGreaterThan(400);
    fs.writeFileSync('/proc/sys/vm/drop_caches', '2');
    for (let i = 0; i < 100 && nodes.size > before / 2; i++) await new Promise((r) => setTimeout(r, 50));
    expect(count(fm, Op.FORGET) + count(fm, Op.BATCH_FORGET)).toBeGreaterThan(0);
    expect(nodes.size).toBeLessThan(before / 2);
    // Names resolve again afterwards (fresh lookups).
    expect((await fs.promises.stat(path.join(mnt, 'many', 'entry-with-a-longish-name-0007'))).isFIFO()).toBe(true);
  });

  test('unmount with a file still open: the mount goes, the descriptor closes, the thread pool is free', async () => {
    const holder = spawn('sh', ['-c', `exec 3<${path.join(mnt, 'small')}; sleep 30`], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 300));
    const fuseFds = () => fs.readdirSync('/proc/self/fd').filter((f) => { try { return fs.readlinkSync(`/proc/self/fd/${f}`) === '/dev/fuse'; } catch { return false; } }).length;
    const fdsBefore = fuseFds();
    try {
      await fm.unmount();
      expect(isMounted(mnt)).toBe(false);
      expect(fuseFds()).toBe(fdsBefore - 1);
      // Every pool thread is back: a burst of pool work completes.
      await Promise.all(Array.from({ length: 16 }, () => fs.promises.readFile(__filename)));
    } finally {
      holder.kill('SIGKILL');
    }
  }, 30_000);
});

describeWith(['root', 'fuse'], 'nydusd FUSE session, mounted read-write without default_permissions', () => {
  let mnt: string;
  let fm: FuseMount;
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fuse-session-rw-'));
    mnt = path.join(tmp, 'mnt');
    cache = new BlobCacheManager(path.join(tmp, 'cache'));
    source = new LocalFsSource({ dir: path.join(tmp, 'blobs') });
    rafs = new RafsInstance(buildImage(), fresh().pipeline);
    // Neither the VFS (ro) nor the kernel's permission check stops a write: the daemon has to.
    fm = new FuseMount(rafs, mnt, undefined, { mountOptions: ['allow_other'] });
    await fm.mount();
  }, 60_000);
  afterAll(async () => {
    await fm?.unmount().catch(() => forceUnmount(mnt));
    forceUnmount(mnt);
    await cache?.close();
    await source?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('writes of every kind answer EROFS; ACCESS allows reading only; unknown operations ENOSYS', async () => {
    const p = (x: string) => path.join(mnt, x);
    await expect(fs.promises.writeFile(p('small'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.mkdir(p('d'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.writeFile(p('new'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.unlink(p('small'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.rename(p('small'), p('small2'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.symlink('x', p('s2'))).rejects.toMatchObject({ code: 'EROFS' });
    await expect(fs.promises.chmod(p('small'), 0o600)).rejects.toMatchObject({ code: 'EROFS' });
    await expect(run('setfattr', ['-n', 'user.x', '-v', '1', p('small')])).rejects.toMatchObject({ stderr: expect.stringMatching(/Read-only file system/) });
    expect(count(fm, Op.SETATTR) + count(fm, Op.MKDIR) + count(fm, Op.UNLINK) + count(fm, Op.SETXATTR)).toBeGreaterThanOrEqual(4);

    await fs.promises.access(p('small'), fs.constants.R_OK);
    await expect(fs.promises.access(p('small'), fs.constants.W_OK)).rejects.toMatchObject({ code: 'EROFS' });
    expect(count(fm, Op.ACCESS)).toBeGreaterThanOrEqual(2);

    // SEEK_DATA asks the filesystem (FUSE_LSEEK); ENOSYS makes the kernel fall back to its own answer.
    const { stdout } = await run('python3', ['-c', `import os; f=os.open(${JSON.stringify(p('small'))}, os.O_RDONLY); print(os.lseek(f, 0, os.SEEK_DATA))`]);
    expect(stdout.trim()).toBe('0');
    expect(count(fm, Op.LSEEK)).toBe(1);
  });
});
