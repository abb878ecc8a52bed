/**
 * Acceptance 6 through the CLI: `inspect` lists the tree of the upstream-built rafs-v6-2.2.boot as
 * the kernel shows it when mounting it, and `check --blob-dir` verifies every chunk digest of its
 * blob. Also the CLI's create flags (--prefetch-files, --output-json, --chunk-size, --blob) and
 * inspect on our own images.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeBootstrap } from '../src/format/decode';
import { REPO_ROOT, UPSTREAM_FIXTURES } from './helpers/fixtures';
import { everyKindEntries, writeTar } from './helpers/tars';
import { testWith } from './helpers/capabilities';

jest.setTimeout(5 * 60_000);
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');
const UPSTREAM_BOOT = path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot');
const run = (args: string[]): string => execFileSync(NYDUS_IMAGE, args, { encoding: 'utf8' });

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-cli-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

interface Listed {
  path: string;
  kind: string;
  mode: number;
  size: number;
}

testWith(['root', 'erofs', 'loop'], 'inspect lists the upstream v6 image tree exactly as the kernel mounts it', () => {
  const report = JSON.parse(run(['inspect', '--bootstrap', UPSTREAM_BOOT, '--json']));
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'upstream-mnt-'));
  let kernel: Listed[] = [];
  try {
    execFileSync('mount', ['-t', 'erofs', '-o', 'ro,loop', UPSTREAM_BOOT, mnt]);
    const visit = (rel: string): void => {
      const st = fs.lstatSync(path.join(mnt, rel));
      kernel.push({ path: rel === '' ? '/' : rel, kind: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other', mode: st.mode & 0o7777, size: st.isDirectory() ? 0 : st.size });
      if (st.isDirectory()) for (const n of fs.readdirSync(path.join(mnt, rel)).sort()) visit(`${rel}/${n}`);
    };
    visit('');
  } finally {
    execFileSync('umount', [mnt]);
    fs.rmSync(mnt, { recursive: true });
  }
  kernel = kernel.sort((a, b) => a.path.localeCompare(b.path));
  const listed = (report.tree as Listed[]).map(({ path: p, kind, mode, size }) => ({ path: p, kind, mode, size })).sort((a, b) => a.path.localeCompare(b.path));
  expect(listed).toEqual(kernel);
  expect(listed.map((e) => e.path)).toEqual(['/', '/lib.rs', '/sync_io.rs']);
  expect(report.blobs[0].blobId).toBe('be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef');
  expect(report.digester).toBe('blake3');
});

test('check --blob-dir verifies every chunk digest of the upstream blob', () => {
  const report = JSON.parse(run(['check', '--bootstrap', UPSTREAM_BOOT, '--blob-dir', path.join(UPSTREAM_FIXTURES, 'blobs'), '--json']));
  expect(report.chunks).toBeGreaterThan(0);
  expect(report.verifiedChunks).toBe(report.chunks);
  expect(run(['check', UPSTREAM_BOOT])).toMatch(/: ok: 3 inodes, 2 files, 2 chunks in 1 blobs/);
});

test('create flags: --prefetch-files, --chunk-size, --blob, --output-json, the default digester; inspect counts our image', async () => {
  const tar = path.join(work, 'k.tar');
  await writeTar(tar, everyKindEntries(0x4000));
  const list = path.join(work, 'prefetch.txt');
  fs.writeFileSync(list, '/etc/hostname\n/bin\n/not/there\n');
  const boot = path.join(work, 'k.boot');
  const blob = path.join(work, 'k.blob');
  const json = path.join(work, 'k.json');
  run(['create', '-t', 'tar-rafs', '--chunk-size', '0x4000', '--prefetch-files', list, '-B', boot, '-b', blob, '-J', json, tar]);
  const out = JSON.parse(fs.readFileSync(json, 'utf8'));
  expect(out.blob_path).toBe(blob);
  expect(out.blob_size).toBe(fs.statSync(blob).size);
  // The listed files' data is the head of the blob.
  expect(out.prefetch_size).toBeGreaterThan(0);
  expect(out.prefetch_size).toBeLessThan(out.data_size / 10);
  const image = decodeBootstrap(fs.readFileSync(boot));
  expect(image.chunkSize).toBe(0x4000);
  expect(image.prefetch).toEqual(['/etc/hostname', '/bin']);
  // No --digester: blake3, upstream nydus-image's default.
  expect(image.blobs[0].digester).toBe('blake3');
  const report = JSON.parse(run(['inspect', '--bootstrap', boot, '--json', '--no-tree']));
  expect(report.tree).toBeUndefined();
  expect(report.counts).toMatchObject({ chardev: 2, blockdev: 1, fifo: 1, hardlinkedInodes: 2 });
  expect(report.blobs[0].blobId).toBe(out.blob_id);
  const text = run(['inspect', boot]);
  expect(text).toMatch(/^ {2}chardev {2}0666 0:0 +0 \/dev\/null rdev=0x103$/m);
  expect(text).toMatch(/^ {2}symlink .* \/etc\/symlink -> hostname$/m);
});

test('a layer without file data writes a bootstrap and no blob', async () => {
  const tar = path.join(work, 'empty.tar');
  await writeTar(tar, [{ name: 'dir', type: 'directory', mode: 0o755 }, { name: 'dir/.wh.gone', type: 'file', mode: 0o644, size: 0 }]);
  const json = path.join(work, 'empty.json');
  const blobDir = path.join(work, 'empty-blobs');
  run(['create', '-t', 'tar-rafs', '-B', path.join(work, 'empty.boot'), '-D', blobDir, '-J', json, tar]);
  expect(JSON.parse(fs.readFileSync(json, 'utf8'))).toMatchObject({ blob_id: null, blob_path: null, blob_size: 0, blobs: [] });
  expect(fs.readdirSync(blobDir)).toEqual([]);
});
