/**
 * Issue 15, acceptance 1, one table over every file of test/fixtures/nydus-upstream (a file without
 * a row fails the first test). Each row says what the file is and what is shown for it:
 *  - an image (a bootstrap, or a blob carrying its bootstrap in its ToC): `nydus-image inspect`
 *    lists its tree (RAFS v5: equal to upstream's `.result` listing), `check --blob-dir` verifies
 *    every chunk digest, and nydusd serves it from a localfs backend with digest validation on: the
 *    mounted tree equals the inspected one and every file's bytes equal what `unpack` takes out of
 *    the blobs (v5: also upstream's recorded md5), with no digest failure or read error;
 *  - a file we refuse as an image: `inspect` fails with exactly one line naming why (the daemon-test
 *    bootstrap also at nydusd mount; the reason is verified at upstream's source, docs/format.md §15);
 *  - data another row uses (blobs, `.result` listings) or other readers' test data (ToC, zran); the
 *    tar upstream's builder tests use is built into an image here.
 * Two images are derived from the 2.2 fixture to show layouts no fixture has as a file: the
 * bootstrap without its chunk info table (chunk details only in the blob meta, digests from the
 * blob's `blob.digest`), and that again with the blob meta only in a separate `<blob id>.blob.meta`.
 * Needs `npm run build`; the nydusd part needs root and /dev/fuse. Passed 4 runs in a row
 * (`for i in 1 2 3 4; do npx jest --runInBand test/upstream.fixtures.test.ts; done`).
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { parseBlobMetaCacheFile, readBlobMeta, BLOB_META_HEADER_SIZE } from '../src/format/blob-meta';
import { decodeBootstrap } from '../src/format/decode';
import { describeWith } from './helpers/capabilities';
import { REPO_ROOT, UPSTREAM_FIXTURES } from './helpers/fixtures';
import { NydusdHandle, startNydusd } from './helpers/nydusd';
import { Listed, readV5Result, treeJson } from './helpers/v5-result';

jest.setTimeout(3 * 60_000);
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');
const fx = (rel: string): string => path.join(UPSTREAM_FIXTURES, rel);
const TOC_ID = '2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca';
const V6_BLOB = 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'upstream-fixtures-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

interface ImageCase {
  name: string;
  /** What the image shows about upstream's layouts. */
  shows: string;
  /** The file nydusd and the tools are given, and the localfs blob directory. */
  prepare(): { boot: string; blobDir: string };
  /** Upstream's recorded listing and md5s (RAFS v5). */
  result?: string;
  /** The paths the tree must have (when there is no `.result`). */
  paths?: string[];
}

/** The 2.2 bootstrap with its chunk info table cut off (as nydus-image wrote v6 before 2022-02). */
function withoutChunkTable(): string {
  const file = path.join(work, 'v6-no-chunk-table.boot');
  if (!fs.existsSync(file)) {
    const boot = fs.readFileSync(fx('rafs-v6-2.2.boot'));
    boot.writeBigUInt64LE(0n, 1152 + 24);
    boot.writeBigUInt64LE(0n, 1152 + 32);
    fs.writeFileSync(file, boot);
  }
  return file;
}

