/**
 * Hand-built images with every inode kind: encode, fsck.erofs with the blob as device, mount with
 * the kernel and compare what it shows with the model, and decode back to the same model.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeBootstrap } from '../src/format/encode';
import { decodeBootstrap } from '../src/format/decode';
import { chunkDigest } from '../src/format/digest';
import { walk, lookup } from '../src/format/walk';
import { BlobInfo, ChunkInfo, Inode, RafsImage, newInode } from '../src/format/model';
import { fsckErofs, mountRafs, padBlob, snapshotTree, Mounted } from './helpers/erofs';
import { testWith } from './helpers/capabilities';


const CHUNK = 0x100000;
const GiB = 1024 ** 3;

/** Builds an uncompressed blob: each distinct chunk once, 4 KiB aligned, offsets equal in both spaces. */
class BlobWriter {
  private parts: Buffer[] = [];
  private size = 0;
  private count = 0;
  private readonly byDigest = new Map<string, ChunkInfo>();

  /** `firstIndex` lets a test push CI indexes past 16 bits (into c_blob_addr_hi). */
  constructor(private readonly blobIndex = 0, private readonly firstIndex = 0) {}

  chunk(data: Buffer): ChunkInfo {
    const digest = chunkDigest('sha256', data);
    const known = this.byDigest.get(digest.toString('hex'));
    if (known) return { ...known };
    const c: ChunkInfo = {
      digest, blobIndex: this.blobIndex, index: this.firstIndex + this.count++, flags: 0,
      compressedOffset: this.size, compressedSize: data.length,
      uncompressedOffset: this.size, uncompressedSize: data.length,
    };
    const padded = Math.ceil(data.length / 4096) * 4096;
    this.parts.push(data, Buffer.alloc(padded - data.length));
    this.size += padded;
    this.byDigest.set(digest.toString('hex'), c);
    return { ...c };
  }

  file(data: Buffer, fields: Partial<Inode> = {}): Inode {
    const chunks: ChunkInfo[] = [];
    for (let o = 0; o < data.length; o += CHUNK) chunks.push(this.chunk(data.subarray(o, o + CHUNK)));
    return newInode('file', 0o644, { size: data.length, chunks, ...fields });
  }

  finish(file: string): BlobInfo {
    const data = Buffer.concat(this.parts);
    fs.writeFileSync(file, data);
    const blobId = require('node:crypto').createHash('sha256').update(data).digest('hex');
    return {
      blobId, compressor: 'none', digester: 'sha256', chunkSize: CHUNK, chunkCount: this.count,
      compressedSize: data.length, uncompressedSize: data.length, features: 1,
      ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none',
    };
  }
}

function randomBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

const T0 = 1_700_000_000;

