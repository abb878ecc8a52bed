/**
 * OCI content digests ("sha256:<hex>", or "sha512:<hex>"): the digest of a buffer, and the check of
 * bytes against an expected digest (and size) as they pass. Every verification of a whole blob or
 * manifest in nydus-ts goes through DigestCheck, so the rule "wrong bytes are an error, never data"
 * is written once. Chunk digests of RAFS (sha256 / blake3 of a chunk) are src/format/digest.ts.
 */
import { createHash, Hash } from 'node:crypto';

const HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

/** The sha256 content digest of `data`, as registries address it. */
export function contentDigest(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Incremental check of a byte stream against the digest (and size) it is expected to have. */
export class DigestCheck {
  private readonly algorithm: string;
  private readonly hash: Hash;
  /** Bytes seen so far. */
  size = 0;

  /** Throws for a digest that is not sha256:<64 hex> or sha512:<128 hex>. */
  constructor(readonly expected: string, readonly expectedSize?: number) {
    const m = /^([a-z0-9]+):([0-9a-f]+)$/.exec(expected);
    if (!m || HEX_LENGTH[m[1]] !== m[2].length) throw new Error(`malformed or unsupported digest "${expected}" (want sha256:<64 hex> or sha512:<128 hex>)`);
    this.algorithm = m[1];
    this.hash = createHash(m[1]);
  }

  update(chunk: Buffer): this {
    this.hash.update(chunk);
    this.size += chunk.length;
    return this;
  }

  /**
   * Call once, after the last byte: undefined when the bytes are what was expected, else one
   * phrase naming the expected and the actual digest (or size).
   */
  mismatch(): string | undefined {
    const actual = `${this.algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.expected) return `content digest ${actual} (${this.size} bytes) does not match the expected ${this.expected}`;
    if (this.expectedSize !== undefined && this.size !== this.expectedSize) return `content is ${this.size} bytes, the descriptor says ${this.expectedSize}`;
    return undefined;
  }
}
