/**
 * `nydus-image inspect / check / unpack` on the RAFS v5 images upstream nydus-image wrote
 * (test/fixtures/nydus-upstream/v5): inspect lists exactly the tree upstream recorded in `.result`,
 * check --blob-dir verifies every chunk (lz4_block and uncompressed, blake3 and sha256), unpack writes
 * every file with the md5 upstream recorded and hard links as links. Needs `npm run build`.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { extract } from 'tar-stream';
import { REPO_ROOT, UPSTREAM_FIXTURES } from './helpers/fixtures';
import { readV5Result, treeJson } from './helpers/v5-result';

jest.setTimeout(2 * 60_000);
const NYDUS_IMAGE = path.join(REPO_ROOT, 'bin', 'nydus-image');
const V5 = path.join(UPSTREAM_FIXTURES, 'v5');
const BLOBS = path.join(V5, 'blobs');
const run = (args: string[]): string => execFileSync(NYDUS_IMAGE, args, { encoding: 'utf8' });
const IMAGES = [
  ['sha256-nocompress-repeatable', 'sha256-nocompress-repeatable.result'],
  ['blake3-lz4_block-non_repeatable', 'blake3-lz4_block-non_repeatable.result'],
  ['blake3-lz4_block-2020', 'blake3-lz4_block-non_repeatable.result'],
] as const;

let work: string;
beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'builder-v5-'));
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

interface Entry {
  path: string;
  kind: string;
  target?: string;
}

describe.each(IMAGES)('%s', (file, result) => {
  const boot = path.join(V5, file);
  const want = readV5Result(path.join(V5, result));

  test('inspect lists the tree upstream recorded', () => {
    const report = JSON.parse(run(['inspect', '--bootstrap', boot, '--json']));
    expect(report.rafsVersion).toBe(5);
    const entries = (report.tree as Entry[]).map((e) => ({ path: e.path === '/' ? '' : e.path.slice(1), kind: e.kind, target: e.target }));
    expect(treeJson(entries)).toEqual(want.root);
    expect(run(['inspect', boot])).toContain('RAFS v5');
  });

  test('check --blob-dir verifies every chunk', () => {
    const report = JSON.parse(run(['check', '--bootstrap', boot, '--blob-dir', BLOBS, '--json']));
    expect(report.chunks).toBe(23);
    expect(report.verifiedChunks).toBe(23);
  });

  test('unpack writes every file with the recorded md5, hard links as links', async () => {
    const out = path.join(work, `${file}.tar`);
    run(['unpack', '--bootstrap', boot, '--blob-dir', BLOBS, '--output', out]);
    const md5 = new Map<string, string>();
    const links = new Map<string, string>();
    await new Promise<void>((resolve, reject) => {
      const ex = extract();
      ex.on('entry', (h, stream, next) => {
        const p = h.name.replace(/^\.\//, '/').replace(/\/$/, '');
        const hash = createHash('md5');
        stream.on('data', (d: Buffer) => hash.update(d));
        stream.on('end', () => {
          if (h.type === 'file') md5.set(p, hash.digest('hex'));
          if (h.type === 'link') links.set(p, h.linkname!.replace(/^\.\//, '/'));
          next();
        });
        stream.resume();
      });
      ex.on('finish', resolve);
      ex.on('error', reject);
      fs.createReadStream(out).pipe(ex);
    });
    for (const [p, target] of links) md5.set(p, md5.get(target)!);
    expect(Object.fromEntries(md5)).toEqual(Object.fromEntries(want.md5));
    expect(links.size).toBe(2);
  });
});

test('inspect refuses the daemon-test bootstrap (inode records not RafsV5Inode) with one line', () => {
  const r = spawnSync(NYDUS_IMAGE, ['inspect', path.join(UPSTREAM_FIXTURES, 'more', 'bootstrap--nydusd_daemon_test_bootstrap')], { encoding: 'utf8' });
  expect(r.status).toBe(1);
  expect(r.stdout).toBe('');
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/^nydus-image: error: .*bootstrap--nydusd_daemon_test_bootstrap: v5 inode @75592 \(slot 1\): /);
});
