/**
 * The origin source: the blob in its home registry, read with Range GETs through the registry
 * client, which owns auth, redirects and the bounded retries of each request (its transport's
 * `retryLimit`, from nydusd's `retry_limit`).
 */
import type { BlobRange, ChunkSource, ReadContext } from './source';

/** What the origin needs of `RegistryClient` (src/registry/client.ts). */
export interface BlobRangeReader {
  getBlobRange(repo: string, digest: string, offset: number, length: number, opts?: { signal?: AbortSignal }): Promise<Buffer>;
}

export class OriginSource implements ChunkSource {
  constructor(
    private readonly client: BlobRangeReader,
    private readonly repo: string,
    readonly name = 'origin',
  ) {}

  async read(range: BlobRange, ctx?: ReadContext): Promise<Buffer> {
    const buf = await this.client.getBlobRange(this.repo, `sha256:${range.blobId}`, range.offset, range.length, { signal: ctx?.signal });
    if (buf.length !== range.length) throw new Error(`origin: short read of blob ${range.blobId}: ${buf.length} of ${range.length} bytes at ${range.offset}`);
    return buf;
  }
}
