/**
 * Acceptance 3: a zstd build, unpacked back to a tar, reproduces the source (compared after GNU tar
 * extracts both). Also blake3 digests, tar.gz sources through the CLI, and unpack refusing a blob
 * whose bytes do not verify.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkBootstrap, createLayer, unpackToTar } from '../src/builder';
import { debianRootfsDir, debianRootfsTar, REPO_ROOT } from './helpers/fixtures';
import { everyKindEntries, gnuExtract, writeTar } from './helpers/tars';
import { compareTrees, snapshotTree, TreeSnapshot } from './helpers/erofs';
import { testWith } from './helpers/capabilities';

jest.setTimeout(15 * 60_000);
const NEEDS = ['root'] as const;
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-unpack-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/**
 * Regular files whose mtimes differ. (Directory mtimes after a GNU tar extraction depend on the
 * order entries came in, so they say nothing about the tar.)
 */
function fileMtimeDiffs(want: TreeSnapshot, got: TreeSnapshot): string[] {
  return [...want].filter(([p, e]) => e.type === 'file' && got.get(p)?.mtime !== e.mtime).map(([p, e]) => `${p}: ${e.mtime} != ${got.get(p)?.mtime}`);
}

async function unpackTo(image: Parameters<typeof unpackToTar>[0], blobDir: string, tarFile: string): Promise<void> {
  const out = fs.createWriteStream(tarFile);
  const closed = new Promise((resolve) => out.on('close', resolve));
  await unpackToTar(image, blobDir, out);
  await closed;
}

testWith(NEEDS, 'crafted tar, zstd + sha256: unpack reproduces the source', async () => {
  const src = path.join(work, 'crafted.tar');
  await writeTar(src, everyKindEntries());
  const blobDir = path.join(work, 'blobs');
  const res = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(src), gzip: false }, bootstrapPath: path.join(work, 'crafted.boot'), blobDir });
  expect(res.image.blobs[0].compressor).toBe('zstd');
  // Compressible content (3 MiB of zeros, text) made the blob smaller than its address space.
  expect(res.blobSize).toBeLessThan(res.uncompressedSize);
  const out = path.join(work, 'crafted.out.tar');
  await unpackTo(res.image, blobDir, out);
  gnuExtract(src, path.join(work, 'crafted.want'));
  gnuExtract(out, path.join(work, 'crafted.got'));
  const got = snapshotTree(path.join(work, 'crafted.got'));
  expect(got.get('/xattr/binary')!.xattrs['security.capability']).toBe('0100000200200000000000000000000000000000');
  // Unpack keeps nanosecond mtimes too.
  expect(got.get('/home/user/nanotime.pyc')!.mtime).toBe('1700000000.123456789');
  const want = snapshotTree(path.join(work, 'crafted.want'));
  expect(compareTrees(want, got)).toEqual([]);
  expect(fileMtimeDiffs(want, got)).toEqual([]);
});

testWith(NEEDS, 'Debian tar.gz through the CLI, zstd + blake3: unpack reproduces the source tree', async () => {
  const gz = path.join(work, 'debian.tar.gz');
  execFileSync('bash', ['-c', `gzip -1 -c ${debianRootfsTar()} > ${gz}`]);
  const boot = path.join(work, 'debian.boot');
  const blobDir = path.join(work, 'debian-blobs');
  const json = path.join(work, 'debian.json');
  execFileSync(NYDUS_IMAGE, ['create', '--type', 'targz-rafs', '--digester', 'blake3', '--bootstrap', boot, '--blob-dir', blobDir, '--output-json', json, gz]);
  const summary = JSON.parse(fs.readFileSync(json, 'utf8'));
  expect(fs.readdirSync(blobDir)).toEqual([summary.blob_id]);
  expect(fs.statSync(path.join(blobDir, summary.blob_id)).size).toBe(summary.blob_size);

  const check = JSON.parse(execFileSync(NYDUS_IMAGE, ['check', '--bootstrap', boot, '--blob-dir', blobDir, '--json']).toString());
  expect(check.verifiedChunks).toBe(check.chunks);
  expect(check.blobs[0].digester).toBe('blake3');

  const out = path.join(work, 'debian.out.tar');
  execFileSync(NYDUS_IMAGE, ['unpack', '--bootstrap', boot, '--blob-dir', blobDir, '--output', out]);
  const got = path.join(work, 'debian.got');
  gnuExtract(out, got);
  const tree = snapshotTree(got);
  expect(tree.get('/usr/bin/python3.11')?.type).toBe('file');
  const want = snapshotTree(debianRootfsDir());
  expect(compareTrees(want, tree, { ignore: (p) => p === '/' })).toEqual([]);
  expect(fileMtimeDiffs(want, tree)).toEqual([]);
});

