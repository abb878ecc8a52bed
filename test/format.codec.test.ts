/** Chunk digests and compression: known vectors, raw fallback, and clean errors on bad input. */
import { compressChunk, decompressChunk } from '../src/format/codec';
import { chunkDigest, hex } from '../src/format/digest';
import { FormatError } from '../src/format/model';
import * as zstd from 'zstd-napi';
import { randomBytes } from 'node:crypto';

describe('chunkDigest', () => {
  test('sha256 and blake3 known vectors', () => {
    expect(hex(chunkDigest('sha256', Buffer.from('abc')))).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(hex(chunkDigest('blake3', Buffer.from('abc')))).toBe('6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
    expect(chunkDigest('blake3', Buffer.alloc(0)).length).toBe(32);
  });
});

describe('compressChunk / decompressChunk', () => {
  const text = Buffer.from('nydus '.repeat(50000));
  const noise = randomBytes(65536);

  test('zstd round trip of compressible data', () => {
    const c = compressChunk('zstd', text);
    expect(c.compressed).toBe(true);
    expect(c.data.length).toBeLessThan(text.length / 10);
    expect(decompressChunk('zstd', c.data, text.length, true).equals(text)).toBe(true);
  });

  test('incompressible data is stored raw and read back as is', () => {
    const c = compressChunk('zstd', noise);
    expect(c.compressed).toBe(false);
    expect(c.data.equals(noise)).toBe(true);
    expect(decompressChunk('zstd', c.data, noise.length, false).equals(noise)).toBe(true);
  });

  test('none stores raw', () => {
    expect(compressChunk('none', text)).toEqual({ data: text, compressed: false });
    expect(decompressChunk('none', text, text.length, false)).toBe(text);
  });

  test('garbage, truncated frames and wrong sizes are FormatErrors', () => {
    const c = compressChunk('zstd', text).data;
    expect(() => decompressChunk('zstd', Buffer.from('not zstd at all'), 100, true)).toThrow(FormatError);
    expect(() => decompressChunk('zstd', c.subarray(0, c.length - 5), text.length, true)).toThrow(FormatError);
    expect(() => decompressChunk('zstd', c, text.length - 1, true)).toThrow(FormatError);
    expect(() => decompressChunk('zstd', c, text.length + 1, true)).toThrow(FormatError);
    expect(() => decompressChunk('none', text, text.length + 1, false)).toThrow(FormatError);
    expect(() => decompressChunk('zstd', c, 1 << 30, true)).toThrow(FormatError);
    expect(() => decompressChunk('lz4_block', c, text.length, true)).toThrow(FormatError);
  });

  test('a frame without a declared size cannot make it allocate more than asked', () => {
    // A streaming frame (no content size) holding 300000 bytes, decoded into 1000: error, not growth.
    const cs = new zstd.Compressor();
    cs.setParameters({ compressionLevel: 3, contentSizeFlag: false });
    const frame = cs.compress(text);
    expect(() => decompressChunk('zstd', frame, 1000, true)).toThrow(FormatError);
    expect(decompressChunk('zstd', frame, text.length, true).equals(text)).toBe(true);
  });
});