const IMAGES: ImageCase[] = [
  {
    name: 'rafs-v6-2.2.boot',
    shows: 'RAFS v6 of nydus 2.2: zstd, blake3, chunk info table, blob meta v1 and ToC in the blob',
    prepare: () => ({ boot: fx('rafs-v6-2.2.boot'), blobDir: fx('blobs') }),
    paths: ['/', '/lib.rs', '/sync_io.rs'],
  },
  {
    name: 'rafs-v6-2.2.boot without its chunk table (derived)',
    shows: 'chunk details only in the blob meta at the blob tail, digests from the blob.digest ToC section',
    prepare: () => ({ boot: withoutChunkTable(), blobDir: fx('blobs') }),
    paths: ['/', '/lib.rs', '/sync_io.rs'],
  },
  {
    name: `more/toc--${TOC_ID}`,
    shows: 'a data blob carrying its bootstrap (image.boot) and blob meta, found through its ToC; served by the name upstream gives it',
    prepare: () => {
      // Upstream's file name is the blob id (its sha256); localfs finds the blob by that name.
      const dir = path.join(work, 'toc-blobs');
      fs.mkdirSync(dir, { recursive: true });
      const boot = path.join(dir, TOC_ID);
      if (!fs.existsSync(boot)) fs.copyFileSync(fx(`more/toc--${TOC_ID}`), boot);
      return { boot, blobDir: dir };
    },
    paths: ['/', '/error.rs', '/lib.rs', '/logger.rs'],
  },
  {
    name: 'v5/sha256-nocompress-repeatable',
    shows: 'RAFS v5, sha256 digests, uncompressed chunks',
    prepare: () => ({ boot: fx('v5/sha256-nocompress-repeatable'), blobDir: fx('v5/blobs') }),
    result: 'v5/sha256-nocompress-repeatable.result',
  },
  {
    name: 'v5/blake3-lz4_block-non_repeatable',
    shows: 'RAFS v5, blake3 digests (its blob is the uncompressed one, as upstream recorded)',
    prepare: () => ({ boot: fx('v5/blake3-lz4_block-non_repeatable'), blobDir: fx('v5/blobs') }),
    result: 'v5/blake3-lz4_block-non_repeatable.result',
  },
  {
    name: 'v5/blake3-lz4_block-2020',
    shows: 'RAFS v5 of 2020: blake3, lz4_block chunks, every chunk index 0 (renumbered), stored owners',
    prepare: () => ({ boot: fx('v5/blake3-lz4_block-2020'), blobDir: fx('v5/blobs') }),
    result: 'v5/blake3-lz4_block-non_repeatable.result',
  },
];

/** Files that are not images: `inspect` must refuse each with exactly this one line. */
const REFUSED: Array<{ file: string; role: string; line: RegExp }> = [
  { file: `blobs/${V6_BLOB}`, role: 'the data blob of rafs-v6-2.2.boot (its ToC has no bootstrap)', line: /: a data blob whose ToC has no image\.boot section \(pass its bootstrap instead\)$/ },
  { file: 'v5/blobs/7334a2594e133cf8ae364189c2276b090fc490c627bcc3fb1077f0419a538e00', role: 'the data blob of the 2022 v5 images', line: /: bootstrap: size 3508766 is not a non-zero multiple of 4096$/ },
  { file: 'v5/blobs/d7b86b1e74e316fe945741d1a9fa1b271459fe41481e304977659e0c6ecf56ac', role: 'the lz4_block data blob of the 2020 v5 image', line: /: bootstrap: size 994935 is not a non-zero multiple of 4096$/ },
  {
    file: 'more/bootstrap--nydusd_daemon_test_bootstrap',
    role: 'not a readable image: its inode records have name size 0, which upstream validation refuses too (direct_v5.rs, docs/format.md §15)',
    line: /: v5 inode @75592 \(slot 1\): unknown file type in mode 0o0$/,
  },
  { file: 'more/tar--all-entry-type.tar', role: 'builder input (a tar with every entry type; built below)', line: /: bootstrap: size 10240 is not a non-zero multiple of 4096$/ },
  { file: `more/zstd--${TOC_ID}.zst`, role: 'the ToC blob as one zstd stream (ToC section extraction test, format.toc.test.ts)', line: /: bootstrap: size 3746 is not a non-zero multiple of 4096$/ },
  {
    file: 'more/zran--233c72f2b6b698c07021c4da367cfe2dff4f049efbaa885ca0ff760ea297865a.blob.meta',
    role: 'the blob meta (cache-file form) of a zran image, without its bootstrap (format.toc.test.ts reads it; zran is not served: docs/format.md §19)',
    line: /: superblock @1024: bad EROFS magic$/,
  },
  { file: 'more/zran--zran-single-stream.tar.gz', role: 'a gzip layer upstream indexes for zran (zran is not served: docs/format.md §19)', line: /: bootstrap: size 229 is not a non-zero multiple of 4096$/ },
  { file: 'more/zran--zran-two-streams.tar.gz', role: 'a gzip layer upstream indexes for zran (zran is not served: docs/format.md §19)', line: /: bootstrap: size 8908 is not a non-zero multiple of 4096$/ },
];

