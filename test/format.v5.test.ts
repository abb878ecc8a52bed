/**
 * RAFS v5 bootstraps written by upstream nydus-image decode into the image model: the tree equals
 * the `tree -J` listing upstream's test recorded (`.result`), every chunk of the blob decompresses
 * (none or lz4_block) to its digest (sha256 or blake3), every file's content has the recorded md5,
 * hard links share one inode, and a corrupted bootstrap gives a FormatError, never a crash or hang.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BlobReader } from '../src/builder/blob-reader';
import { decodeBootstrap } from '../src/format/decode';
import { CHUNK_COMPRESSED, FormatError, RafsImage } from '../src/format/model';
import { lookup, walk } from '../src/format/walk';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { readV5Result, treeJson } from './helpers/v5-result';

const V5 = path.join(UPSTREAM_FIXTURES, 'v5');
const BLOBS = path.join(V5, 'blobs');
const IMAGES = [
  { file: 'sha256-nocompress-repeatable', digester: 'sha256', compressor: 'none', blob: '7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00', result: 'sha256-nocompress-repeatable.result' },
  { file: 'blake3-lz4_block-non_repeatable', digester: 'blake3', compressor: 'none', blob: '7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00', result: 'blake3-lz4_block-non_repeatable.result' },
  { file: 'blake3-lz4_block-2020', digester: 'blake3', compressor: 'lz4_block', blob: 'd7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac', result: 'blake3-lz4_block-non_repeatable.result' },
] as const;

function listing(image: RafsImage) {
  return [...walk(image)].map(([p, i]) => ({ path: p === '/' ? '' : p.slice(1), kind: i.kind, target: i.target }));
}

describe.each(IMAGES)('upstream v5 image $file', (fx) => {
  let image: RafsImage;
  beforeAll(() => {
    image = decodeBootstrap(fs.readFileSync(path.join(V5, fx.file)));
  });

  test('superblock facts and blob table', () => {
    expect(image.rafsVersion).toBe(5);
    expect(image.chunkSize).toBe(1 << 20);
    expect([image.digester, image.compressor]).toEqual([fx.digester, fx.compressor]);
    expect(image.blobs.map((b) => [b.blobId, b.compressor, b.digester])).toEqual([[fx.blob, fx.compressor, fx.digester]]);
  });

  test('the tree equals the listing upstream recorded', () => {
    const want = readV5Result(path.join(V5, fx.result));
    // (The listing's own summary counts symlinks by what their targets were on upstream's host,
    // so the tree itself is what is compared.)
    expect(treeJson(listing(image))).toEqual(want.root);
  });

  test('hard links are one inode', () => {
    const a = lookup(image, '/hardlink-test/foo');
    expect(a?.kind).toBe('file');
    expect(lookup(image, '/hardlink-test/test.sh')).toBe(a);
    expect(lookup(image, '/normal-file-test/test.sh')).toBe(a);
  });

  test('every chunk verifies and every file has the recorded md5', () => {
    const want = readV5Result(path.join(V5, fx.result)).md5;
    const reader = new BlobReader(image, BLOBS);
    const got = new Map<string, string>();
    let compressed = 0;
    try {
      for (const [p, inode] of walk(image)) {
        if (inode.kind !== 'file') continue;
        const h = createHash('md5');
        for (const c of inode.chunks!) {
          h.update(reader.read(c));
          if (c.flags & CHUNK_COMPRESSED) compressed++;
        }
        got.set(p, h.digest('hex'));
      }
    } finally {
      reader.close();
    }
    expect(Object.fromEntries(got)).toEqual(Object.fromEntries(want));
    // The lz4 image really exercises the lz4_block decoder.
    if (fx.compressor === 'lz4_block') expect(compressed).toBeGreaterThan(5);
    else expect(compressed).toBe(0);
  });

  test('distinct chunks have distinct indexes inside the blob', () => {
    const byIndex = new Map<number, string>();
    for (const [, inode] of walk(image)) {
      for (const c of inode.chunks ?? []) {
        const key = `${c.compressedOffset}:${c.uncompressedOffset}:${c.digest.toString('hex')}`;
        expect(byIndex.get(c.index) ?? key).toBe(key);
        byIndex.set(c.index, key);
      }
    }
    expect(byIndex.size).toBe(23);
    expect(image.blobs[0].chunkCount).toBeGreaterThanOrEqual(23);
  });
});

test('the 2020 image stores owners explicitly; the 2022 ones leave them to the daemon', () => {
  const old = decodeBootstrap(fs.readFileSync(path.join(V5, 'blake3-lz4_block-2020')));
  expect(old.explicitUidGid).toBe(true);
  expect([old.root.uid, old.root.gid]).toEqual([1000, 1000]);
  expect(decodeBootstrap(fs.readFileSync(path.join(V5, 'sha256-nocompress-repeatable'))).explicitUidGid).toBe(false);
});

test('a v5 superblock over inode records that are not RafsV5Inode is refused at the first record', () => {
  const buf = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'more', 'bootstrap--nydusd_daemon_test_bootstrap'));
  expect(() => decodeBootstrap(buf)).toThrow(FormatError);
  expect(() => decodeBootstrap(buf)).toThrow(/^v5 inode @75592 \(slot 1\): /);
});

test.each(['blake3-lz4_block-2020', 'sha256-nocompress-repeatable'])('corrupted copies of %s give a FormatError or a valid image, quickly', (file) => {
  const orig = fs.readFileSync(path.join(V5, file));
  let seed = 12345;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let errors = 0;
  for (let k = 0; k < 400; k++) {
    const b = Buffer.from(orig);
    if (k % 5 === 0) {
      // Truncation anywhere.
      const cut = rnd(b.length);
      const t = b.subarray(0, cut);
      try {
        decodeBootstrap(t);
      } catch (e) {
        expect(e).toBeInstanceOf(FormatError);
        errors++;
      }
      continue;
    }
    // Random bytes in the superblock's used part or in the metadata after it.
    const n = 1 + rnd(4);
    for (let i = 0; i < n; i++) {
      const at = k % 3 === 0 ? rnd(80) : 8192 + rnd(b.length - 8192);
      b[at] = rnd(256);
    }
    const t0 = Date.now();
    try {
      const img = decodeBootstrap(b);
      expect([...walk(img)].length).toBeGreaterThan(0);
    } catch (e) {
      if (!(e instanceof FormatError)) throw new Error(`case ${k}: ${(e as Error).stack}`);
      errors++;
    }
    expect(Date.now() - t0).toBeLessThan(2000);
  }
  expect(errors).toBeGreaterThan(60);
});
