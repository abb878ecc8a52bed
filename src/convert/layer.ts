/**
 * One source layer -> one nydus layer: the layer blob is streamed from the source registry
 * straight into the builder (no temp copy of the source). The registry client checks its digest
 * and size on the way and holds the last bytes back until they verify; the build only counts once
 * the whole blob went through, so unverified bytes never become a pushed blob.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Transform, pipeline } from 'node:stream';
import { createLayer, CreateResult } from '../builder';
import type { RafsImage } from '../format/model';
import type { RegistryClient } from '../registry/client';
import { Descriptor, isGzipLayer, isPlainTarLayer } from '../registry/media';

export interface BuildSettings {
  compressor: 'zstd' | 'none';
  chunkSize: number;
  digester: 'sha256' | 'blake3';
  chunkDict?: RafsImage;
  prefetchFiles?: string[];
}

export async function convertLayer(
  client: RegistryClient, repo: string, desc: Descriptor, index: number, workDir: string, build: BuildSettings,
  onBytes: (bytes: number) => void,
): Promise<CreateResult> {
  const where = `layer ${index + 1} (${desc.digest})`;
  const gzip = isGzipLayer(desc.mediaType);
  if (!gzip && !isPlainTarLayer(desc.mediaType)) throw new Error(`${where}: unsupported layer media type ${desc.mediaType}`);
  const source = await client.getBlob(repo, desc.digest, { size: desc.size });
  let size = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      size += chunk.length;
      onBytes(size);
      cb(null, chunk);
    },
  });
  const piped = pipeline(source, tap, () => undefined);
  const blobDir = path.join(workDir, 'blobs');
  fs.mkdirSync(blobDir, { recursive: true });
  let result: CreateResult;
  try {
    result = await createLayer({
      source: { kind: 'tar', stream: piped, gzip },
      bootstrapPath: path.join(workDir, `layer-${index + 1}.boot`),
      blobDir,
      compressor: build.compressor,
      chunkSize: build.chunkSize,
      digester: build.digester,
      chunkDict: build.chunkDict,
      prefetchFiles: build.prefetchFiles,
    });
  } catch (e) {
    source.destroy();
    throw new Error(`${where}: ${(e as Error).message}`);
  }
  // The source ends only after its digest verified; a builder that stopped reading early has not.
  if (!piped.readableEnded) throw new Error(`${where}: the builder stopped reading after ${size} of ${desc.size} bytes, so the blob was not verified`);
  return result;
}