/** Data the rows above use. */
const USED = ['README.md', 'v5/sha256-nocompress-repeatable.result', 'v5/blake3-lz4_block-non_repeatable.result'];

function filesUnder(dir: string, rel = ''): string[] {
  return fs.readdirSync(path.join(dir, rel), { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? filesUnder(dir, path.join(rel, e.name)) : [path.join(rel, e.name)]));
}

const run = (args: string[]): string => execFileSync(NYDUS_IMAGE, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
/**
 * The same without blocking the event loop: while nydusd is up, a blocking call of seconds keeps the
 * API client from seeing its keep-alive socket close, and the next request fails with EPIPE.
 */
const runAsync = async (cmd: string, args: string[]): Promise<string> => (await promisify(execFile)(cmd, args, { encoding: 'utf8', maxBuffer: 64 << 20 })).stdout;

interface InspectTree {
  path: string;
  kind: string;
  mode: number;
  size: number;
  target?: string;
}

async function inspectTree(boot: string, blobDir: string): Promise<InspectTree[]> {
  return JSON.parse(await runAsync(NYDUS_IMAGE, ['inspect', boot, '--blob-dir', blobDir, '--json'])).tree;
}

/** md5 of every regular file `nydus-image unpack` writes for the image (chunks read from the blobs). */
async function unpackedMd5(boot: string, blobDir: string, name: string): Promise<Map<string, string>> {
  const dir = path.join(work, `unpacked-${name.replace(/[^a-z0-9]+/gi, '_')}`);
  if (!fs.existsSync(dir)) {
    const tar = `${dir}.tar`;
    await runAsync(NYDUS_IMAGE, ['unpack', boot, '--blob-dir', blobDir, '--output', tar]);
    fs.mkdirSync(dir);
    await runAsync('tar', ['xf', tar, '-C', dir]);
  }
  const out = new Map<string, string>();
  for (const f of filesUnder(dir)) {
    const p = path.join(dir, f);
    if (fs.lstatSync(p).isFile()) out.set(`/${f}`, createHash('md5').update(await fs.promises.readFile(p)).digest('hex'));
  }
  return out;
}

test('every fixture file has exactly one row', () => {
  const rows = [...IMAGES.filter((i) => !i.name.endsWith('(derived)')).map((i) => i.name), ...REFUSED.map((r) => r.file), ...USED];
  expect(new Set(rows).size).toBe(rows.length);
  expect(filesUnder(UPSTREAM_FIXTURES).sort()).toEqual(rows.sort());
});

describe.each(IMAGES.map((c) => [c.name, c] as const))('%s', (_name, c) => {
  test(`inspect lists the tree (${c.shows})`, async () => {
    const { boot, blobDir } = c.prepare();
    const tree = await inspectTree(boot, blobDir);
    if (c.result) {
      const listed: Listed[] = tree.map((e) => ({ path: e.path.slice(1), kind: e.kind, target: e.target }));
      expect(treeJson(listed)).toEqual(readV5Result(fx(c.result)).root);
    } else {
      expect(tree.map((e) => e.path)).toEqual(c.paths);
    }
  });

  test('check --blob-dir verifies every chunk digest', () => {
    const { boot, blobDir } = c.prepare();
    const report = JSON.parse(run(['check', boot, '--blob-dir', blobDir, '--json']));
    expect(report.chunks).toBeGreaterThan(0);
    expect(report.verifiedChunks).toBe(report.chunks);
  });
});

test('the refused files: inspect prints one line naming why', () => {
  for (const r of REFUSED) {
    const p = spawnSync(NYDUS_IMAGE, ['inspect', fx(r.file)], { encoding: 'utf8', timeout: 60_000 });
    expect([r.file, p.status]).toEqual([r.file, 1]);
    const lines = p.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0].startsWith(`nydus-image: error: ${fx(r.file)}: `)).toBe(true);
    expect(lines[0]).toMatch(r.line);
  }
});

