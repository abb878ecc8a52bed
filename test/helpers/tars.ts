/**
 * Crafted layer tars for tests: every entry kind a layer can hold, OCI whiteouts, and a
 * multi-layer image with deletions and an opaque directory. Written with our TarWriter (binary
 * PAX values) and checked in the tests against GNU tar's own extraction of the same bytes.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGzip } from 'node:zlib';
import { TarHeader, TarWriter } from '../../src/builder/tar-writer';

export interface CraftedEntry extends TarHeader {
  body?: Buffer;
}

/** Deterministic pseudo-random bytes (xorshift), so content is incompressible but reproducible. */
export function pseudoRandom(size: number, seed: number): Buffer {
  const buf = Buffer.alloc(Math.ceil(size / 4) * 4);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < buf.length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf.writeUInt32LE(x, i);
  }
  return buf.subarray(0, size);
}

const T = 1_700_000_000;
const file = (name: string, body: Buffer, extra: Partial<TarHeader> = {}): CraftedEntry => ({
  name, type: 'file', mode: 0o644, uid: 0, gid: 0, mtime: T, size: body.length, body, ...extra,
});
const dir = (name: string, extra: Partial<TarHeader> = {}): CraftedEntry => ({ name, type: 'directory', mode: 0o755, mtime: T, ...extra });

/**
 * One of every entry kind: regular files (empty, small, exactly one chunk, several chunks, repeated
 * content), directories, symlinks (short, long, dangling), hard links, char/block devices, fifo,
 * setuid/setgid/sticky bits, large uid/gid, nanosecond mtime, xattrs (text and binary), long and
 * non-ASCII names, an OCI whiteout (kept as an ordinary entry in a layer), a GNU sparse 1.0 file.
 */
export function everyKindEntries(chunkSize = 0x100000): CraftedEntry[] {
  const longDir = 'long/' + 'd'.repeat(120) + '/' + 'e'.repeat(200);
  const sparseData = pseudoRandom(4096 + 100, 7);
  // GNU tar ends a map with a zero-length segment at the real size when the file ends in a hole.
  const sparseMap = Buffer.from('3\n0\n4096\n1048576\n100\n3145728\n0\n');
  const sparseBody = Buffer.concat([sparseMap, Buffer.alloc(512 - sparseMap.length), sparseData]);
  return [
    dir('./'),
    dir('etc'),
    file('etc/hostname', Buffer.from('crafted\n')),
    file('etc/empty', Buffer.alloc(0)),
    file('etc/one-chunk', pseudoRandom(chunkSize, 1)),
    file('etc/multi-chunk', pseudoRandom(2 * chunkSize + 12345, 2)),
    file('etc/copy-of-multi', pseudoRandom(2 * chunkSize + 12345, 2)),
    file('etc/zeros', Buffer.alloc(3 * chunkSize)),
    dir('bin', { mode: 0o755, uid: 0, gid: 0 }),
    file('bin/suid', Buffer.from('#!/bin/sh\n'), { mode: 0o4755 }),
    file('bin/sgid', Buffer.from('#!/bin/sh\n'), { mode: 0o2711, gid: 50 }),
    dir('tmp', { mode: 0o1777 }),
    { name: 'bin/link-to-suid', type: 'link', mode: 0o4755, linkname: 'bin/suid', mtime: T },
    { name: 'etc/hard-multi', type: 'link', mode: 0o644, linkname: 'etc/multi-chunk', mtime: T },
    { name: 'etc/symlink', type: 'symlink', mode: 0o777, linkname: 'hostname', mtime: T },
    { name: 'etc/dangling', type: 'symlink', mode: 0o777, linkname: '/nowhere/at/all', mtime: T },
    { name: 'etc/long-target', type: 'symlink', mode: 0o777, linkname: 'x/'.repeat(150) + 'end', mtime: T },
    dir('dev'),
    { name: 'dev/null', type: 'character-device', mode: 0o666, devmajor: 1, devminor: 3, mtime: T },
    { name: 'dev/big-minor', type: 'character-device', mode: 0o600, devmajor: 250, devminor: 70000, mtime: T },
    { name: 'dev/sda', type: 'block-device', mode: 0o660, gid: 6, devmajor: 8, devminor: 0, mtime: T },
    { name: 'dev/fifo', type: 'fifo', mode: 0o644, mtime: T },
    file('home/user/owned', Buffer.from('big ids\n'), { uid: 100000, gid: 200000, mode: 0o600 }),
    file('home/user/nanotime.pyc', Buffer.from('pyc'), { mtimeNsec: 123456789 }),
    file('xattr/text', Buffer.from('x'), { xattrs: new Map([['user.comment', Buffer.from('hello world')], ['trusted.t', Buffer.from('1')]]) }),
    file('xattr/binary', Buffer.from('ping'), {
      xattrs: new Map([['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')], ['user.bin', Buffer.from([0, 0xff, 0x80, 0x7f, 0xc3])]]),
    }),
    dir('xattr/dir', { xattrs: new Map([['user.dirattr', Buffer.from('on a dir')]]) }),
    file(`${longDir}/file-with-a-long-path`, Buffer.from('long\n')),
    file('unicode/héllo-wörld-世界.txt', Buffer.from('unicode\n')),
    dir('unicode/каталог'),
    file('whiteouts/.wh.deleted', Buffer.alloc(0)),
    file('whiteouts/.wh..wh..opq', Buffer.alloc(0)),
    {
      name: 'GNUSparseFile.0/sparse.bin', type: 'file', mode: 0o644, mtime: T, size: sparseBody.length, body: sparseBody,
      pax: new Map([['GNU.sparse.major', '1'], ['GNU.sparse.minor', '0'], ['GNU.sparse.name', 'sparse/sparse.bin'], ['GNU.sparse.realsize', String(3 * 1048576)]]),
    },
    file('implicit/parent/dirs/file', Buffer.from('parents made implicitly\n')),
  ];
}

