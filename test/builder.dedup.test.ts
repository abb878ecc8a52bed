/**
 * Acceptance 4: a second layer repeating most files of the first, built with --chunk-dict (the
 * first layer's bootstrap), stores at most 10% of the repeated bytes again. Also dedup inside one
 * blob, and that the result still reads back right (merged image unpacked with both blobs).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLayer, mergeLayers, unpackToTar } from '../src/builder';
import { decodeBootstrap } from '../src/format/decode';
import { REPO_ROOT } from './helpers/fixtures';
import { CraftedEntry, gnuExtract, pseudoRandom, writeTar } from './helpers/tars';
import { compareTrees, snapshotTree } from './helpers/erofs';

jest.setTimeout(5 * 60_000);
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-dedup-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

const f = (name: string, body: Buffer): CraftedEntry => ({ name, type: 'file', mode: 0o644, size: body.length, body, mtime: 1_700_000_000 });

test('a layer repeating most of the first, built with --chunk-dict, stores <= 10% of the repeated bytes', async () => {
  // 40 files of varied sizes (not chunk aligned), ~24 MiB of incompressible data.
  const base: CraftedEntry[] = [];
  for (let i = 0; i < 40; i++) base.push(f(`lib/file${i}.so`, pseudoRandom(100_000 + i * 31_337, 1000 + i)));
  const repeated = base.slice(0, 36);
  const fresh = [f('app/new1', pseudoRandom(700_000, 5000)), f('app/new2', pseudoRandom(1_300_000, 5001))];
  // The repeats come under new names too: the dict keys on content, not paths.
  const upper = [...repeated, ...repeated.slice(0, 5).map((e) => ({ ...e, name: e.name.replace('lib/', 'copy/') })), ...fresh];
  const repeatedBytes = upper.filter((e) => !e.name.startsWith('app/')).reduce((s, e) => s + e.body!.length, 0);
  const freshBytes = fresh.reduce((s, e) => s + e.body!.length, 0);

  await writeTar(path.join(work, 'l1.tar'), base);
  await writeTar(path.join(work, 'l2.tar'), upper);
  const blobDir = path.join(work, 'blobs');
  const run = (args: string[]): void => void execFileSync(NYDUS_IMAGE, args);
  run(['create', '--type', 'tar-rafs', '--compressor', 'none', '--bootstrap', path.join(work, 'l1.boot'), '--blob-dir', blobDir, path.join(work, 'l1.tar')]);
  run(['create', '--type', 'tar-rafs', '--compressor', 'none', '--chunk-dict', path.join(work, 'l1.boot'), '--bootstrap', path.join(work, 'l2.boot'), '--blob-dir', blobDir, '--output-json', path.join(work, 'l2.json'), path.join(work, 'l2.tar')]);
  const l2 = JSON.parse(fs.readFileSync(path.join(work, 'l2.json'), 'utf8'));
  const storedAgain = l2.data_size - freshBytes;
  expect(repeatedBytes).toBeGreaterThan(20 << 20);
  // Only the fresh files (plus 4 KiB alignment padding) went into the new blob.
  expect(storedAgain).toBeLessThanOrEqual(0.1 * repeatedBytes);
  expect(l2.data_size).toBeLessThan(freshBytes + 2 * 4096);

  // The layer references the dict's blob, and the merged image reads back byte for byte.
  const l1Image = decodeBootstrap(fs.readFileSync(path.join(work, 'l1.boot')));
  const l2Image = decodeBootstrap(fs.readFileSync(path.join(work, 'l2.boot')));
  expect(l2Image.blobs.map((b) => b.blobId).sort()).toEqual([l1Image.blobs[0].blobId, l2.blob_id].sort());
  const merged = mergeLayers([l1Image, l2Image]);
  const out = path.join(work, 'merged.tar');
  const stream = fs.createWriteStream(out);
  const closed = new Promise((resolve) => stream.on('close', resolve));
  await unpackToTar(merged, blobDir, stream);
  await closed;
  gnuExtract(out, path.join(work, 'got'));
  gnuExtract(path.join(work, 'l1.tar'), path.join(work, 'want'));
  gnuExtract(path.join(work, 'l2.tar'), path.join(work, 'want'));
  const got = snapshotTree(path.join(work, 'got'));
  expect(got.size).toBeGreaterThan(40);
  expect(compareTrees(snapshotTree(path.join(work, 'want')), got, { ignore: (p) => p === '/' })).toEqual([]);
});

test('identical chunks are stored once per blob', async () => {
  const body = pseudoRandom(3 * 65536 + 10, 77);
  const tar = path.join(work, 'dups.tar');
  await writeTar(tar, [f('a', body), f('b', body), f('c', Buffer.concat([body.subarray(0, 65536), Buffer.from('different tail')]))]);
  const res = await createLayer({
    source: { kind: 'tar', stream: fs.createReadStream(tar), gzip: false },
    bootstrapPath: path.join(work, 'dups.boot'),
    blobPath: path.join(work, 'dups.blob'),
    chunkSize: 65536,
    compressor: 'none',
  });
  // a: 4 chunks; b: the same 4; c: its first chunk is a's, plus one new tail chunk.
  expect(res.image.blobs[0].chunkCount).toBe(5);
  const [a, b, c] = ['a', 'b', 'c'].map((n) => res.image.root.children!.get(n)!);
  expect(b.chunks!.map((x) => x.index)).toEqual(a.chunks!.map((x) => x.index));
  expect(c.chunks![0].index).toBe(a.chunks![0].index);
  expect(res.dataSize).toBe(3 * 65536 + 2 * 4096);
});
