/**
 * Chunk compression. Writing: one zstd frame per chunk at level 3, like upstream's `zstd::bulk`; a
 * chunk whose compressed form is not smaller than the input is stored raw and flagged uncompressed.
 * Reading: every compressor upstream writes into a blob (`none`, `lz4_block`, `gzip`, `zstd`).
 *
 * Contract of `decompressChunk`: returns exactly `uncompressedSize` bytes or throws. Output buffers
 * are sized from the chunk table, never from the input, so a corrupt or hostile chunk cannot make
 * us allocate more than the bootstrap says. Bad input throws `FormatError`; a compressor this process
 * cannot decompress at all throws `CodecUnavailableError` (a local limitation, not bad bytes), and
 * `decompressorProblem` says so up front, so callers refuse such an image before fetching anything.
 */
import * as zlib from 'node:zlib';
import * as zstd from 'zstd-napi';
import * as binding from 'zstd-napi/binding';
import { Compressor, FormatError } from './model';

export const ZSTD_LEVEL = 3;
/** RAFS_MAX_CHUNK_SIZE: no chunk is larger, compressed or not. */
export const MAX_CHUNK_SIZE = 16 << 20;

/** This process has no decoder for the compressor: no byte of such a chunk can be judged. */
export class CodecUnavailableError extends Error {
  constructor(readonly compressor: string, reason: string) {
    super(`compressor ${compressor} cannot be decompressed here: ${reason}`);
    this.name = 'CodecUnavailableError';
  }
}

let dctx: binding.DCtx | undefined;

/** The part of lz4-napi we use: lz4_flex's "size-prepended" block decoder. */
interface Lz4Napi {
  uncompressSync(data: Uint8Array): Buffer;
}
let lz4: Lz4Napi | Error | undefined;

function lz4Module(): Lz4Napi | Error {
  if (lz4 === undefined) {
    try {
      // Loaded on first use: images without lz4 chunks never need the native addon.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      lz4 = require('lz4-napi') as Lz4Napi;
    } catch (e) {
      lz4 = new Error(`the lz4-napi package is not installed or does not load (${(e as Error).message.split('\n')[0]})`);
    }
  }
  return lz4;
}

/** Why chunks compressed with `c` cannot be read in this process, or null when they can. */
export function decompressorProblem(c: string): string | null {
  switch (c) {
    case 'none':
    case 'zstd':
    case 'gzip':
      return null;
    case 'lz4_block': {
      const m = lz4Module();
      return m instanceof Error ? m.message : null;
    }
    default:
      return `unknown compressor ${JSON.stringify(c)}`;
  }
}

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
  if (!compressed) return decompressAny('none', data, uncompressedSize, MAX_CHUNK_SIZE);
  return decompressAny(c, data, uncompressedSize, MAX_CHUNK_SIZE);
}

/**
 * Exactly `size` bytes out of `data` compressed with `c`; `limit` bounds `size` (chunks: 16 MiB;
 * metadata such as a blob meta CI array may be larger). Same errors as `decompressChunk`.
 */
export function decompressAny(c: Compressor, data: Buffer, size: number, limit: number): Buffer {
  if (!Number.isSafeInteger(size) || size < 0 || size > limit) {
    throw new FormatError(`invalid uncompressed size ${size}`, 'chunk');
  }
  let out: Buffer;
  switch (c) {
    case 'none':
      if (data.length !== size) throw new FormatError(`stored chunk has ${data.length} bytes, expected ${size}`, 'chunk');
      return data;
    case 'zstd':
      out = zstdDecompress(data, size);
      break;
    case 'lz4_block':
      out = lz4Decompress(data, size);
      break;
    case 'gzip':
      out = gzipDecompress(data, size);
      break;
    default: {
      const problem = decompressorProblem(c);
      throw new CodecUnavailableError(String(c), problem ?? 'no decoder');
    }
  }
  if (out.length !== size) {
    throw new FormatError(`${c} chunk holds ${out.length} bytes, expected ${size}`, 'chunk');
  }
  return out;
}

function zstdDecompress(data: Buffer, size: number): Buffer {
  let declared: number | null;
  try {
    declared = binding.getFrameContentSize(data);
  } catch {
    throw new FormatError('not a zstd frame', 'chunk');
  }
  if (declared !== null && declared !== size) {
    throw new FormatError(`zstd frame declares ${declared} bytes, expected ${size}`, 'chunk');
  }
  const out = Buffer.allocUnsafe(size);
  let n: number;
  try {
    dctx ??= new binding.DCtx();
    n = dctx.decompress(out, data);
  } catch (e) {
    throw new FormatError(`zstd: ${(e as Error).message}`, 'chunk');
  }
  return n === size ? out : out.subarray(0, n);
}

/**
 * A raw LZ4 block (no frame, no size header: what upstream's LZ4_compress_default writes). lz4-napi
 * wants the decoded size as a u32 LE prefix; we supply the chunk table's size, so the decoder's
 * output buffer is bounded by the bootstrap, not by the input.
 */
function lz4Decompress(data: Buffer, size: number): Buffer {
  const m = lz4Module();
  if (m instanceof Error) throw new CodecUnavailableError('lz4_block', m.message);
  const framed = Buffer.allocUnsafe(4 + data.length);
  framed.writeUInt32LE(size, 0);
  data.copy(framed, 4);
  try {
    return m.uncompressSync(framed);
  } catch (e) {
    throw new FormatError(`lz4_block: ${(e as Error).message}`, 'chunk');
  }
}

/** One gzip member per chunk (upstream: flate2 GzEncoder); output capped at the expected size. */
function gzipDecompress(data: Buffer, size: number): Buffer {
  try {
    return zlib.gunzipSync(data, { maxOutputLength: Math.max(size, 1) });
  } catch (e) {
    throw new FormatError(`gzip: ${(e as Error).message}`, 'chunk');
  }
}