/** Writes entries as a tar (gzip optional) to `file`. */
export async function writeTar(file: string, entries: CraftedEntry[], gzip = false): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const out = fs.createWriteStream(file);
  const closed = new Promise<void>((resolve, reject) => {
    out.on('close', resolve);
    out.on('error', reject);
  });
  let sink: NodeJS.WritableStream = out;
  if (gzip) {
    const gz = createGzip();
    gz.pipe(out);
    sink = gz;
  }
  const tar = new TarWriter(sink);
  for (const e of entries) await tar.entry(e, e.body);
  await tar.finish();
  await closed;
}

/** Tar bytes in memory (small crafted tars for robustness runs). */
export async function tarBuffer(entries: CraftedEntry[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  const { Writable } = await import('node:stream');
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      parts.push(chunk);
      done();
    },
  });
  const tar = new TarWriter(sink);
  for (const e of entries) await tar.entry(e, e.body);
  await tar.finish();
  return Buffer.concat(parts);
}

/**
 * A three-layer image with deletions and an opaque directory (lowest first):
 *   1: base tree (etc/, usr/lib, var/cache/ with files, opt/app/ with files, a hard link)
 *   2: deletes etc/motd and the whole usr/share/doc, makes var/cache opaque and adds one file,
 *      replaces the directory opt/app with a file, changes a file's content
 *   3: re-creates etc/motd, whiteouts a file added in 2, adds a new dir with a whiteout inside
 */
export function multiLayerEntries(): CraftedEntry[][] {
  const base: CraftedEntry[] = [
    dir('etc'),
    file('etc/motd', Buffer.from('welcome\n')),
    file('etc/os-release', Buffer.from('ID=crafted\n')),
    file('etc/keep', pseudoRandom(300_000, 11)),
    dir('usr'),
    dir('usr/lib'),
    file('usr/lib/libx.so', pseudoRandom(2_500_000, 12)),
    { name: 'usr/lib/libx.so.1', type: 'link', mode: 0o644, linkname: 'usr/lib/libx.so', mtime: T },
    dir('usr/share'),
    dir('usr/share/doc'),
    file('usr/share/doc/README', Buffer.from('docs\n')),
    file('usr/share/doc/pkg/changelog', pseudoRandom(10_000, 13)),
    dir('var'),
    dir('var/cache'),
    file('var/cache/old1', Buffer.from('old cache 1\n')),
    file('var/cache/sub/old2', Buffer.from('old cache 2\n')),
    dir('opt'),
    dir('opt/app'),
    file('opt/app/bin', pseudoRandom(50_000, 14)),
  ];
  const second: CraftedEntry[] = [
    dir('etc'),
    file('etc/.wh.motd', Buffer.alloc(0)),
    file('etc/os-release', Buffer.from('ID=crafted\nVERSION=2\n')),
    dir('usr/share', { mode: 0o755 }),
    file('usr/share/.wh.doc', Buffer.alloc(0)),
    dir('var/cache', { mode: 0o700 }),
    file('var/cache/.wh..wh..opq', Buffer.alloc(0)),
    file('var/cache/new', Buffer.from('fresh cache\n')),
    file('opt/app', Buffer.from('app is a file now\n')),
    file('srv/added-in-2', Buffer.from('two\n')),
  ];
  const third: CraftedEntry[] = [
    file('etc/motd', Buffer.from('welcome back\n'), { mode: 0o600 }),
    file('srv/.wh.added-in-2', Buffer.alloc(0)),
    file('srv/added-in-3', Buffer.from('three\n')),
    dir('newdir'),
    file('newdir/.wh.nothing-below', Buffer.alloc(0)),
    file('newdir/file', Buffer.from('new\n')),
  ];
  return [base, second, third];
}

/** Extracts a tar with GNU tar as root does (owners, modes, devices, xattrs, sparse files). */
export function gnuExtract(tarFile: string, into: string): void {
  fs.mkdirSync(into, { recursive: true });
  execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-owner', '-xpf', tarFile, '-C', into], { stdio: ['ignore', 'ignore', 'pipe'] });
}
