/**
 * The format at scale: a model of the real Debian root filesystem (python3 included), made directly
 * from the directory with an uncompressed blob, encodes to a bootstrap that fsck.erofs accepts and
 * that the kernel mounts showing exactly the source tree (type, mode, owner, size, mtime, content,
 * link targets, rdev, xattrs, hard links); decoding gives the model back.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeBootstrap } from '../src/format/encode';
import { decodeBootstrap } from '../src/format/decode';
import { chunkDigest } from '../src/format/digest';
import { BlobInfo, ChunkInfo, Inode, RafsImage, newInode } from '../src/format/model';
import { compareTrees, fsckErofs, mountRafs, snapshotTree, Mounted, TreeSnapshot } from './helpers/erofs';
import { debianRootfsDir } from './helpers/fixtures';
import { describeWith } from './helpers/capabilities';

const CHUNK = 0x100000;

/** Directory -> model + uncompressed blob (4 KiB aligned chunks, deduplicated by digest). */
function modelFromDir(src: string, snap: TreeSnapshot, blobPath: string): RafsImage {
  const fd = fs.openSync(blobPath, 'w');
  const blobHash = crypto.createHash('sha256');
  const seen = new Map<string, ChunkInfo>();
  const byLinkGroup = new Map<string, Inode>();
  let blobSize = 0;
  let count = 0;
  const buf = Buffer.alloc(CHUNK);
  const writeChunk = (data: Buffer): ChunkInfo => {
    const digest = chunkDigest('sha256', data);
    const known = seen.get(digest.toString('hex'));
    if (known) return { ...known };
    const padded = Buffer.alloc(Math.ceil(data.length / 4096) * 4096);
    data.copy(padded);
    fs.writeSync(fd, padded);
    blobHash.update(padded);
    const c: ChunkInfo = {
      digest, blobIndex: 0, index: count++, flags: 0, compressedOffset: blobSize, compressedSize: data.length,
      uncompressedOffset: blobSize, uncompressedSize: data.length,
    };
    blobSize += padded.length;
    seen.set(digest.toString('hex'), c);
    return { ...c };
  };
  const nodes = new Map<string, Inode>();
  for (const [p, e] of snap) {
    const group = e.links?.join('\0');
    const linked = group ? byLinkGroup.get(group) : undefined;
    let inode: Inode;
    if (linked) {
      inode = linked;
    } else {
      const [sec, nsec] = e.mtime.split('.').map(Number);
      inode = newInode(e.type, e.mode, {
        uid: e.uid, gid: e.gid, mtime: sec, mtimeNsec: nsec, rdev: e.rdev,
        xattrs: new Map(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v, 'hex')])),
      });
      if (e.type === 'symlink') inode.target = e.target;
      if (e.type === 'file') {
        inode.size = e.size;
        const f = fs.openSync(path.join(src, p), 'r');
        try {
          for (let off = 0; off < e.size; off += CHUNK) {
            const n = fs.readSync(f, buf, 0, Math.min(CHUNK, e.size - off), off);
            inode.chunks!.push(writeChunk(Buffer.from(buf.subarray(0, n))));
          }
        } finally {
          fs.closeSync(f);
        }
      }
      if (group) byLinkGroup.set(group, inode);
    }
    nodes.set(p, inode);
    if (p !== '/') nodes.get(path.posix.dirname(p))!.children!.set(path.posix.basename(p), inode);
  }
  fs.closeSync(fd);
  const blob: BlobInfo = {
    blobId: blobHash.digest('hex'), compressor: 'none', digester: 'sha256', chunkSize: CHUNK, chunkCount: count,
    compressedSize: blobSize, uncompressedSize: blobSize, features: 1, ciOffset: 0, ciCompressedSize: 0,
    ciUncompressedSize: 0, ciCompressor: 'none',
  };
  return { root: nodes.get('/')!, blobs: [blob], chunkSize: CHUNK, digester: 'sha256', compressor: 'none', prefetch: ['/usr/bin'] };
}

describeWith(['root', 'erofs', 'loop'], 'Debian root filesystem as a RAFS v6 image', () => {
  let dir: string;
  let src: string;
  let srcSnap: TreeSnapshot;
  let image: RafsImage;
  let boot: Buffer;
  let mounted: Mounted | undefined;

  beforeAll(() => {
    src = debianRootfsDir();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'format-debian-'));
    srcSnap = snapshotTree(src);
    image = modelFromDir(src, srcSnap, path.join(dir, 'blob'));
    boot = encodeBootstrap(image);
    fs.writeFileSync(path.join(dir, 'bootstrap'), boot);
  }, 600_000);

  afterAll(() => {
    mounted?.unmount();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  test('python3 is in the tree', () => {
    expect(srcSnap.has('/usr/bin/python3')).toBe(true);
    expect(srcSnap.size).toBeGreaterThan(5000);
  });

  test('decode gives the model back', () => {
    const back = decodeBootstrap(boot);
    expect(back.root).toEqual(image.root);
    expect(back.prefetch).toEqual(['/usr/bin']);
  });

  test('fsck.erofs passes with the blob as device', () => {
    const r = fsckErofs(path.join(dir, 'bootstrap'), [path.join(dir, 'blob')]);
    expect({ ok: r.ok, output: r.output.slice(-2000) }).toMatchObject({ ok: true });
  });

  test('the kernel mount equals the source tree, mtimes included', () => {
    mounted = mountRafs(path.join(dir, 'bootstrap'), [path.join(dir, 'blob')]);
    expect(compareTrees(srcSnap, snapshotTree(mounted.dir), { mtime: true })).toEqual([]);
  }, 600_000);
});
