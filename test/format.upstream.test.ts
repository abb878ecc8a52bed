/**
 * Compatibility with images written by upstream nydus-image 2.2: decode lists exactly the tree the
 * kernel shows when it mounts the bootstrap, and every chunk of its blob decompresses (zstd) and
 * matches its blake3 digest.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { decompressChunk } from '../src/format/codec';
import { chunkDigest, hex } from '../src/format/digest';
import { walk } from '../src/format/walk';
import { CHUNK_COMPRESSED, RafsImage } from '../src/format/model';
import { mountRafs, snapshotTree, Mounted } from './helpers/erofs';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { testWith } from './helpers/capabilities';

const BOOT = path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot');

describe('upstream rafs-v6-2.2.boot', () => {
  let image: RafsImage;
  let mounted: Mounted | undefined;

  beforeAll(() => {
    image = decodeBootstrap(fs.readFileSync(BOOT));
  });
  afterAll(() => mounted?.unmount());

  test('superblock and blob table', () => {
    expect(image.chunkSize).toBe(0x100000);
    expect(image.compressor).toBe('zstd');
    expect(image.digester).toBe('blake3');
    expect(image.blobs.map((b) => [b.blobId, b.compressor, b.digester, b.chunkCount])).toEqual([
      ['be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef', 'zstd', 'blake3', 2],
    ]);
  });

  testWith(['root', 'erofs', 'loop'], 'decode lists the tree the kernel shows', () => {
    mounted = mountRafs(BOOT, []);
    const snap = snapshotTree(mounted.dir, -1);
    const decoded = [...walk(image)].map(([p, i]) => ({
      p, type: i.kind, mode: i.mode, uid: i.uid, gid: i.gid, size: i.kind === 'dir' ? 0 : i.size,
      mtime: `${i.mtime}.${String(i.mtimeNsec).padStart(9, '0')}`, target: i.target,
      xattrs: Object.fromEntries([...i.xattrs].map(([k, v]) => [k, v.toString('hex')])),
    }));
    const kernel = [...snap].map(([p, e]) => ({
      p, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.type === 'dir' ? 0 : e.size, mtime: e.mtime,
      target: e.target, xattrs: e.xattrs,
    }));
    expect(decoded.map((d) => d.p)).toEqual(['/', '/lib.rs', '/sync_io.rs']);
    expect(decoded).toEqual(kernel);
  });

  test('every chunk of the blob decompresses and matches its blake3 digest', () => {
    const blob = image.blobs[0];
    const data = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', blob.blobId));
    let checked = 0;
    for (const [p, inode] of walk(image)) {
      for (const c of inode.chunks ?? []) {
        const raw = data.subarray(c.compressedOffset, c.compressedOffset + c.compressedSize);
        expect(raw.length).toBe(c.compressedSize);
        const plain = decompressChunk(blob.compressor, raw, c.uncompressedSize, (c.flags & CHUNK_COMPRESSED) !== 0);
        expect({ p, digest: hex(chunkDigest(blob.digester, plain)) }).toEqual({ p, digest: hex(c.digest) });
        checked++;
      }
    }
    expect(checked).toBe(2);
  });
});