function buildImage(dir: string): { image: RafsImage; blobPaths: string[]; contents: Map<string, Buffer> } {
  const w = new BlobWriter();
  const w2 = new BlobWriter(1, 0xfffe);
  const contents = new Map<string, Buffer>();
  const root = newInode('dir', 0o755, { mtime: T0 });
  const add = (parent: Inode, name: string, inode: Inode, content?: Buffer): Inode => {
    parent.children!.set(name, inode);
    if (content) contents.set(name, content);
    return inode;
  };
  const small = Buffer.from('hello, rafs\n');
  add(root, 'hello.txt', w.file(small, { mtime: T0, uid: 1000, gid: 1000, xattrs: new Map([['user.comment', Buffer.from('hi')]]) }), small);
  const multi = randomBytes(2 * CHUNK + 12345, 7);
  add(root, 'multi.bin', w.file(multi, { mtime: T0 + 5, mtimeNsec: 123456789, mode: 0o600 }), multi);
  add(root, 'empty', w.file(Buffer.alloc(0), { mtime: T0 }));
  add(root, 'big-ids', w.file(small, { uid: 100000, gid: 200000, mtime: T0 }));
  add(root, 'setuid', w.file(small, { mode: 0o4755, mtime: T0 }));
  add(root, 'setgid', w.file(small, { mode: 0o2711, mtime: T0 }));
  add(root, 'sticky', newInode('dir', 0o1777, { mtime: T0 }));
  add(root, 'x.pyc', w.file(Buffer.from('pyc'), { mtime: T0 }));
  add(root, 'link', newInode('symlink', 0o777, { target: 'hello.txt', mtime: T0 }));
  add(root, 'long-link', newInode('symlink', 0o777, { target: 'a/'.repeat(2000) + 'end', mtime: T0 }));
  add(root, 'null', newInode('chardev', 0o666, { rdev: (1 << 8) | 3, mtime: T0 }));
  add(root, 'sda', newInode('blockdev', 0o660, { rdev: (8 << 8) | 0, gid: 6, mtime: T0 }));
  add(root, 'bigdev', newInode('chardev', 0o600, { rdev: ((259 & 0xfff) << 8) | (300 & 0xff) | ((300 & ~0xff) << 12), mtime: T0 }));
  add(root, 'fifo', newInode('fifo', 0o644, { mtime: T0 }));
  add(root, 'sock', newInode('socket', 0o755, { mtime: T0 }));
  add(root, 'ünïcødé-名前', w.file(Buffer.from('utf8'), { mtime: T0 }), Buffer.from('utf8'));
  add(root, 'n'.repeat(255), w.file(Buffer.from('long name'), { mtime: T0 }), Buffer.from('long name'));
  add(root, '-dash-sorts-before-dot', w.file(Buffer.from('dash'), { mtime: T0 }));
  const xa = new Map<string, Buffer>([
    ['user.a', Buffer.from('1')],
    ['trusted.overlay.opaque', Buffer.from('y')],
    ['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')],
    ['user.big', randomBytes(3000, 3)],
  ]);
  add(root, 'xattrs', w.file(small, { xattrs: xa, mtime: T0 }));
  // POSIX ACLs: version 2 header, then {u16 tag, u16 perm, u32 id} sorted by tag
  // (USER_OBJ 1, USER 2, GROUP_OBJ 4, MASK 0x10, OTHER 0x20).
  const acl = (entries: Array<[number, number, number]>): Buffer => {
    const b = Buffer.alloc(4 + 8 * entries.length);
    b.writeUInt32LE(2, 0);
    entries.forEach(([tag, perm, id], i) => {
      b.writeUInt16LE(tag, 4 + i * 8);
      b.writeUInt16LE(perm, 6 + i * 8);
      b.writeUInt32LE(id, 8 + i * 8);
    });
    return b;
  };
  const aclAccess = acl([[1, 7, 0xffffffff], [2, 5, 1000], [4, 5, 0xffffffff], [0x10, 5, 0xffffffff], [0x20, 0, 0xffffffff]]);
  const aclDefault = acl([[1, 7, 0xffffffff], [4, 5, 0xffffffff], [0x20, 5, 0xffffffff]]);
  add(root, 'xdir', newInode('dir', 0o750, {
    xattrs: new Map([['user.d', Buffer.from('dir')], ['system.posix_acl_access', aclAccess], ['system.posix_acl_default', aclDefault]]),
    mtime: T0,
  }));
  const hard = w.file(Buffer.from('shared inode'), { mtime: T0 });
  add(root, 'hard1', hard);
  const sub = add(root, 'sub', newInode('dir', 0o755, { mtime: T0 }));
  add(sub, 'hard2', hard);
  const deep = add(sub, 'deep', newInode('dir', 0o700, { mtime: T0, uid: 7 }));
  add(deep, 'leaf', w.file(small, { mtime: T0 }));
  // Second blob (device 2), CI indexes 0xfffe.. crossing into the high byte.
  const other = randomBytes(3 * CHUNK + 777, 11);
  add(root, 'blob2.bin', w2.file(other, { mtime: T0 }), other);
  const other2 = Buffer.from('second blob, small file');
  add(root, 'blob2-small', w2.file(other2, { mtime: T0 }), other2);
  // Big xattrs leave no room for an inline tail: these take the FLAT_PLAIN path.
  const plainDir = add(root, 'plain-dir', newInode('dir', 0o755, { mtime: T0, xattrs: new Map([['user.pad', randomBytes(3500, 5)]]) }));
  for (let i = 0; i < 40; i++) add(plainDir, `p${i}`, newInode('socket', 0o644, { mtime: T0 }));
  add(root, 'plain-link', newInode('symlink', 0o777, { target: 't'.repeat(2000), mtime: T0, xattrs: new Map([['trusted.pad', randomBytes(3000, 6)]]) }));
  const many = add(root, 'many', newInode('dir', 0o755, { mtime: T0 }));
  for (let i = 0; i < 3000; i++) add(many, `entry-${String(i).padStart(5, '0')}-${'x'.repeat(i % 40)}`, newInode('fifo', 0o600, { mtime: T0 }));
  // > 4 GiB: every chunk is the same zero chunk stored once.
  const zero = w.chunk(Buffer.alloc(CHUNK));
  const hugeSize = 4 * GiB + 3 * CHUNK;
  const huge = newInode('file', 0o644, { size: hugeSize, mtime: T0, chunks: Array.from({ length: hugeSize / CHUNK }, () => ({ ...zero })) });
  add(root, 'huge', huge);
  const blobPaths = [path.join(dir, 'blob1'), path.join(dir, 'blob2')];
  const blobs = [w.finish(blobPaths[0]), w2.finish(blobPaths[1])];
  blobPaths.forEach(padBlob);
  const image: RafsImage = { root, blobs, chunkSize: CHUNK, digester: 'sha256', compressor: 'none', prefetch: ['/sub/deep', '/hello.txt'] };
  return { image, blobPaths, contents };
}

