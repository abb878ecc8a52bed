/**
 * nydusd's kernel EROFS mode (cache type "erofs"), with the real kernel: the Debian root filesystem
 * built with zstd chunks is mounted through `POST /api/v1/mount`; the kernel's EROFS serves the tree
 * over the daemon's blob view (one direct-io FUSE file per blob, uncompressed address space).
 *
 *  - /proc/mounts shows `erofs` at the mountpoint and the blob view; the tree equals its source;
 *  - laziness: one small file read right after mount fetches under 2 MiB of blob;
 *  - the blob files are direct-io: reading the same range twice reaches the daemon twice (the
 *    EROFS mount's page cache is the only one);
 *  - kill -9 of nydusd: pages already read keep reading, pages never read fail with EIO; a new
 *    daemon brings the view back and a fresh mount at the same path reads them;
 *  - a RAFS v5 image asked for in erofs mode is served over FUSE, with a log line saying why.
 *
 * The fault tests (signal storm, kill -9) are looped before being trusted:
 *   for i in $(seq 20); do npx jest --runInBand test/nydusd.erofs.test.ts -t 'storm|kill -9' || break; done
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { createLayer } from '../src/builder';
import { describeWith } from './helpers/capabilities';
import { compareTrees, snapshotTree } from './helpers/erofs';
import { debianRootfsDir, UPSTREAM_FIXTURES } from './helpers/fixtures';
import { forceUnmount, NydusdHandle, startNydusd } from './helpers/nydusd';

const run = promisify(execFile);
const NEEDS = ['root', 'fuse', 'erofs'] as const;
jest.setTimeout(20 * 60_000);

/** The fstype mounted at `dir` (the visible, last one), from /proc/self/mountinfo. */
function fsTypeAt(dir: string): string | undefined {
  let t: string | undefined;
  for (const l of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (f[4] === dir) t = f[f.indexOf('-') + 1];
  }
  return t;
}

/** Reads a file in a child process (this process must not block while nydusd answers). */
async function readFile(p: string): Promise<Buffer> {
  const { stdout } = await run('cat', [p], { encoding: 'buffer', maxBuffer: 1 << 30 });
  return stdout;
}