test('more/tar--all-entry-type.tar, builder input: create builds it; the image lists every tar entry, one inode for the four hard-linked names, and verifies', () => {
  const tar = fx('more/tar--all-entry-type.tar');
  const dir = path.join(work, 'from-tar');
  fs.mkdirSync(dir);
  const boot = path.join(dir, 'boot');
  run(['create', '-t', 'tar-rafs', '-B', boot, '-D', path.join(dir, 'blobs'), tar]);
  const tree: Array<InspectTree & { nlink: number }> = JSON.parse(run(['inspect', boot, '--json'])).tree;
  const entries = execFileSync('tar', ['tf', tar], { encoding: 'utf8' }).trim().split('\n').map((e) => `/${e.replace(/\/$/, '')}`);
  expect(tree.map((e) => e.path).sort()).toEqual(['/', ...entries].sort());
  const links = tree.filter((e) => /hardlink|xfile/.test(e.path));
  expect(links.map((e) => [e.kind, e.nlink, e.size])).toEqual(Array(4).fill(['file', 4, 15]));
  expect(tree.find((e) => e.path === '/tar/dir2/symlink1.txt')).toMatchObject({ kind: 'symlink', target: '../dir1/dir3/file1.txt' });
  const report = JSON.parse(run(['check', boot, '--blob-dir', path.join(dir, 'blobs'), '--json']));
  expect([report.files, report.verifiedChunks]).toEqual([1, 1]);
});

