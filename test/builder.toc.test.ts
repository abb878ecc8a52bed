/**
 * `nydus-image check / inspect / unpack` on a data blob that carries its own bootstrap in its ToC
 * (upstream's tests/texture/toc blob): the bootstrap is taken out of the blob (sha256-checked), the
 * blob serves as its own chunk source, every chunk digest verifies and matches the blob meta; and
 * `check --blob-dir` cross-checks the nydus 2.2 blob's blob meta; a ZRAN blob is refused in one line.
 * Needs `npm run build`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, UPSTREAM_FIXTURES } from './helpers/fixtures';

jest.setTimeout(2 * 60_000);
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');
const TOC_BLOB = path.join(UPSTREAM_FIXTURES, 'more', 'toc--2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca');
const run = (args: string[]): string => execFileSync(NYDUS_IMAGE, args, { encoding: 'utf8' });

test('check on the blob: bootstrap from its ToC, every chunk verified from the blob itself and found in its blob meta', () => {
  const report = JSON.parse(run(['check', TOC_BLOB, '--json']));
  expect([report.files, report.chunks, report.verifiedChunks, report.blobMetaChunks]).toEqual([3, 3, 3, 3]);
  // The bootstrap records d788a0ea…, but its blob predates CAP_TAR_TOC: like upstream's
  // load_from_file, a bootstrap taken out of a blob names such a blob after the blob (its sha256).
  expect(report.blobs[0].blobId).toBe('2fa78cad554b75ac91a4a125ed148d0ddeb25efa4aaa8bd80e5dc292690a4dca');
});

test('inspect and unpack on the blob', () => {
  const report = JSON.parse(run(['inspect', TOC_BLOB, '--json']));
  expect(report.rafsVersion).toBe(6);
  expect(report.bootstrapSize).toBe(20480);
  expect(report.tree.map((e: { path: string; size: number }) => [e.path, e.size])).toEqual([['/', 0], ['/error.rs', 2816], ['/lib.rs', 678], ['/logger.rs', 3115]]);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-toc-'));
  try {
    const out = path.join(work, 'out.tar');
    run(['unpack', TOC_BLOB, '--output', out]);
    const listing = execFileSync('tar', ['tvf', out], { encoding: 'utf8' }).trim().split('\n').map((l) => l.split(/\s+/).slice(2, 3).concat(l.split(/\s+/).slice(-1)));
    expect(listing).toEqual([['0', './'], ['2816', './error.rs'], ['678', './lib.rs'], ['3115', './logger.rs']]);
    const dir = path.join(work, 'x');
    fs.mkdirSync(dir);
    execFileSync('tar', ['xf', out, '-C', dir]);
    expect(fs.readFileSync(path.join(dir, 'lib.rs'), 'utf8')).toMatch(/SPDX-License-Identifier: Apache-2.0/);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('check --blob-dir cross-checks the blob meta of the nydus 2.2 blob', () => {
  const report = JSON.parse(run(['check', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), '--blob-dir', path.join(UPSTREAM_FIXTURES, 'blobs'), '--json']));
  expect([report.verifiedChunks, report.blobMetaChunks]).toEqual([2, 2]);
});

test('a blob with a ToC but no bootstrap section is named as such', () => {
  const r = spawnSync(NYDUS_IMAGE, ['inspect', path.join(UPSTREAM_FIXTURES, 'blobs', 'be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef')], { encoding: 'utf8' });
  expect(r.status).toBe(1);
  expect(r.stderr.trim()).toMatch(/: a data blob whose ToC has no image\.boot section \(pass its bootstrap instead\)$/);
});

test('a bootstrap without its chunk table: check --blob-dir takes chunk details and digests from the blob and verifies all', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-toc-'));
  try {
    const boot = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));
    boot.writeBigUInt64LE(0n, 1152 + 24);
    boot.writeBigUInt64LE(0n, 1152 + 32);
    const file = path.join(work, 'old.boot');
    fs.writeFileSync(file, boot);
    const report = JSON.parse(run(['check', file, '--blob-dir', path.join(UPSTREAM_FIXTURES, 'blobs'), '--json']));
    expect([report.chunks, report.verifiedChunks, report.blobMetaChunks]).toEqual([2, 2, 2]);
    const r = spawnSync(NYDUS_IMAGE, ['inspect', file], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/chunk 0 of blob 0 missing from the chunk table \(its details are in the blob meta: give the blobs\)/);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

test('check --blob-dir refuses a blob whose chunks are not plain byte ranges (ZRAN) with one line, before reading chunks', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-toc-'));
  try {
    const boot = fs.readFileSync(path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'));
    const blobTable = Number(boot.readBigUInt64LE(1152 + 8));
    boot.writeUInt32LE(boot.readUInt32LE(blobTable + 84) | 0x8, blobTable + 84);
    const file = path.join(work, 'zran.boot');
    fs.writeFileSync(file, boot);
    const r = spawnSync(NYDUS_IMAGE, ['check', file, '--blob-dir', path.join(UPSTREAM_FIXTURES, 'blobs')], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual([
      `nydus-image: error: ${file}: blob be7d77eeb719f70884758d1aa800ed0fb09d701aaec469964e9d54325f0d5fef: its chunks cannot be read: ZRAN (an OCI gzip layer read in place through inflate contexts) is not supported`,
    ]);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
});
