/**
 * The FUSE face over a hand-made image, mounted in this process with a localfs blob: types, modes,
 * owners, sizes, contents, symlinks, device numbers, xattrs, hard links sharing an inode, EIO on a
 * poisoned chunk while other files read fine, and read-only-ness. Reads go through child processes
 * and async fs so the FUSE callbacks (this process's event loop) are free to answer.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { BlobCacheManager } from '../src/cache/blob-cache';
import { LocalFsSource } from '../src/fetch/localfs';
import { FetchMetrics } from '../src/fetch/metrics';
import { ChunkPipeline } from '../src/fetch/pipeline';
import { newInode, RafsImage } from '../src/format/model';
import { FuseMount } from '../src/daemon/fuse';
import { RafsInstance } from '../src/daemon/rafs';
import { forceUnmount, makeTestBlob } from './helpers/nydusd';
import { describeWith } from './helpers/capabilities';


const run = promisify(execFile);
const CS = 16384;
let tmp: string;
let mnt: string;
let fuse: FuseMount | undefined;
let rafs: RafsInstance;
let metrics: FetchMetrics;
let cache: BlobCacheManager;
let source: LocalFsSource;
const big = Buffer.alloc(5 * CS + 123);
for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 9)) & 0xff;
const small = Buffer.from('hello from a lazily fetched file\n');
const poisoned = Buffer.alloc(CS, 0x42);

const NEEDS = ['root', 'fuse'] as const;

describeWith(NEEDS, 'FUSE over a hand-made image', () => {
  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-fuse-'));
    mnt = path.join(tmp, 'mnt');
    const pieces = [...Array.from({ length: 6 }, (_, i) => big.subarray(i * CS, (i + 1) * CS)), small, poisoned];
    const tb = makeTestBlob(pieces, { chunkSize: CS });
    // The blob on "the backend" has one flipped byte inside the last chunk.
    const onDisk = Buffer.from(tb.bytes);
    const last = tb.chunks[7];
    onDisk[last.compressedOffset + Math.floor(last.compressedSize / 2)] ^= 0xff;
    fs.mkdirSync(path.join(tmp, 'blobs'));
    fs.writeFileSync(path.join(tmp, 'blobs', tb.blob.blobId), onDisk);

    const root = newInode('dir', 0o755);
    const etc = newInode('dir', 0o750, { uid: 1000, gid: 1001, mtime: 1700000000 });
    const bigFile = newInode('file', 0o644, { size: big.length, chunks: tb.chunks.slice(0, 6), mtime: 1700000001, uid: 7, gid: 8 });
    const smallFile = newInode('file', 0o4755, { size: small.length, chunks: [tb.chunks[6]] });
    const badFile = newInode('file', 0o600, { size: poisoned.length, chunks: [tb.chunks[7]] });
    smallFile.xattrs.set('user.origin', Buffer.from('hand-made'));
    smallFile.xattrs.set('security.capability', Buffer.from([1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    const link = newInode('symlink', 0o777, { target: 'etc/small', size: 9 });
    const tty = newInode('chardev', 0o620, { rdev: (4 << 8) | 1 });
    const fifo = newInode('fifo', 0o644);
    root.children!.set('etc', etc);
    etc.children!.set('big', bigFile);
    etc.children!.set('small', smallFile);
    etc.children!.set('hardlink', smallFile);
    etc.children!.set('bad', badFile);
    root.children!.set('link', link);
    root.children!.set('tty1', tty);
    root.children!.set('fifo', fifo);
    root.children!.set('empty', newInode('file', 0o644));
    const image: RafsImage = { root, blobs: [tb.blob], chunkSize: CS, digester: 'sha256', compressor: 'zstd', prefetch: [] };

    metrics = new FetchMetrics();
    cache = new BlobCacheManager(path.join(tmp, 'cache'));
    source = new LocalFsSource({ dir: path.join(tmp, 'blobs') });
    const pipeline = new ChunkPipeline({ cache, sources: [source], metrics, amplifyIo: 0 });
    rafs = new RafsInstance(image, pipeline);
    fuse = new FuseMount(rafs, mnt);
    await fuse.mount();
  });

  afterAll(async () => {
    await fuse?.unmount().catch(() => forceUnmount(mnt));
    forceUnmount(mnt);
    await cache?.close();
    await source?.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('attributes: type, mode, owner, size, mtime, rdev, link count, inode numbers', async () => {
    const st = async (p: string) => (await run('stat', ['-c', '%F|%a|%u|%g|%s|%Y|%t:%T|%h|%i', path.join(mnt, p)])).stdout.trim();
    expect(await st('etc')).toMatch(/^directory\|750\|1000\|1001\|\d+\|1700000000\|0:0\|2\|\d+$/);
    expect(await st('etc/big')).toMatch(new RegExp(`^regular file\\|644\\|7\\|8\\|${big.length}\\|1700000001\\|0:0\\|1\\|`));
    expect(await st('etc/small')).toMatch(new RegExp(`^regular file\\|4755\\|0\\|0\\|${small.length}\\|0\\|0:0\\|2\\|`));
    expect(await st('tty1')).toMatch(/^character special file\|620\|0\|0\|0\|0\|4:1\|1\|/);
    expect(await st('fifo')).toMatch(/^fifo\|644\|/);
    expect(await st('empty')).toMatch(/^regular empty file\|644\|/);
    // Hard links share the inode number the image gave them.
    const ino = (p: string) => fs.promises.stat(path.join(mnt, p)).then((s) => s.ino);
    expect(await ino('etc/hardlink')).toBe(await ino('etc/small'));
    expect(await ino('etc/big')).not.toBe(await ino('etc/small'));
  });

  test('directory listing, symlink target and xattrs', async () => {
    expect((await fs.promises.readdir(mnt)).sort()).toEqual(['empty', 'etc', 'fifo', 'link', 'tty1']);
    expect((await fs.promises.readdir(path.join(mnt, 'etc'))).sort()).toEqual(['bad', 'big', 'hardlink', 'small']);
    expect(await fs.promises.readlink(path.join(mnt, 'link'))).toBe('etc/small');
    const { stdout } = await run('getfattr', ['--absolute-names', '-d', '-m', '-', '-e', 'hex', path.join(mnt, 'etc/small')]);
    expect(stdout).toContain(`user.origin=0x${Buffer.from('hand-made').toString('hex')}`);
    expect(stdout).toContain('security.capability=0x01000002002000');
  });

  test('contents read lazily: only the chunks a read needs are fetched', async () => {
    const before = metrics.snapshot().localfs?.bytes ?? 0;
    expect(await fs.promises.readFile(path.join(mnt, 'etc/small'), 'utf8')).toBe(small.toString());
    const after = metrics.snapshot().localfs.bytes;
    expect(after - before).toBeLessThan(CS);
    expect((await fs.promises.readFile(path.join(mnt, 'etc/big'))).equals(big)).toBe(true);
    expect(await fs.promises.readFile(path.join(mnt, 'link'), 'utf8')).toBe(small.toString());
    expect((await fs.promises.readFile(path.join(mnt, 'empty'))).length).toBe(0);
  });

  test('the kernel keeps pages and attributes: a second read and stat never reach the daemon', async () => {
    const f = path.join(mnt, 'etc/big');
    expect((await fs.promises.readFile(f)).equals(big)).toBe(true);
    const reads = rafs.stats.reads;
    expect((await fs.promises.readFile(f)).equals(big)).toBe(true);
    await fs.promises.stat(f);
    expect(rafs.stats.reads).toBe(reads);
    // Nor does the open: the kernel opens files without asking (zero-message OPEN, as upstream).
    expect(rafs.stats.opens).toBe(0);
  });

  test('a chunk whose digest does not verify gives EIO and is counted; other files still read', async () => {
    await expect(fs.promises.readFile(path.join(mnt, 'etc/bad'))).rejects.toMatchObject({ code: 'EIO' });
    expect(metrics.snapshot().localfs.digestFailures).toBe(1);
    // The kernel's retry and a second open fail fast without refetching.
    await expect(fs.promises.readFile(path.join(mnt, 'etc/bad'))).rejects.toMatchObject({ code: 'EIO' });
    expect(metrics.snapshot().localfs.digestFailures).toBe(1);
    expect((await fs.promises.readFile(path.join(mnt, 'etc/big'))).equals(big)).toBe(true);
  });

  test('the filesystem is read-only', async () => {
    await expect(fs.promises.writeFile(path.join(mnt, 'etc/small'), 'x')).rejects.toMatchObject({ code: expect.stringMatching(/EROFS|EACCES|EPERM/) });
    await expect(fs.promises.mkdir(path.join(mnt, 'newdir'))).rejects.toMatchObject({ code: expect.stringMatching(/EROFS|EACCES|EPERM|ENOSYS/) });
  });
});
