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
import { createLayer } from '../src/builder';
import { decodeBootstrap } from '../src/format/decode';
import { debianRootfsDir, debianRootfsTar, IS_ROOT, REPO_ROOT } from './helpers/fixtures';
import { everyKindEntries, writeTar } from './helpers/tars';
import { fsckErofs, gnuExtract, KernelMount, mountErofs, snapshotTree } from './builder.trees';

const maybe = IS_ROOT ? describe : describe.skip;
jest.setTimeout(15 * 60_000);

maybe('kernel mounts --compressor none builds (acceptance 1)', () => {
  let work: string;
  const mounts: KernelMount[] = [];
  beforeAll(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-kernel-'));
  });
  afterAll(() => {
    for (const m of mounts.splice(0)) m.release();
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
    expect(fsckErofs(res.bootstrapPath, [res.blobPath!]).status).toBe(0);

    const ref = path.join(work, 'every-kind.ref');
    gnuExtract(tarFile, ref);
    const m = mountErofs(res.bootstrapPath, [res.blobPath!]);
    mounts.push(m);
    const got = snapshotTree(m.dir);
    const want = snapshotTree(ref);
    expect(got).toEqual(want);
    // The things this tar exists for are really there (so equality is not vacuous).
    expect(got['/bin/suid'].mode).toBe('4755');
    expect(got['/tmp'].mode).toBe('1777');
    expect(got['/dev/big-minor'].type).toBe('chardev');
    expect(got['/dev/sda'].type).toBe('blockdev');
    expect(got['/dev/fifo'].type).toBe('fifo');
    expect(got['/etc/hard-multi'].linkGroup).toBe(got['/etc/multi-chunk'].linkGroup);
    expect(got['/home/user/owned'].owner).toBe('100000:200000');
    expect(got['/xattr/binary'].xattrs?.['security.capability']).toBe('0x0100000200200000000000000000000000000000');
    expect(got['/xattr/binary'].xattrs?.['user.bin']).toBe('0x00ff807fc3');
    expect(got['/sparse/sparse.bin'].size).toBe(3 * 1048576);
    expect(got['/unicode/héllo-wörld-世界.txt'].type).toBe('file');
    expect(got['/whiteouts/.wh.deleted'].type).toBe('file');
    expect(Object.keys(got).some((p) => p.endsWith('/file-with-a-long-path'))).toBe(true);
  });

  test('Debian rootfs tar: fsck.erofs passes, mount equals the source tree', async () => {
    const res = await createLayer({
      source: { kind: 'tar', stream: fs.createReadStream(debianRootfsTar()), gzip: false },
      bootstrapPath: path.join(work, 'debian.boot'),
      blobDir: path.join(work, 'blobs'),
      compressor: 'none',
    });
    expect(fsckErofs(res.bootstrapPath, [res.blobPath!]).status).toBe(0);
    const m = mountErofs(res.bootstrapPath, [res.blobPath!]);
    mounts.push(m);
    const got = snapshotTree(m.dir);
    expect(Object.keys(got).length).toBeGreaterThan(5000);
    expect(got['/usr/bin/python3'].type).toBe('symlink');
    expect(got).toEqual(snapshotTree(debianRootfsDir()));
    // The kernel-mounted python runs.
    const out = execFileSync('chroot', [m.dir, '/usr/bin/python3', '-c', 'import json,hashlib; print(json.dumps([1]))']).toString();
    expect(out.trim()).toBe('[1]');
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
    expect(fsckErofs(boot, [blob]).status).toBe(0);

    const m = mountErofs(boot, [blob]);
    mounts.push(m);
    const st = fs.statSync(path.join(m.dir, 'big.img'));
    expect(st.size).toBe(4.5 * 2 ** 30);
    const tail = Buffer.alloc(10);
    const mfd = fs.openSync(path.join(m.dir, 'big.img'), 'r');
    fs.readSync(mfd, tail, 0, 10, 4.5 * 2 ** 30 - 10);
    fs.closeSync(mfd);
    expect(tail.toString()).toBe('tail bytes');
    expect(fs.lstatSync(path.join(m.dir, 'run', 'app.sock')).isSocket()).toBe(true);
    // Everything but the 4.5 GiB file's content digest (its size and tail are checked above).
    const got = snapshotTree(m.dir, { maxHashBytes: 1 << 30 });
    expect(got['/small'].xattrs).toEqual({ 'user.k': '0x76' });
    expect(got).toEqual(snapshotTree(src, { maxHashBytes: 1 << 30 }));
  });
});
