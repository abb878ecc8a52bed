/**
 * The bootstrap layer: a gzip'd tar holding the directory `image` (0755) and `image/image.boot`
 * (0444), as upstream's converter packs it; deterministic (zero mtimes, root owner) so the same
 * bootstrap always gives the same layer digest.
 */
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tarStream from 'tar-stream';
import { contentDigest } from '../registry/content-digest';
import { BOOTSTRAP_PATH_IN_TAR } from './nydus-manifest';

export interface BootstrapLayer {
  /** The tar.gz bytes. */
  data: Buffer;
  digest: string;
  /** sha256 of the uncompressed tar (the config's diff_id). */
  diffId: string;
}

export async function packBootstrap(bootstrap: Buffer): Promise<BootstrapLayer> {
  const pack = tarStream.pack();
  const parts: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    pack.on('data', (c: unknown) => { parts.push(c as Buffer); });
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  const mtime = new Date(0);
  pack.entry({ name: 'image', type: 'directory', mode: 0o755, uid: 0, gid: 0, mtime });
  pack.entry({ name: BOOTSTRAP_PATH_IN_TAR, type: 'file', mode: 0o444, uid: 0, gid: 0, mtime, size: bootstrap.length }, bootstrap);
  pack.finalize();
  await done;
  const tar = Buffer.concat(parts);
  const data = gzipSync(tar, { level: 6 });
  return { data, digest: contentDigest(data), diffId: contentDigest(tar) };
}

/**
 * The bootstrap inside a bootstrap layer (also the legacy top-level `image.boot`), with the layer's
 * diff_id; a one-line error when the layer holds none.
 */
export async function unpackBootstrap(layer: Buffer, where: string): Promise<{ bootstrap: Buffer; diffId: string }> {
  let tar: Buffer;
  try {
    tar = gunzipSync(layer);
  } catch (e) {
    throw new Error(`${where}: bootstrap layer is not gzip: ${(e as Error).message}`);
  }
  const extract = tarStream.extract();
  extract.end(tar);
  let found: Buffer | undefined;
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^\.?\//, '');
    const parts: Buffer[] = [];
    for await (const c of entry as AsyncIterable<Buffer>) parts.push(c);
    if (name === BOOTSTRAP_PATH_IN_TAR || name === 'image.boot') found = Buffer.concat(parts);
  }
  if (!found) throw new Error(`${where}: bootstrap layer has no ${BOOTSTRAP_PATH_IN_TAR}`);
  return { bootstrap: found, diffId: contentDigest(tar) };
}
