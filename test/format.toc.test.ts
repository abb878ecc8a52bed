/**
 * Blob ToC and blob meta readers on upstream's own data: the ToC of a blob that carries its
 * bootstrap (tests/texture/toc), the zstd form of that blob (tests/texture/zstd), the blob meta of
 * the nydus 2.2 blob and of a zran image (tests/texture/zran). Values asserted are the ones upstream's
 * tests assert for the same files (ToC digest, entry sizes, 0xa3 chunks, 0x15 zran contexts).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeBlobMetaData, parseBlobMetaCacheFile, parseBlobMetaHeader, readBlobMeta, BLOB_META_HEADER_SIZE } from '../src/format/blob-meta';
import { decodeBootstrap } from '../src/format/decode';
import { FormatError, RafsImage } from '../src/format/model';
import { extractTocEntry, parseToc, Toc, TocEntry, tocTailSize } from '../src/format/toc';
import { walk } from '../src/format/walk';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';

const MORE = path.join(UPSTREAM_FIXTURES, 'more');
const TOC_BLOB_ID = '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca';
const tocBlob = fs.readFileSync(path.join(MORE, `toc--${TOC_BLOB_ID}`));
const tailOf = (b: Buffer): Buffer => b.subarray(b.length - tocTailSize(b.length));
const section = (b: Buffer, e: TocEntry): Buffer => b.subarray(e.compressedOffset, e.compressedOffset + e.compressedSize);
const entry = (t: Toc, name: string): TocEntry => t.entries.find((e) => e.name === name)!;
const chunkRows = (image: RafsImage) =>
  [...walk(image)].flatMap(([, i]) => i.chunks ?? []).map((c) => [c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize, c.index]);

describe('blob ToC', () => {
  const toc = parseToc(tailOf(tocBlob));

  test('entries, digest and size as upstream reads them', () => {
    expect(toc.entries.map((e) => [e.name, e.compressor, e.uncompressedSize])).toEqual([
      ['image.blob', 'none', 12288],
      ['blob.meta', 'none', 0x30],
      ['blob.meta.header', 'none', 0x1000],
      ['image.boot', 'zstd', 20480],
    ]);
    // upstream test_read_toc_list: TocLocation::with_digest(9010, 1024, [79, 223, 187, 54, ...])
    expect(toc.digest).toBe(Buffer.from([79, 223, 187, 54, 239, 116, 163, 198, 58, 40, 226, 171, 175, 165, 64, 68, 199, 89, 65, 85, 190, 182, 221, 173, 159, 54, 130, 92, 254, 88, 40, 108]).toString('hex'));
    expect(toc.size).toBe(1024);
    expect(tocBlob.length - toc.size).toBe(9010);
  });

  test('sections extract with their sha256; the bootstrap inside decodes', () => {
    expect(extractTocEntry(entry(toc, 'blob.meta'), section(tocBlob, entry(toc, 'blob.meta'))).length).toBe(0x30);
    expect(extractTocEntry(entry(toc, 'blob.meta.header'), section(tocBlob, entry(toc, 'blob.meta.header'))).length).toBe(0x1000);
    const boot = extractTocEntry(entry(toc, 'image.boot'), section(tocBlob, entry(toc, 'image.boot')));
    const image = decodeBootstrap(boot);
    expect([...walk(image)].map(([p]) => p)).toEqual(['/', '/error.rs', '/lib.rs', '/logger.rs']);
    expect(() => extractTocEntry(entry(toc, 'image.blob'), tocBlob.subarray(0, 2829))).toThrow(/chunk data region/);
  });

  test('a changed byte in a section, a wrong size or a damaged ToC is a FormatError', () => {
    const e = entry(toc, 'image.boot');
    const bad = Buffer.from(section(tocBlob, e));
    bad[bad.length - 20] ^= 0xff;
    expect(() => extractTocEntry(e, bad)).toThrow(FormatError);
    expect(() => extractTocEntry({ ...e, uncompressedSize: e.uncompressedSize - 1 }, section(tocBlob, e))).toThrow(/holds 20480 bytes, the entry says 20479/);
    const meta = entry(toc, 'blob.meta');
    const m = Buffer.from(section(tocBlob, meta));
    m[0] ^= 1;
    expect(() => extractTocEntry(meta, m)).toThrow(/sha256 of the section does not match/);
    expect(() => parseToc(tocBlob.subarray(0, 4096))).toThrow(FormatError);
    let seed = 7;
    for (let k = 0; k < 400; k++) {
      const t = Buffer.from(tailOf(tocBlob));
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      t[t.length - 1024 + (seed % 1024)] = seed & 0xff;
      try {
        parseToc(t);
      } catch (err) {
        expect(err).toBeInstanceOf(FormatError);
      }
    }
  });

  test('the zstd form of the blob: a zstd stream checked against the blob id (its sha256)', () => {
    const zst = fs.readFileSync(path.join(MORE, `zstd--${TOC_BLOB_ID}.zst`));
    const e: TocEntry = { name: 'whole', compressor: 'zstd', digest: Buffer.from(TOC_BLOB_ID, 'hex'), compressedOffset: 0, compressedSize: zst.length, uncompressedSize: 10034 };
    const out = extractTocEntry(e, zst);
    expect(out.equals(tocBlob)).toBe(true);
    expect(createHash('sha256').update(out).digest('hex')).toBe(TOC_BLOB_ID);
    expect(() => extractTocEntry({ ...e, digest: Buffer.alloc(32, 1) }, zst)).toThrow(/sha256/);
    expect(() => extractTocEntry({ ...e, uncompressedSize: 10000 }, zst)).toThrow(FormatError);
  });
});

describe('blob meta (chunk info array)', () => {
  test('v1 CI array of the ToC blob describes its chunks as the bootstrap does', () => {
    const toc = parseToc(tailOf(tocBlob));
    const image = decodeBootstrap(extractTocEntry(entry(toc, 'image.boot'), section(tocBlob, entry(toc, 'image.boot'))));
    const meta = readBlobMeta(image.blobs[0], (o, l) => tocBlob.subarray(o, o + l));
    expect(meta.header.ciEntries).toBe(3);
    expect(meta.chunks.map((c, i) => [c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize, i])).toEqual(chunkRows(image));
  });

  test('the nydus 2.2 blob: the blob meta agrees with the bootstrap; a header that disagrees with the blob table is refused', () => {
    const image = decodeBootstrap(fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot')));
    const blob = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', image.blobs[0].blobId));
    const meta = readBlobMeta(image.blobs[0], (o, l) => blob.subarray(o, o + l));
    expect(meta.chunks.map((c, i) => [c.compressedOffset, c.compressedSize, c.uncompressedOffset, c.uncompressedSize, i])).toEqual(chunkRows(image));
    expect(meta.chunks.every((c) => c.compressed)).toBe(true);
    expect(() => readBlobMeta({ ...image.blobs[0], chunkCount: 3 }, (o, l) => blob.subarray(o, o + l))).toThrow(/header chunk count 2 differs from the blob table's 3/);
    expect(() => readBlobMeta({ ...image.blobs[0], ciOffset: image.blobs[0].ciOffset + 8 }, (o, l) => blob.subarray(o, o + l))).toThrow(FormatError);
  });

  test('the zran blob meta (v2 entries and inflate contexts): counts as upstream asserts', () => {
    const file = fs.readFileSync(path.join(MORE, 'zran--233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta'));
    // The cache-file form: the uncompressed CI data rounded up to 4 KiB, then the header.
    const headerAt = Math.ceil(0xa1290 / 4096) * 4096;
    expect(file.length).toBe(headerAt + BLOB_META_HEADER_SIZE);
    const h = parseBlobMetaHeader(file.subarray(headerAt));
    expect([h.features, h.ciEntries, h.ciUncompressedSize, h.zranCount]).toEqual([0xf, 0xa3, 0xa1290, 0x15]);
    const d = decodeBlobMetaData(file.subarray(0, h.ciUncompressedSize), h, h.features);
    expect(d.chunks).toHaveLength(0xa3);
    expect(d.zranContexts!.length).toBe(0xa0348);
    expect(d.chunks.every((c) => c.zran && c.uncompressedOffset + c.uncompressedSize <= 0x16c6000 && c.compressedOffset + c.compressedSize <= 9839040)).toBe(true);
    for (let i = 1; i < d.chunks.length; i++) expect(d.chunks[i].uncompressedOffset).toBeGreaterThan(d.chunks[i - 1].uncompressedOffset);
    const bad = Buffer.from(file.subarray(headerAt));
    bad.writeUInt32LE(0, BLOB_META_HEADER_SIZE - 4);
    expect(() => parseBlobMetaHeader(bad)).toThrow(/blob meta header: bad magic/);
    expect(() => decodeBlobMetaData(file.subarray(0, 1000), h, h.features)).toThrow(FormatError);
  });
});

describe('blob meta cache files (<blob id>.blob.meta)', () => {
  test("upstream's zran cache file parses against a blob table entry that agrees with it, and not against one that differs", () => {
    const file = fs.readFileSync(path.join(MORE, 'zran--233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta'));
    const h = parseBlobMetaHeader(file.subarray(file.length - BLOB_META_HEADER_SIZE));
    const blob = {
      ...decodeBootstrap(fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'))).blobs[0],
      blobId: '233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a',
      features: h.features,
      chunkCount: h.ciEntries,
      ciCompressor: h.ciCompressor,
      ciOffset: h.ciOffset,
      ciCompressedSize: h.ciCompressedSize,
      ciUncompressedSize: h.ciUncompressedSize,
    };
    const meta = parseBlobMetaCacheFile(blob, file);
    expect([meta.chunks.length, meta.zranContexts!.length]).toEqual([0xa3, 0xa0348]);
    expect(meta.cacheFile().equals(file)).toBe(true);
    expect(() => parseBlobMetaCacheFile({ ...blob, ciOffset: blob.ciOffset + 1 }, file)).toThrow(/header CI offset \d+ differs from the blob table's/);
    expect(() => parseBlobMetaCacheFile(blob, file.subarray(4096))).toThrow(/meta file: \d+ bytes, expected \d+/);
  });

  test('the blob meta read from the 2.2 blob, written in cache-file form, reads back to the same chunks', () => {
    const image = decodeBootstrap(fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot')));
    const blob = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', image.blobs[0].blobId));
    const meta = readBlobMeta(image.blobs[0], (o, l) => blob.subarray(o, o + l));
    const file = meta.cacheFile();
    expect(file.length).toBe(4096 + BLOB_META_HEADER_SIZE);
    expect(file.subarray(4096).equals(blob.subarray(image.blobs[0].ciOffset + image.blobs[0].ciCompressedSize, image.blobs[0].ciOffset + image.blobs[0].ciCompressedSize + BLOB_META_HEADER_SIZE))).toBe(true);
    expect(parseBlobMetaCacheFile(image.blobs[0], file).chunks).toEqual(meta.chunks);
  });
});

describe('chunk details only in the blob meta (no chunk table in the bootstrap)', () => {
  /** The nydus 2.2 bootstrap with its chunk info table cut off, as images from before 2022-02 have it. */
  const withoutChunkTable = (b: Buffer): Buffer => {
    const out = Buffer.from(b);
    out.writeBigUInt64LE(0n, 1152 + 24);
    out.writeBigUInt64LE(0n, 1152 + 32);
    return out;
  };
  const boot = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));

  test('decoded from the blob meta and the blob.digest section, the chunks equal the chunk table ones', () => {
    const image = decodeBootstrap(boot);
    const blob = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', image.blobs[0].blobId));
    const toc = parseToc(tailOf(blob));
    const digests = extractTocEntry(entry(toc, 'blob.digest'), section(blob, entry(toc, 'blob.digest')));
    let asked = 0;
    const ext = decodeBootstrap(withoutChunkTable(boot), {
      externalChunks: (b) => {
        asked++;
        return { chunks: readBlobMeta(b, (o, l) => blob.subarray(o, o + l)).chunks, digests };
      },
    });
    expect(asked).toBe(1);
    const full = (img: RafsImage) => [...walk(img)].flatMap(([p, i]) => (i.chunks ?? []).map((c) => ({ p, ...c, digest: c.digest.toString('hex') })));
    expect(full(ext)).toEqual(full(image));
  });

  test('without the blob, or without chunk digests anywhere, it is a FormatError, never unverifiable chunks', () => {
    expect(() => decodeBootstrap(withoutChunkTable(boot))).toThrow(/missing from the chunk table \(its details are in the blob meta: give the blobs\)/);
    const image = decodeBootstrap(boot);
    const blob = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'blobs', image.blobs[0].blobId));
    expect(() =>
      decodeBootstrap(withoutChunkTable(boot), { externalChunks: (b) => ({ chunks: readBlobMeta(b, (o, l) => blob.subarray(o, o + l)).chunks }) }),
    ).toThrow(/no digest for chunk 0 of blob 0: neither the chunk table nor the blob \(INLINED_CHUNK_DIGEST\) has one, so it cannot be verified/);
  });
});
