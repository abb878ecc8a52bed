/**
 * Blob cache collection policy, run on Cleanup: when the cache directory holds more than `maxBytes`,
 * delete the cache files of blobs that no snapshot uses any more (least recently used first) until
 * it fits. Files of live blobs are never deleted, however big the cache is.
 *
 * Cache files are `<blob id>.blob.data` plus side files that start with the same name
 * (`.chunk_map`, …), as nydusd's blob cache writes them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { logger } from '../util/log';

const log = logger('cache-gc');

export interface GcResult {
  before: number;
  after: number;
  deleted: string[];
}

export async function collectBlobCache(dir: string, liveBlobIds: Set<string>, maxBytes: number): Promise<GcResult> {
  let names: string[];
  try {
    names = await fs.promises.readdir(dir);
  } catch {
    return { before: 0, after: 0, deleted: [] };
  }
  const blobs = new Map<string, { bytes: number; atimeMs: number; files: string[] }>();
  let total = 0;
  for (const name of names) {
    // `.blob.data*` (cache and chunk map) and `.blob.meta` (a blob meta nydusd fetched and kept).
    const m = /^([0-9a-f]{64})\.blob\.(?:data|meta)/.exec(name);
    const st = await fs.promises.stat(path.join(dir, name)).catch(() => undefined);
    if (!st || !st.isFile()) continue;
    const bytes = st.blocks * 512;
    total += bytes;
    if (!m) continue;
    const b = blobs.get(m[1]) ?? { bytes: 0, atimeMs: 0, files: [] };
    b.bytes += bytes;
    b.atimeMs = Math.max(b.atimeMs, st.atimeMs);
    b.files.push(name);
    blobs.set(m[1], b);
  }
  const before = total;
  const deleted: string[] = [];
  if (maxBytes <= 0 || total <= maxBytes) return { before, after: total, deleted };
  const dead = [...blobs.entries()].filter(([id]) => !liveBlobIds.has(id)).sort((a, b) => a[1].atimeMs - b[1].atimeMs);
  for (const [id, b] of dead) {
    if (total <= maxBytes) break;
    for (const f of b.files) await fs.promises.rm(path.join(dir, f), { force: true });
    total -= b.bytes;
    deleted.push(id);
  }
  log.info({ dir, before, after: total, deleted: deleted.length }, 'blob cache collected');
  return { before, after: total, deleted };
}
