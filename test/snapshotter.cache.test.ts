/**
 * Blob cache collection policy: above the size limit, cache files of blobs no snapshot uses are
 * deleted least recently used first; live blobs are never touched.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { collectBlobCache } from '../src/snapshotter/cache-gc';

const id = (c: string): string => c.repeat(64);

describe('blob cache GC', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sncache-'));
    // Three blobs of 256 KiB each (data + chunk map + a kept blob meta), with distinct access times: a oldest, c newest.
    ['a', 'b', 'c'].forEach((c, i) => {
      const f = path.join(dir, `${id(c)}.blob.data`);
      fs.writeFileSync(f, Buffer.alloc(256 * 1024, 7));
      fs.writeFileSync(`${f}.chunk_map`, Buffer.alloc(64, 1));
      fs.writeFileSync(path.join(dir, `${id(c)}.blob.meta`), Buffer.alloc(4096, 2));
      const t = new Date(Date.UTC(2026, 0, 1 + i));
      fs.utimesSync(f, t, t);
      fs.utimesSync(`${f}.chunk_map`, t, t);
    });
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('under the limit nothing is deleted', async () => {
    const r = await collectBlobCache(dir, new Set(), 10 << 20);
    expect(r.deleted).toEqual([]);
    expect(fs.readdirSync(dir)).toHaveLength(9);
  });

  test('over the limit, dead blobs go oldest first until it fits; live ones stay', async () => {
    const r = await collectBlobCache(dir, new Set([id('a')]), 600 * 1024);
    expect(r.deleted).toEqual([id('b')]);
    expect(r.after).toBeLessThanOrEqual(600 * 1024);
    expect(fs.existsSync(path.join(dir, `${id('b')}.blob.meta`))).toBe(false);
    expect(fs.existsSync(path.join(dir, `${id('a')}.blob.data`))).toBe(true);
    expect(fs.existsSync(path.join(dir, `${id('b')}.blob.data.chunk_map`))).toBe(false);
    expect(fs.existsSync(path.join(dir, `${id('c')}.blob.data`))).toBe(true);
  });

  test('live blobs are kept even when the cache stays above the limit', async () => {
    const r = await collectBlobCache(dir, new Set([id('a'), id('b'), id('c')]), 1024);
    expect(r.deleted).toEqual([]);
    expect(r.after).toBeGreaterThan(1024);
  });
});
