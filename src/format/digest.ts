/**
 * Chunk digests and chunk verification, the one place where stored chunk bytes become trusted
 * uncompressed bytes.
 *
 *  - `chunkDigest(digester, data)`: the digest of a chunk's uncompressed bytes with the image's
 *    digester; sha256 comes from node:crypto, blake3 from @napi-rs/blake-hash (the reference Rust
 *    implementation, SIMD: ten times node's sha256 here, docs/dependencies.md), 32 bytes as upstream;
 *  - `digestMatches(digester, data, chunk)`: whether uncompressed bytes are that chunk's;
 *  - `openChunk(blob, chunk, stored)`: the chunk's uncompressed bytes from its stored (maybe
 *    compressed) bytes, only when they decompress to exactly its size and match its digest; otherwise
 *    a `ChunkProblem` saying which of the two failed. Every reader of blob bytes (the fetch pipeline,
 *    the peer server's upstream check, the builder's blob reader) goes through it; `clock`, when
 *    given, accumulates the milliseconds spent decompressing and hashing.
 */
import { createHash } from 'node:crypto';
import { blake3 } from '@napi-rs/blake-hash';
import { decompressChunk } from './codec';
import { BlobInfo, CHUNK_COMPRESSED, ChunkInfo, Digester } from './model';

export const DIGEST_SIZE = 32;

export function chunkDigest(digester: Digester, data: Buffer): Buffer {
  switch (digester) {
    case 'sha256':
      return createHash('sha256').update(data).digest();
    case 'blake3':
      return blake3(data);
    default:
      throw new Error(`unsupported digester ${String(digester)}`);
  }
}

/** True when `data` (uncompressed) has `chunk`'s size and digest. */
export function digestMatches(digester: Digester, data: Buffer, chunk: ChunkInfo): boolean {
  return data.length === chunk.uncompressedSize && chunkDigest(digester, data).equals(chunk.digest);
}

/** Milliseconds of CPU spent turning stored chunks into verified ones. */
export interface VerifyClock {
  decompressMs: number;
  verifyMs: number;
}

/** Why stored bytes are not the chunk: they did not decompress (to its size), or the digest differs. */
export class ChunkProblem {
  constructor(
    public readonly kind: 'decompress' | 'digest',
    public readonly message: string,
  ) {}
}

/** `chunk`'s verified uncompressed bytes from its `stored` bytes, or the problem with them. */
export function openChunk(blob: Pick<BlobInfo, 'compressor' | 'digester'>, chunk: ChunkInfo, stored: Buffer, clock?: VerifyClock): Buffer | ChunkProblem {
  const t0 = clock ? performance.now() : 0;
  let data: Buffer;
  try {
    data = decompressChunk(blob.compressor, stored, chunk.uncompressedSize, (chunk.flags & CHUNK_COMPRESSED) !== 0);
  } catch (e) {
    return new ChunkProblem('decompress', `cannot decompress: ${(e as Error).message}`);
  }
  const t1 = clock ? performance.now() : 0;
  if (clock) clock.decompressMs += t1 - t0;
  if (data.length !== chunk.uncompressedSize) return new ChunkProblem('decompress', `decompressed to ${data.length} bytes, expected ${chunk.uncompressedSize}`);
  const ok = chunkDigest(blob.digester, data).equals(chunk.digest);
  if (clock) clock.verifyMs += performance.now() - t1;
  return ok ? data : new ChunkProblem('digest', `${blob.digester} digest mismatch`);
}

/** Lowercase hex of a digest. */
export function hex(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('hex');
}
