/**
 * Upstream fetch for the ChunkServer inside nydusd: asks the instance's own sources (mirrors,
 * proxy, origin; never peers) in order and returns a range only when every chunk it carries
 * decompresses to the digest of the image's chunk table, the check the pipeline makes. A source
 * whose bytes fail hears `rejected(range)`, like in the pipeline.
 */
import { ChunkProblem, hex, openChunk } from '../format/digest';
import { ChunkInfo } from '../format/model';
import type { BlobChunks } from '../fetch/pipeline';
import { BlobRange, ChunkSource, ReadContext, SourceUnavailableError } from '../fetch/source';

const byDigest = new WeakMap<BlobChunks, Map<string, ChunkInfo[]>>();

function digestIndex(bc: BlobChunks): Map<string, ChunkInfo[]> {
  let m = byDigest.get(bc);
  if (!m) {
    m = new Map();
    for (const c of bc.ordered) {
      const k = hex(c.digest);
      m.set(k, [...(m.get(k) ?? []), c]);
    }
    byDigest.set(bc, m);
  }
  return m;
}

/** The chunks a range carries: those named by `digests`, else all that lie wholly inside it. */
export function chunksOfRange(bc: BlobChunks, range: BlobRange, digests: string[]): ChunkInfo[] | undefined {
  const end = range.offset + range.length;
  const inside = (c: ChunkInfo) => c.compressedOffset >= range.offset && c.compressedOffset + c.compressedSize <= end;
  if (digests.length === 0) {
    const all = bc.ordered.filter(inside);
    return all.length ? all : undefined;
  }
  const idx = digestIndex(bc);
  const out: ChunkInfo[] = [];
  for (const d of digests) {
    const c = (idx.get(d) ?? []).find(inside);
    if (!c) return undefined;
    out.push(c);
  }
  return out;
}

/** True when `bytes` is `range` and every chunk in `chunks` matches its digest. */
export function rangeVerifies(bc: BlobChunks, range: BlobRange, chunks: ChunkInfo[], bytes: Buffer): boolean {
  if (bytes.length !== range.length) return false;
  for (const c of chunks) {
    const piece = bytes.subarray(c.compressedOffset - range.offset, c.compressedOffset - range.offset + c.compressedSize);
    if (openChunk(bc.blob, c, piece) instanceof ChunkProblem) return false;
  }
  return true;
}

/** Fetches `range` of `bc`'s blob from `sources` in order; resolves only with verified bytes. */
export async function fetchVerified(bc: BlobChunks, sources: readonly ChunkSource[], range: BlobRange, ctx: ReadContext): Promise<Buffer> {
  const digests = ctx.chunkDigests ?? [];
  const chunks = chunksOfRange(bc, range, digests);
  if (!chunks) throw new SourceUnavailableError('peer', `range ${range.offset}+${range.length} of ${range.blobId} names no known chunk`);
  const errors: string[] = [];
  for (const src of sources) {
    let bytes: Buffer;
    try {
      bytes = await src.read(range, { ...ctx, chunkDigests: digests });
    } catch (e) {
      errors.push(`${src.name}: ${(e as Error).message}`);
      continue;
    }
    if (rangeVerifies(bc, range, chunks, bytes)) return bytes;
    errors.push(`${src.name}: digest mismatch`);
    src.rejected?.(range);
  }
  throw new Error(`no upstream source delivered ${range.blobId} ${range.offset}+${range.length}: ${errors.join('; ') || 'no sources'}`);
}