describeWith(['root', 'fuse'], 'nydusd serves every image from localfs with digest validation', () => {
  let d: NydusdHandle | undefined;
  let n = 0;

  beforeAll(async () => {
    d = await startNydusd({ dir: path.join(work, 'nydusd') });
  });
  afterAll(async () => {
    await d?.cleanup();
  });

  const config = (blobDir: string, cacheDir: string) => ({
    device: { backend: { type: 'localfs', config: { dir: blobDir } }, cache: { type: 'blobcache', config: { work_dir: cacheDir } } },
    mode: 'direct',
    digest_validate: true,
  });

  async function mount(boot: string, blobDir: string, cacheDir: string): Promise<string> {
    const mnt = path.join(work, `mnt-${n++}`);
    fs.mkdirSync(mnt);
    d!.mountpoints.add(mnt);
    await d!.client.mount(mnt, boot, config(blobDir, cacheDir));
    return mnt;
  }

  /** Every entry under `mnt` (async: a long synchronous walk starves the API client's socket). */
  async function walkMount(mnt: string): Promise<{ tree: InspectTree[]; md5: Map<string, string> }> {
    const tree: InspectTree[] = [];
    const md5 = new Map<string, string>();
    const visit = async (rel: string): Promise<void> => {
      const p = path.join(mnt, rel);
      const st = await fs.promises.lstat(p);
      const kind = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      tree.push({ path: `/${rel}`, kind, mode: st.mode & 0o7777, size: kind === 'dir' ? 0 : st.size, ...(kind === 'symlink' ? { target: await fs.promises.readlink(p) } : {}) });
      if (kind === 'file') md5.set(`/${rel}`, createHash('md5').update(await fs.promises.readFile(p)).digest('hex'));
      if (kind === 'dir') for (const e of (await fs.promises.readdir(p)).sort()) await visit(rel ? `${rel}/${e}` : e);
    };
    await visit('');
    return { tree, md5 };
  }

  async function expectClean(mnt: string): Promise<void> {
    const m = await d!.client.call<{ digest_failures: number; read_errors: number; read_amount_total: number }>('GET', `/api/v1/metrics/backend?id=${encodeURIComponent(mnt)}`);
    expect([m.read_amount_total > 0, m.digest_failures, m.read_errors]).toEqual([true, 0, 0]);
  }

  test.each(IMAGES.map((c) => [c.name, c] as const))('%s: tree as inspected, content as unpacked from the blobs', async (_name, c) => {
    const { boot, blobDir } = c.prepare();
    const mnt = await mount(boot, blobDir, path.join(work, `cache-${n}`));
    const got = await walkMount(mnt);
    const want = (await inspectTree(boot, blobDir)).map((e) => ({ path: e.path, kind: e.kind, mode: e.mode, size: e.kind === 'dir' ? 0 : e.size, ...(e.target !== undefined ? { target: e.target } : {}) }));
    expect(got.tree.sort((a, b) => (a.path < b.path ? -1 : 1))).toEqual(want.sort((a, b) => (a.path < b.path ? -1 : 1)));
    expect(Object.fromEntries(got.md5)).toEqual(Object.fromEntries(await unpackedMd5(boot, blobDir, c.name)));
    if (c.result) expect(Object.fromEntries(got.md5)).toEqual(Object.fromEntries(readV5Result(fx(c.result)).md5));
    await expectClean(mnt);
  });

  test('the chunk-table-less image keeps the blob meta it fetched as <work dir>/<blob id>.blob.meta, in upstream cache-file form', async () => {
    const cache = path.join(work, 'cache-meta-kept');
    const mnt = await mount(withoutChunkTable(), fx('blobs'), cache);
    const kept = fs.readFileSync(path.join(cache, `${V6_BLOB}.blob.meta`));
    const blobInfo = decodeBootstrap(fs.readFileSync(fx('rafs-v6-2.2.boot'))).blobs[0];
    const blob = fs.readFileSync(fx(`blobs/${V6_BLOB}`));
    expect(parseBlobMetaCacheFile(blobInfo, kept).chunks).toEqual(readBlobMeta(blobInfo, (o, l) => blob.subarray(o, o + l)).chunks);
    expect((await walkMount(mnt)).md5.size).toBe(2);
  });

  test('a separate <blob id>.blob.meta is used: a blob whose own blob meta is damaged serves with it, and without it the mount is refused with one line', async () => {
    const blobInfo = decodeBootstrap(fs.readFileSync(fx('rafs-v6-2.2.boot'))).blobs[0];
    const blob = fs.readFileSync(fx(`blobs/${V6_BLOB}`));
    const metaFile = readBlobMeta(blobInfo, (o, l) => blob.subarray(o, o + l)).cacheFile();
    // The blob meta header inside the blob loses its magic; chunk data, ToC and digests stay intact.
    const damaged = Buffer.from(blob);
    damaged.writeUInt32LE(0, blobInfo.ciOffset + blobInfo.ciCompressedSize);
    const dir = path.join(work, 'damaged-meta');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, V6_BLOB), damaged);
    const cache = path.join(work, 'cache-separate-meta');
    fs.mkdirSync(cache);
    fs.writeFileSync(path.join(cache, `${V6_BLOB}.blob.meta`), metaFile);
    const mnt = await mount(withoutChunkTable(), dir, cache);
    const got = await walkMount(mnt);
    expect(Object.fromEntries(got.md5)).toEqual(Object.fromEntries(await unpackedMd5(fx('rafs-v6-2.2.boot'), fx('blobs'), 'rafs-v6-2.2.boot')));
    await expectClean(mnt);

    const err = await mount(withoutChunkTable(), dir, path.join(work, 'cache-no-meta')).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    const msg = (err as Error).message;
    expect(msg.split('\n')).toHaveLength(1);
    expect(msg).toContain(`${withoutChunkTable()}: `);
    expect(msg.endsWith(`: blob meta of blob ${V6_BLOB} (bytes ${blobInfo.ciOffset}+${blobInfo.ciCompressedSize + BLOB_META_HEADER_SIZE}): localfs: blob meta header: bad magic`)).toBe(true);
  });

  test('the daemon-test bootstrap is refused at mount with one line', async () => {
    const err = await mount(fx('more/bootstrap--nydusd_daemon_test_bootstrap'), fx('blobs'), path.join(work, 'cache-refused')).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/InvalidBootstrap: .*bootstrap--nydusd_daemon_test_bootstrap: v5 inode @75592 \(slot 1\): unknown file type in mode 0o0$/);
  });
});