describeWith(NEEDS, 'nydusd kernel EROFS mode', () => {
  let tmp: string;
  let boot: string;
  let blobs: string;
  const daemons: NydusdHandle[] = [];

  const config = (cacheDir: string, type = 'erofs') => ({
    device: { backend: { type: 'localfs', config: { dir: blobs } }, cache: { type, config: { work_dir: cacheDir } } },
    mode: 'direct',
    digest_validate: true,
  });

  async function daemon(dir?: string): Promise<NydusdHandle> {
    const d = await startNydusd({ dir: dir ?? fs.mkdtempSync(path.join(tmp, 'd-')) });
    daemons.push(d);
    return d;
  }

  /** Mounts the Debian image in erofs mode with a fresh cache; the view is unmounted last on cleanup. */
  async function mountDebian(d: NydusdHandle, name: string): Promise<string> {
    const mnt = path.join(tmp, name);
    fs.mkdirSync(mnt, { recursive: true });
    d.mountpoints.add(mnt);
    await d.client.mount(mnt, boot, config(path.join(tmp, `cache-${name}`)));
    d.mountpoints.delete(path.join(d.dir, 'blob-view'));
    d.mountpoints.add(path.join(d.dir, 'blob-view'));
    return mnt;
  }

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-erofs-'));
    blobs = path.join(tmp, 'blobs');
    const res = await createLayer({ source: { kind: 'dir', path: debianRootfsDir() }, bootstrapPath: path.join(tmp, 'debian.boot'), blobDir: blobs, compressor: 'zstd' });
    boot = res.bootstrapPath;
  });

  afterAll(async () => {
    for (const d of daemons.splice(0)) await d.cleanup();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('the kernel mounts the image over the blob view; the tree equals its source', async () => {
    const d = await daemon();
    const mnt = await mountDebian(d, 'tree');
    expect(fsTypeAt(mnt)).toBe('erofs');
    const info = await d.client.daemonInfo();
    expect(info.backend_collection[mnt]).toMatchObject({ fs_driver: 'erofs' });
    const view = info.blob_view!;
    expect(view.dir).toBe(path.join(d.dir, 'blob-view'));
    expect(fsTypeAt(view.dir)).toBe('fuse.nydus-blobs');
    expect(view.blobs).toHaveLength(1);
    // One file per blob, named by blob id, as large as the blob's uncompressed address space.
    const blobFile = path.join(view.dir, view.blobs[0]);
    const size = fs.statSync(blobFile).size;
    expect(size % 4096).toBe(0);
    expect(size).toBeGreaterThan(fs.statSync(path.join(blobs, view.blobs[0])).size);
    expect(fs.readFileSync('/proc/mounts', 'utf8')).toContain(`${boot} ${mnt} erofs ro`);

    const src = snapshotTree(debianRootfsDir());
    const got = snapshotTree(mnt);
    expect(got.size).toBeGreaterThan(10000);
    expect(compareTrees(src, got, { ignore: (p) => p === '/' })).toEqual([]);
    // Let the event loop see the keep-alive connection the long synchronous walk outlived close.
    await new Promise((r) => setTimeout(r, 200));
    expect((await d.client.daemonInfo()).blob_view!.read_errors).toBe(0);
  });

  test('laziness: one small file right after mount fetches under 2 MiB of blob', async () => {
    const d = await daemon();
    const mnt = await mountDebian(d, 'lazy');
    const before = await d.client.call<{ read_amount_total: number }>('GET', '/api/v1/metrics/backend');
    expect(before.read_amount_total).toBe(0);
    const text = await readFile(path.join(mnt, 'etc/os-release'));
    expect(text.equals(fs.readFileSync(path.join(debianRootfsDir(), 'etc/os-release')))).toBe(true);
    const after = await d.client.call<{ read_amount_total: number }>('GET', '/api/v1/metrics/backend');
    expect(after.read_amount_total).toBeGreaterThan(0);
    expect(after.read_amount_total).toBeLessThan(2 << 20);
    const view = (await d.client.daemonInfo()).blob_view!;
    expect(view.reads).toBeGreaterThan(0);
    expect(view.read_bytes).toBeLessThan(2 << 20);
  });

  test('blob files are direct-io: the same range read twice reaches the daemon twice', async () => {
    const d = await daemon();
    await mountDebian(d, 'direct');
    const view = (await d.client.daemonInfo()).blob_view!;
    const file = path.join(view.dir, view.blobs[0]);
    const first = await run('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'count=4'], { encoding: 'utf8' });
    expect(first.stderr).toContain('4194304 bytes');
    const mid = (await d.client.daemonInfo()).blob_view!;
    await run('dd', [`if=${file}`, 'of=/dev/null', 'bs=1M', 'count=4'], { encoding: 'utf8' });
    const last = (await d.client.daemonInfo()).blob_view!;
    expect(mid.read_bytes - view.read_bytes).toBe(4 << 20);
    expect(last.read_bytes - mid.read_bytes).toBe(4 << 20);
  });

  test('readers hit by a storm of signals get every byte (a signal never fails a blob read)', async () => {
    const d = await daemon();
    const mnt = await mountDebian(d, 'signals');
    // SIGALRM every 0.2 ms with a handler: each FUSE request of the reader sees a pending signal
    // and the kernel sends INTERRUPT for it.
    const py = [
      'import hashlib, signal, sys',
      'signal.signal(signal.SIGALRM, lambda *a: None)',
      'signal.setitimer(signal.ITIMER_REAL, 0.0002, 0.0002)',
      'for p in sys.argv[1:]:',
      '    h = hashlib.sha256()',
      "    with open(p, 'rb', buffering=0) as f:",
      '        n = 0',
      '        while n < (16 << 20):',
      '            b = f.read(1 << 20)',
      '            if not b: break',
      '            h.update(b); n += len(b)',
      '    print(h.hexdigest())',
      'signal.setitimer(signal.ITIMER_REAL, 0, 0)',
    ].join('\n');
    const files = ['usr/bin/perl', 'usr/lib/x86_64-linux-gnu/libc.so.6', 'usr/bin/bash'];
    const { stdout } = await run('python3', ['-c', py, ...files.map((f) => path.join(mnt, f))], { encoding: 'utf8' });
    const want = files.map((f) => createHash('sha256').update(fs.readFileSync(path.join(debianRootfsDir(), f))).digest('hex'));
    expect(stdout.trim().split('\n')).toEqual(want);
    // The blob file itself, read directly (synchronous direct-io requests), with and without signals.
    const view = (await d.client.daemonInfo()).blob_view!;
    const blobFile = path.join(view.dir, view.blobs[0]);
    const stormy = await run('python3', ['-c', py, blobFile], { encoding: 'utf8' });
    const calm = await run('python3', ['-c', py.replace('0.0002, 0.0002)', '0, 0)'), blobFile], { encoding: 'utf8' });
    expect(stormy.stdout).toBe(calm.stdout);
    expect((await d.client.daemonInfo()).blob_view!.read_errors).toBe(0);
  });

  test('kill -9: read pages keep working, unread pages fail with EIO; a new daemon and mount serve them', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'd-'));
    const d = await daemon(dir);
    const mnt = await mountDebian(d, 'crash');
    const readBefore = 'usr/bin/bash';
    const neverRead = 'usr/bin/perl';
    const bash = await readFile(path.join(mnt, readBefore));
    const bashSha = createHash('sha256').update(bash).digest('hex');
    // A process that maps the file, as a running container maps its binaries: it holds the old mount
    // and keeps the pages in the page cache (drop_caches, which other benchmarks on this machine
    // run, skips mapped pages); each line on its stdin makes it hash its mapping again.
    const hold = 'import hashlib, mmap, sys\nf = open(sys.argv[1], "rb")\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nprint(hashlib.sha256(m).hexdigest(), flush=True)\nfor _ in sys.stdin:\n    print(hashlib.sha256(m).hexdigest(), flush=True)\n';
    const holder = spawn('python3', ['-c', hold, path.join(mnt, readBefore)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines: string[] = [];
    holder.stdout.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
    const nextLine = async (n: number): Promise<string | undefined> => {
      for (let i = 0; i < 300 && lines.length < n; i++) await new Promise((r) => setTimeout(r, 100));
      return lines[n - 1];
    };
    try {
      expect(await nextLine(1)).toBe(bashSha);
      expect(await d.kill9()).toBe('SIGKILL');
      expect(fsTypeAt(mnt)).toBe('erofs');
      expect((await readFile(path.join(mnt, readBefore))).equals(bash)).toBe(true);
      await expect(readFile(path.join(mnt, neverRead))).rejects.toThrow(/Input\/output error/);

      // What the daemon manager does: detach the old mount, start nydusd again, mount again.
      forceUnmount(mnt);
      const d2 = await daemon(dir);
      await d2.client.mount(mnt, boot, config(path.join(tmp, 'cache-crash')));
      d2.mountpoints.add(mnt);
      d2.mountpoints.add(path.join(dir, 'blob-view'));
      expect(fsTypeAt(mnt)).toBe('erofs');
      expect(fsTypeAt(path.join(dir, 'blob-view'))).toBe('fuse.nydus-blobs');
      const perl = await readFile(path.join(mnt, neverRead));
      expect(perl.equals(fs.readFileSync(path.join(debianRootfsDir(), neverRead)))).toBe(true);
      // The detached old mount still serves what it had to whoever holds it.
      holder.stdin.write('\n');
      expect(await nextLine(2)).toBe(bashSha);
    } finally {
      holder.kill('SIGKILL');
    }
  });

  test('a RAFS v5 image asked for in erofs mode is served over FUSE, with a log line saying why', async () => {
    const d = await daemon();
    const mnt = path.join(tmp, 'v5');
    fs.mkdirSync(mnt);
    d.mountpoints.add(mnt);
    const v5 = path.join(UPSTREAM_FIXTURES, 'v5', 'sha256-nocompress-repeatable');
    await d.client.mount(mnt, v5, {
      device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'v5', 'blobs') } }, cache: { type: 'erofs', config: { work_dir: path.join(tmp, 'cache-v5') } } },
      mode: 'direct',
    });
    expect(fsTypeAt(mnt)).toBe('fuse.rafs');
    const info = await d.client.daemonInfo();
    expect(info.backend_collection[mnt]).toMatchObject({ fs_driver: 'fusedev' });
    // The blob view is not even mounted for an image that cannot use it.
    expect(info.blob_view).toBeUndefined();
    expect(d.log()).toMatch(/"reason":"RAFS v5 bootstrap: the kernel mounts RAFS v6 \(EROFS\) only".*serving it over FUSE/);
    expect(fs.readdirSync(mnt).length).toBeGreaterThan(0);
  });
});
