/**
 * The s3 / oss origin: a blob read is a ranged GET of `<object_prefix><blob id>` in the bucket
 * (object-store.ts owns signing and the bounded retries, from nydusd's `retry_limit`). Like every
 * source it only moves bytes; the pipeline verifies them.
 */
import { ObjectStore, ObjectStoreConfig } from './object-store';
import type { BlobRange, ChunkSource, ReadContext } from './source';

export class ObjectStoreSource implements ChunkSource {
  readonly name: string;
  readonly store: ObjectStore;

  constructor(cfg: ObjectStoreConfig) {
    this.store = new ObjectStore(cfg);
    this.name = `${cfg.kind}:${cfg.bucketName}`;
  }

  read(range: BlobRange, ctx?: ReadContext): Promise<Buffer> {
    return this.store.getRange(range.blobId, range.offset, range.length, ctx?.signal);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
