/**
 * Acceptance 1: `--compressor none` builds mount with the kernel (blob as a loop device) and the
 * mounted tree equals the source; fsck.erofs passes with the blob as its device.
 * Sources: a crafted tar with every entry kind (reference: GNU tar's extraction of the same tar),
 * a real Debian root filesystem tar (reference: the directory it was made from), and a directory
 * holding what no tar can (a socket) plus a file over 4 GiB.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLayer, TarWriter } from '../src/builder';
import { decodeBootstrap } from '../src/format/decode';
import { debianRootfsDir, debianRootfsTar, REPO_ROOT } from './helpers/fixtures';
import { everyKindEntries, gnuExtract, writeTar } from './helpers/tars';
import { compareTrees, fsckErofs, Mounted, mountRafs, snapshotTree } from './helpers/erofs';
import { describeWith } from './helpers/capabilities';

const NEEDS = ['root', 'erofs', 'loop'] as const;
jest.setTimeout(15 * 60_000);

describeWith(NEEDS, 'kernel mounts --compressor none builds (acceptance 1)', () => {
  let work: string;
  const mounts: Mounted[] = [];
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-kernel-'));
  });
  afterAll(() => {
    for (const m of mounts.splice(0)) m.unmount();
    fs.rmSync(work, { recursive: true, force: true });
  });

  test('crafted tar with every entry kind: fsck.erofs passes, mount equals GNU tar extraction', async () => {
    const tarFile = path.join(work, 'every-kind.tar');
    await writeTar(tarFile, everyKindEntries());
    const res = await createLayer({
      source: { kind: 'tar', stream: fs.createReadStream(tarFile), gzip: false },
      bootstrapPath: path.join(work, 'every-kind.boot'),
      blobDir: path.join(work, 'blobs'),
      compressor: 'none',
    });
    expect(res.blobId).toMatch(/^[0-9a-f]{64}$/);
    expect(fsckErofs(res.bootstrapPath, [res.blobPath!])).toMatchObject({ ok: true });

    const ref = path.join(work, 'every-kind.ref');
    gnuExtract(tarFile, ref);
    const m = mountRafs(res.bootstrapPath, [res.blobPath!]);
    mounts.push(m);
    const got = snapshotTree(m.dir);
    expect(compareTrees(snapshotTree(ref), got)).toEqual([]);
    // The things this tar exists for are really there (so equality is not vacuous).
    expect(got.get('/')!.mode).toBe(0o755);
    expect(got.get('/bin/suid')!.mode).toBe(0o4755);
    expect(got.get('/bin/sgid')!).toMatchObject({ mode: 0o2711, gid: 50 });
    expect(got.get('/tmp')!.mode).toBe(0o1777);
    expect(got.get('/dev/big-minor')!.type).toBe('chardev');
    expect(got.get('/dev/sda')!.type).toBe('blockdev');
    expect(got.get('/dev/fifo')!.type).toBe('fifo');
    expect(got.get('/etc/multi-chunk')!.links).toEqual(['/etc/hard-multi', '/etc/multi-chunk']);
    expect(got.get('/home/user/owned')!).toMatchObject({ uid: 100000, gid: 200000 });
    expect(got.get('/xattr/binary')!.xattrs).toEqual({ 'security.capability': '0100000200200000000000000000000000000000', 'user.bin': '00ff807fc3' });
    expect(got.get('/sparse/sparse.bin')!.size).toBe(3 * 1048576);
    expect(got.get('/unicode/héllo-wörld-世界.txt')!.type).toBe('file');
    expect(got.get('/whiteouts/.wh.deleted')!.type).toBe('file');
    expect([...got.keys()].some((p) => p.endsWith('/file-with-a-long-path'))).toBe(true);
  });

  test('Debian rootfs tar: fsck.erofs passes, mount equals the source tree', async () => {
    const res = await createLayer({
      source: { kind: 'tar', stream: fs.createReadStream(debianRootfsTar()), gzip: false },
      bootstrapPath: path.join(work, 'debian.boot'),
      blobDir: path.join(work, 'blobs'),
      compressor: 'none',
    });
    expect(fsckErofs(res.bootstrapPath, [res.blobPath!])).toMatchObject({ ok: true });
    const m = mountRafs(res.bootstrapPath, [res.blobPath!]);
    mounts.push(m);
    const got = snapshotTree(m.dir);
    expect(got.size).toBeGreaterThan(5000);
    expect(got.get('/usr/bin/python3')!.type).toBe('symlink');
    expect(compareTrees(snapshotTree(debianRootfsDir()), got)).toEqual([]);
    // The kernel-mounted python runs.
    const out = execFileSync('chroot', [m.dir, '/usr/bin/python3', '-c', 'import json,hashlib; print(json.dumps([1]))']).toString();
    expect(out.trim()).toBe('[1]');
  });

  test('a tar entry over 4 GiB, streamed, builds and mounts with the right size and tail', async () => {
    const size = 4 * 2 ** 30 + 2 ** 20 + 10;
    const tail = Buffer.from('0123456789');
    const zeros = Buffer.alloc(2 ** 20);
    function* body(): Generator<Buffer> {
      for (let i = 0; i < (size - tail.length) / zeros.length; i++) yield zeros;
      yield tail;
    }
    const pipe = new PassThrough();
    const writing = (async () => {
      const tar = new TarWriter(pipe);
      await tar.entry({ name: 'huge.img', type: 'file', mode: 0o600, size }, body());
      await tar.finish();
    })();
    const res = await createLayer({
      source: { kind: 'tar', stream: pipe, gzip: false },
      bootstrapPath: path.join(work, 'huge.boot'),
      blobDir: path.join(work, 'blobs'),
      compressor: 'none',
    });
    await writing;
    const inode = res.image.root.children!.get('huge.img')!;
    expect(inode.size).toBe(size);
    expect(inode.chunks!.length).toBe(4098);
    // Two distinct chunks: 1 MiB of zeros (4097 times) and the 10-byte tail.
    expect(res.image.blobs[0].chunkCount).toBe(2);
    expect(fsckErofs(res.bootstrapPath, [res.blobPath!])).toMatchObject({ ok: true });
    const m = mountRafs(res.bootstrapPath, [res.blobPath!]);
    mounts.push(m);
    const file = path.join(m.dir, 'huge.img');
    expect(fs.statSync(file).size).toBe(size);
    const got = Buffer.alloc(10);
    const fd = fs.openSync(file, 'r');
    fs.readSync(fd, got, 0, 10, size - 10);
    fs.closeSync(fd);
    expect(got).toEqual(tail);
  });

  test('directory source with a socket, a fifo and a sparse 4.5 GiB file, via the CLI', async () => {
    const src = path.join(work, 'dir-src');
    fs.mkdirSync(path.join(src, 'run'), { recursive: true });
    const sock = path.join(src, 'run', 'app.sock');
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    await new Promise<void>((resolve) => server.close(() => resolve()));
    if (!fs.existsSync(sock)) execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`]);
    execFileSync('mkfifo', [path.join(src, 'run', 'pipe')]);
    const big = path.join(src, 'big.img');
    const fd = fs.openSync(big, 'w');
    fs.writeSync(fd, Buffer.from('tail bytes'), 0, 10, 4.5 * 2 ** 30 - 10);
    fs.closeSync(fd);
    fs.writeFileSync(path.join(src, 'small'), 'small\n');
    execFileSync('setfattr', ['-n', 'user.k', '-v', 'v', path.join(src, 'small')]);

    const boot = path.join(work, 'dir.boot');
    const blob = path.join(work, 'dir.blob');
    execFileSync(path.join(REPO_ROOT, 'bin', 'nydus-image'), ['create', '--type', 'dir-rafs', '--compressor', 'none', '--bootstrap', boot, '--blob', blob, src]);
    const image = decodeBootstrap(fs.readFileSync(boot));
    const bigInode = image.root.children!.get('big.img')!;
    expect(bigInode.size).toBe(4.5 * 2 ** 30);
    expect(bigInode.chunks!.length).toBe(4608);
    // Only two distinct chunks exist (zeros and the tail), so the blob is tiny.
    expect(fs.statSync(blob).size).toBeLessThan(3 * 1048576);
    expect(fsckErofs(boot, [blob])).toMatchObject({ ok: true });

    const m = mountRafs(boot, [blob]);
    mounts.push(m);
    const st = fs.statSync(path.join(m.dir, 'big.img'));
    expect(st.size).toBe(4.5 * 2 ** 30);
    const tail = Buffer.alloc(10);
    const mfd = fs.openSync(path.join(m.dir, 'big.img'), 'r');
    fs.readSync(mfd, tail, 0, 10, 4.5 * 2 ** 30 - 10);
    fs.closeSync(mfd);
    expect(tail.toString()).toBe('tail bytes');
    expect(fs.lstatSync(path.join(m.dir, 'run', 'app.sock')).isSocket()).toBe(true);
    // The 4.5 GiB file's content is compared by samples (the snapshot's limit), the rest whole.
    const got = snapshotTree(m.dir);
    expect(got.get('/small')!.xattrs).toEqual({ 'user.k': '76' });
    expect(compareTrees(snapshotTree(src), got)).toEqual([]);
  });
});
