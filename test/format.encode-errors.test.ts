/** encodeBootstrap refuses models it cannot write faithfully, with a FormatError naming where. */
import { encodeBootstrap } from '../src/format/encode';
import { decodeBootstrap } from '../src/format/decode';
import { BlobInfo, ChunkInfo, FormatError, Inode, RafsImage, newInode } from '../src/format/model';

const blob = (id = 'a'.repeat(64)): BlobInfo => ({
  blobId: id, compressor: 'none', digester: 'sha256', chunkSize: 4096, chunkCount: 4, compressedSize: 1 << 20,
  uncompressedSize: 1 << 20, features: 1, ciOffset: 0, ciCompressedSize: 0, ciUncompressedSize: 0, ciCompressor: 'none',
});
const chunk = (over: Partial<ChunkInfo> = {}): ChunkInfo => ({
  digest: Buffer.alloc(32, 9), blobIndex: 0, index: 0, flags: 0, compressedOffset: 0, compressedSize: 10,
  uncompressedOffset: 0, uncompressedSize: 10, ...over,
});

function image(mod: (root: Inode, img: RafsImage) => void): RafsImage {
  const root = newInode('dir', 0o755);
  root.children!.set('f', newInode('file', 0o644, { size: 10, chunks: [chunk()] }));
  const img: RafsImage = { root, blobs: [blob()], chunkSize: 4096, digester: 'sha256', compressor: 'none', prefetch: [] };
  mod(root, img);
  return img;
}

const cases: Array<[string, (root: Inode, img: RafsImage) => void, RegExp]> = [
  ['chunk size not a power of two', (_r, i) => (i.chunkSize = 5000), /^image: chunk size 5000/],
  ['too many blobs', (_r, i) => (i.blobs = Array.from({ length: 255 }, () => blob())), /^image: 255 blobs/],
  ['bad blob id', (_r, i) => (i.blobs = [blob('xyz')]), /^blob 0: blob id/],
  ['blob size not an integer', (_r, i) => (i.blobs[0].compressedSize = -1), /^blob 0: compressedSize/],
  ['unknown compressor', (_r, i) => ((i as { compressor: string }).compressor = 'brotli'), /^image: unknown compressor/],
  ['slash in a name', (r) => r.children!.set('a/b', newInode('fifo', 0o644)), /^\/a\/b: invalid entry name/],
  ['dot name', (r) => r.children!.set('..', newInode('fifo', 0o644)), /invalid entry name/],
  ['256-byte name', (r) => r.children!.set('n'.repeat(256), newInode('fifo', 0o644)), /invalid entry name/],
  ['directory cycle', (r) => r.children!.set('loop', r), /^\/loop: directory reachable by two names/],
  ['directory hard link', (r) => {
    const d = newInode('dir', 0o755);
    r.children!.set('d1', d);
    r.children!.set('d2', d);
  }, /directory reachable by two names/],
  ['missing chunks', (r) => r.children!.set('g', newInode('file', 0o644, { size: 5000, chunks: [chunk()] })), /^\/g: 1 chunks for 5000 bytes, expected 2/],
  ['wrong chunk size', (r) => r.children!.set('g', newInode('file', 0o644, { size: 11, chunks: [chunk()] })), /^\/g chunk 0: uncompressed size 10, expected 11/],
  ['blob index out of range', (r) => r.children!.set('g', newInode('file', 0o644, { size: 10, chunks: [chunk({ blobIndex: 3 })] })), /blob index 3 not in the blob table/],
  ['chunk index over 24 bits', (r) => r.children!.set('g', newInode('file', 0o644, { size: 10, chunks: [chunk({ index: 1 << 24 })] })), /chunk index 16777216 out of range/],
  ['unaligned uncompressed offset', (r) => r.children!.set('g', newInode('file', 0o644, { size: 10, chunks: [chunk({ index: 1, uncompressedOffset: 100 })] })), /not a 4 KiB aligned block address/],
  ['two different chunks with one index', (r) => r.children!.set('g', newInode('file', 0o644, { size: 10, chunks: [chunk({ digest: Buffer.alloc(32, 1) })] })), /conflicts with another chunk/],
  ['short digest', (r) => r.children!.set('g', newInode('file', 0o644, { size: 10, chunks: [chunk({ index: 2, digest: Buffer.alloc(5) })] })), /digest of 5 bytes/],
  ['empty symlink', (r) => r.children!.set('l', newInode('symlink', 0o777, { target: '' })), /^\/l: symlink target of 0 bytes/],
  ['4096-byte symlink', (r) => r.children!.set('l', newInode('symlink', 0o777, { target: 'x'.repeat(4096) })), /symlink target of 4096 bytes/],
  ['xattr without a known prefix', (r) => r.children!.get('f')!.xattrs.set('foo.bar', Buffer.from('1')), /^\/f: xattr "foo.bar" has no EROFS name prefix/],
  ['xattr value over 64 KiB', (r) => r.children!.get('f')!.xattrs.set('user.big', Buffer.alloc(70000)), /value is larger than 65535/],
  ['prefetch path not in the tree', (_r, i) => (i.prefetch = ['/nope']), /^prefetch table: prefetch path "\/nope"/],
  ['uid over 32 bits', (r) => (r.children!.get('f')!.uid = 2 ** 32), /uid\/gid 4294967296\/0 out of range/],
  ['unknown inode kind', (r) => r.children!.set('k', { ...newInode('fifo', 0), kind: 'door' as never }), /unknown inode kind door/],
];

describe('encodeBootstrap input validation', () => {
  test('the base model encodes and decodes', () => {
    const img = image(() => undefined);
    expect(decodeBootstrap(encodeBootstrap(img)).root).toEqual(img.root);
  });

  test.each(cases)('%s', (_name, mod, message) => {
    const img = image(mod);
    let err: unknown;
    try {
      encodeBootstrap(img);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FormatError);
    expect((err as Error).message).toMatch(message);
  });
});
