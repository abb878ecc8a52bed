/**
 * Chunk digests and compression: known vectors, raw fallback, every compressor upstream writes
 * (zstd, lz4_block, gzip, none) read back, and clean errors on bad input.
 */
import * as zlib from 'node:zlib';
import { CodecUnavailableError, compressChunk, decompressChunk, decompressorProblem } from '../src/format/codec';
import { Compressor } from '../src/format/model';
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

/** A raw LZ4 block as upstream's LZ4_compress_default writes it: lz4-napi's output minus its size prefix. */
function lz4Block(data: Buffer): Buffer {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const lz4 = require('lz4-napi') as { compressSync(d: Buffer): Buffer };
  const framed = lz4.compressSync(data);
  expect(framed.readUInt32LE(0)).toBe(data.length);
  return framed.subarray(4);
}

describe('lz4_block and gzip', () => {
  const text = Buffer.from('lazy nydus pulls chunks on demand; '.repeat(30000));

  test('every compressor upstream writes is readable here', () => {
    for (const c of ['none', 'lz4_block', 'gzip', 'zstd']) expect(decompressorProblem(c)).toBeNull();
    expect(decompressorProblem('brotli')).toMatch(/unknown compressor "brotli"/);
  });

  test('lz4_block: a raw block decodes to exactly the chunk', () => {
    const block = lz4Block(text);
    expect(block.length).toBeLessThan(text.length / 10);
    expect(decompressChunk('lz4_block', block, text.length, true).equals(text)).toBe(true);
  });

  test('lz4_block: corrupt, truncated or mis-sized blocks are FormatErrors, bounded by the chunk size', () => {
    const block = lz4Block(text);
    expect(() => decompressChunk('lz4_block', block.subarray(0, block.length - 7), text.length, true)).toThrow(FormatError);
    expect(() => decompressChunk('lz4_block', block, text.length - 1, true)).toThrow(FormatError);
    expect(() => decompressChunk('lz4_block', block, text.length + 1, true)).toThrow(FormatError);
    // A match (token 0x0f) whose offset points before the start of the output.
    expect(() => decompressChunk('lz4_block', Buffer.concat([Buffer.from([0x0f]), Buffer.alloc(3, 0xff)]), 1000, true)).toThrow(FormatError);
    expect(() => decompressChunk('lz4_block', block, 1 << 30, true)).toThrow(FormatError);
  });

  test('gzip: one member per chunk decodes; more output than the chunk table says is refused', () => {
    const member = zlib.gzipSync(text);
    expect(decompressChunk('gzip', member, text.length, true).equals(text)).toBe(true);
    expect(() => decompressChunk('gzip', member, text.length - 1, true)).toThrow(FormatError);
    expect(() => decompressChunk('gzip', member, text.length + 1, true)).toThrow(FormatError);
    expect(() => decompressChunk('gzip', member.subarray(0, member.length - 10), text.length, true)).toThrow(FormatError);
    expect(() => decompressChunk('gzip', Buffer.from('not gzip'), 10, true)).toThrow(FormatError);
  });

  test('a compressor without a decoder is CodecUnavailableError, not a FormatError about the bytes', () => {
    const err = (() => {
      try {
        decompressChunk('brotli' as Compressor, text, text.length, true);
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(CodecUnavailableError);
    expect(err).not.toBeInstanceOf(FormatError);
    expect((err as Error).message).toBe('compressor brotli cannot be decompressed here: unknown compressor "brotli"');
  });
});