describe('hand-built RAFS v6 image', () => {
  let dir: string;
  let built: ReturnType<typeof buildImage>;
  let bootPath: string;
  let boot: Buffer;
  let mounted: Mounted | undefined;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'format-hand-'));
    built = buildImage(dir);
    boot = encodeBootstrap(built.image);
    bootPath = path.join(dir, 'bootstrap');
    fs.writeFileSync(bootPath, boot);
  });

  afterAll(() => {
    mounted?.unmount();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('layout basics: EROFS magic, root nid 128, size a multiple of 4 KiB', () => {
    expect(boot.readUInt32LE(1024)).toBe(0xe0f5e1e2);
    expect(boot.readUInt16LE(1024 + 14)).toBe(128);
    expect(boot.length % 4096).toBe(0);
    expect(built.image.root.ino).toBe(1);
  });

  test('decode round-trips to the same model', () => {
    const back = decodeBootstrap(boot);
    expect(back.root).toEqual(built.image.root);
    expect(back.blobs).toEqual(built.image.blobs);
    expect(back.prefetch).toEqual(built.image.prefetch);
    expect([back.chunkSize, back.digester, back.compressor]).toEqual([CHUNK, 'sha256', 'none']);
    expect(lookup(back, '/blob2.bin')!.chunks!.map((c) => [c.blobIndex, c.index])).toEqual([[1, 0xfffe], [1, 0xffff], [1, 0x10000], [1, 0x10001]]);
    // Hard links come back as one object.
    expect(lookup(back, '/hard1')).toBe(lookup(back, '/sub/hard2'));
    expect([...walk(back)].map(([p]) => p)).toEqual([...walk(built.image)].map(([p]) => p));
  });

  test('fsck.erofs accepts it with the blob as device', () => {
    const r = fsckErofs(bootPath, built.blobPaths);
    expect({ ok: r.ok, output: r.output.slice(-2000) }).toMatchObject({ ok: true });
    // ... and fsck does look: an invalid data layout in the root inode fails it.
    const bad = Buffer.from(boot);
    const rootOff = bad.readUInt32LE(1024 + 40) * 4096 + 128 * 32;
    bad.writeUInt16LE(bad.readUInt16LE(rootOff) | (7 << 1), rootOff);
    const badPath = path.join(dir, 'bad-bootstrap');
    fs.writeFileSync(badPath, bad);
    expect(fsckErofs(badPath, built.blobPaths).ok).toBe(false);
  });

  testWith(['root', 'erofs', 'loop'], 'the kernel mounts it and shows the model', () => {
    mounted = mountRafs(bootPath, built.blobPaths);
    const snap = snapshotTree(mounted.dir, 64 << 20);
    const img = built.image;
    for (const [p, inode] of walk(img)) {
      const e = snap.get(p);
      expect(e).toBeDefined();
      const got = { type: e!.type, mode: e!.mode, uid: e!.uid, gid: e!.gid, rdev: e!.rdev, target: e!.target };
      const want = {
        type: inode.kind, mode: inode.mode, uid: inode.uid, gid: inode.gid,
        rdev: inode.kind === 'chardev' || inode.kind === 'blockdev' ? inode.rdev : 0, target: inode.target,
      };
      expect({ p, ...got }).toEqual({ p, ...want });
      if (inode.kind !== 'dir') expect({ p, size: e!.size }).toEqual({ p, size: inode.size });
      expect({ p, mtime: e!.mtime }).toEqual({ p, mtime: `${inode.mtime}.${String(inode.mtimeNsec).padStart(9, '0')}` });
      const xattrs = Object.fromEntries([...inode.xattrs].map(([k, v]) => [k, v.toString('hex')]));
      expect({ p, xattrs: e!.xattrs }).toEqual({ p, xattrs });
    }
    expect(snap.size).toBe([...walk(img)].length);
    for (const [name, content] of built.contents) {
      expect(fs.readFileSync(path.join(mounted.dir, name)).equals(content)).toBe(true);
    }
    expect(snap.get('/hard1')!.links).toEqual(['/hard1', '/sub/hard2']);
    expect(fs.statSync(path.join(mounted.dir, 'hard1')).ino).toBe(fs.statSync(path.join(mounted.dir, 'sub/hard2')).ino);
    expect(fs.readdirSync(path.join(mounted.dir, 'many')).length).toBe(3000);
    // Lookups by name go through the kernel's binary search over sorted dirents: every name resolves.
    let found = 0;
    for (const name of lookup(img, '/many')!.children!.keys()) if (fs.lstatSync(path.join(mounted.dir, 'many', name)).isFIFO()) found++;
    expect(found).toBe(3000);
    expect(fs.readlinkSync(path.join(mounted.dir, 'plain-link'))).toBe('t'.repeat(2000));
    expect(fs.readdirSync(path.join(mounted.dir, 'plain-dir')).length).toBe(40);
    expect(fs.lstatSync(path.join(mounted.dir, '-dash-sorts-before-dot')).isFile()).toBe(true);
    // The > 4 GiB file: zeros at both ends and across the 4 GiB boundary.
    const fd = fs.openSync(path.join(mounted.dir, 'huge'), 'r');
    try {
      const b = Buffer.alloc(8192);
      for (const off of [0, 4 * GiB - 4096, 4 * GiB + 3 * CHUNK - 8192]) {
        b.fill(1);
        expect(fs.readSync(fd, b, 0, b.length, off)).toBe(8192);
        expect(b.every((x) => x === 0)).toBe(true);
      }
    } finally {
      fs.closeSync(fd);
    }
  });
});
