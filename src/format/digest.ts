/**
 * Chunk digests: the digest of a chunk's uncompressed bytes with the image's digester.
 * sha256 comes from node:crypto, blake3 from @noble/hashes (32-byte output, as upstream).
 */
import { createHash } from 'node:crypto';
import { blake3 } from '@noble/hashes/blake3';
import { Digester } from './model';

export const DIGEST_SIZE = 32;

export function chunkDigest(digester: Digester, data: Buffer): Buffer {
  switch (digester) {
    case 'sha256':
      return createHash('sha256').update(data).digest();
    case 'blake3': {
      const d = blake3(data);
      return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
    }
    default:
      throw new Error(`unsupported digester ${String(digester)}`);
  }
}

/** Lowercase hex of a digest. */
export function hex(buf: Uint8Array): string {
  return Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength).toString('hex');
}