test('unpack and check refuse a blob whose bytes were changed, naming blob and chunk', async () => {
  const src = path.join(work, 'small.tar');
  await writeTar(src, everyKindEntries(0x10000));
  const blobDir = path.join(work, 'corrupt-blobs');
  const boot = path.join(work, 'small.boot');
  const res = await createLayer({ source: { kind: 'tar', stream: fs.createReadStream(src), gzip: false }, bootstrapPath: boot, blobDir, chunkSize: 0x10000, compressor: 'none' });
  await expect(checkBootstrap(boot, blobDir)).resolves.toMatchObject({ verifiedChunks: res.image.blobs[0].chunkCount });
  const blob = res.blobPath!;
  const fd = fs.openSync(blob, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, 3);
  b[0] ^= 0x55;
  fs.writeSync(fd, b, 0, 1, 3);
  fs.closeSync(fd);
  await expect(checkBootstrap(boot, blobDir)).rejects.toThrow(new RegExp(`blob ${res.blobId} chunk #0 at offset 0: blake3 digest mismatch`));
  const out = path.join(work, 'never.tar');
  const r = spawnSync(NYDUS_IMAGE, ['unpack', '--bootstrap', boot, '--blob-dir', blobDir, '--output', out], { encoding: 'utf8' });
  expect(r.status).not.toBe(0);
  expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^nydus-image: error: .*digest mismatch$/)]);
  expect(fs.existsSync(out)).toBe(false);
});

testWith(NEEDS, "GNU tar's own archives (gnu and posix formats, GNU long names, sparse 1.0) build to the same tree", async () => {
  // The reference tree: the crafted entries as GNU tar extracts them, plus a real sparse file.
  const src = path.join(work, 'gnu.src.tar');
  await writeTar(src, everyKindEntries(0x10000));
  const tree = path.join(work, 'gnu.tree');
  gnuExtract(src, tree);
  const sparse = path.join(tree, 'sparse', 'real-sparse');
  const fd = fs.openSync(sparse, 'w');
  fs.writeSync(fd, Buffer.from('in the middle'), 0, 13, 3_000_000);
  fs.ftruncateSync(fd, 5 << 20);
  fs.closeSync(fd);
  const want = snapshotTree(tree);
  expect(want.get('/sparse/real-sparse')!.size).toBe(5 << 20);
  for (const format of ['gnu', 'posix']) {
    const tar = path.join(work, `gnu.${format}.tar`);
    execFileSync('tar', [`--format=${format}`, ...(format === 'posix' ? ['--sparse'] : []), '--xattrs', "--xattrs-include=*", '--numeric-owner', '-C', tree, '-cf', tar, '.']);
    const boot = path.join(work, `gnu.${format}.boot`);
    const blobDir = path.join(work, 'gnu-blobs');
    execFileSync(NYDUS_IMAGE, ['create', '--type', 'tar-rafs', '--bootstrap', boot, '--blob-dir', blobDir, tar]);
    const out = path.join(work, `gnu.${format}.out.tar`);
    execFileSync(NYDUS_IMAGE, ['unpack', '--bootstrap', boot, '--blob-dir', blobDir, '--output', out]);
    const got = path.join(work, `gnu.${format}.got`);
    gnuExtract(out, got);
    expect({ format, diffs: compareTrees(want, snapshotTree(got)) }).toEqual({ format, diffs: [] });
  }
  // Older sparse encodings are refused by name, not misread.
  const old = path.join(work, 'gnu.oldsparse.tar');
  execFileSync('tar', ['--format=gnu', '--sparse', '-C', tree, '-cf', old, './sparse']);
  const r = spawnSync(NYDUS_IMAGE, ['create', '--type', 'tar-rafs', '-B', path.join(work, 'old.boot'), '-D', work, old], { encoding: 'utf8' });
  expect(r.status).not.toBe(0);
  expect(r.stderr.trim()).toMatch(/^nydus-image: error: tar entry #\d+ '.*sparse.*': unsupported tar entry type/);
});
