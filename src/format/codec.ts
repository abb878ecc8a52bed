/**
 * Chunk compression. One zstd frame per chunk at level 3, like upstream's `zstd::bulk`. A chunk
 * whose compressed form is not smaller than the input is stored raw and flagged uncompressed.
 * Decompression writes into a buffer of exactly the expected size, so a corrupt or hostile frame
 * can never make us allocate more than the chunk table says.
 */
import * as zstd from 'zstd-napi';
import * as binding from 'zstd-napi/binding';
import { Compressor, FormatError } from './model';

export const ZSTD_LEVEL = 3;
/** RAFS_MAX_CHUNK_SIZE: no chunk is larger, compressed or not. */
export const MAX_CHUNK_SIZE = 16 << 20;

let dctx: binding.DCtx | undefined;

export function compressChunk(c: Compressor, data: Buffer): { data: Buffer; compressed: boolean } {
  switch (c) {
    case 'none':
      return { data, compressed: false };
    case 'zstd': {
      const out = zstd.compress(data, { compressionLevel: ZSTD_LEVEL });
      return out.length < data.length ? { data: out, compressed: true } : { data, compressed: false };
    }
    default:
      throw new FormatError(`compressor ${c} is not supported for writing`, 'chunk');
  }
}

export function decompressChunk(c: Compressor, data: Buffer, uncompressedSize: number, compressed: boolean): Buffer {
  if (!Number.isSafeInteger(uncompressedSize) || uncompressedSize < 0 || uncompressedSize > MAX_CHUNK_SIZE) {
    throw new FormatError(`invalid uncompressed size ${uncompressedSize}`, 'chunk');
  }
  if (!compressed || c === 'none') {
    if (data.length !== uncompressedSize) {
      throw new FormatError(`stored chunk has ${data.length} bytes, expected ${uncompressedSize}`, 'chunk');
    }
    return data;
  }
  if (c !== 'zstd') throw new FormatError(`compressor ${c} is not supported for reading`, 'chunk');
  let declared: number | null;
  try {
    declared = binding.getFrameContentSize(data);
  } catch {
    throw new FormatError('not a zstd frame', 'chunk');
  }
  if (declared !== null && declared !== uncompressedSize) {
    throw new FormatError(`zstd frame declares ${declared} bytes, expected ${uncompressedSize}`, 'chunk');
  }
  const out = Buffer.allocUnsafe(uncompressedSize);
  let n: number;
  try {
    dctx ??= new binding.DCtx();
    n = dctx.decompress(out, data);
  } catch (e) {
    throw new FormatError(`zstd: ${(e as Error).message}`, 'chunk');
  }
  if (n !== uncompressedSize) {
    throw new FormatError(`zstd frame holds ${n} bytes, expected ${uncompressedSize}`, 'chunk');
  }
  return out;
}
