/**
 * Acceptance 6: the RAFS v6 image written by upstream nydus-image 2.2 mounts with a localfs backend
 * and digest validation on; its tree matches what the kernel's EROFS driver shows for the same
 * bootstrap, and its files read (every chunk digest-verified on the way).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UPSTREAM_FIXTURES } from './helpers/fixtures';
import { forceUnmount, NydusdHandle, startNydusd } from './helpers/nydusd';
import { describeWith, testWith } from './helpers/capabilities';

const NEEDS = ['root', 'fuse'] as const;

interface Entry {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
}

function tree(root: string): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  const visit = (rel: string) => {
    const st = fs.lstatSync(path.join(root, rel));
    const type = st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
    out[rel || '/'] = { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: type === 'dir' ? 0 : st.size, mtime: Math.floor(st.mtimeMs / 1000) };
    if (st.isDirectory()) for (const n of fs.readdirSync(path.join(root, rel))) visit(path.join(rel, n));
  };
  visit('');
  return out;
}

describeWith(NEEDS, 'upstream RAFS v6 image (nydus 2.2) over localfs', () => {
  let tmp: string;
  let d: NydusdHandle | undefined;
  let kernelMnt: string;

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nydusd-upstream-'));
    kernelMnt = path.join(tmp, 'kernel');
    fs.mkdirSync(kernelMnt);
    d = await startNydusd({
      dir: path.join(tmp, 'd'),
      bootstrap: path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'),
      mountpoint: path.join(tmp, 'mnt'),
      config: {
        device: { backend: { type: 'localfs', config: { dir: path.join(UPSTREAM_FIXTURES, 'blobs') } }, cache: { type: 'blobcache', config: { work_dir: path.join(tmp, 'cache') } } },
        mode: 'direct',
        digest_validate: true,
      },
    });
  });

  afterAll(async () => {
    await d?.cleanup();
    forceUnmount(kernelMnt);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  testWith(['erofs', 'loop'], 'the tree equals the kernel EROFS view of the same bootstrap', () => {
    execFileSync('mount', ['-t', 'erofs', '-o', 'loop,ro', path.join(UPSTREAM_FIXTURES, 'rafs-v6-2.2.boot'), kernelMnt]);
    try {
      const ours = tree(path.join(tmp, 'mnt'));
      const kernel = tree(kernelMnt);
      expect(Object.keys(ours).sort()).toEqual(['/', 'lib.rs', 'sync_io.rs']);
      expect(ours).toEqual(kernel);
    } finally {
      forceUnmount(kernelMnt);
    }
  });

  test('files read with digest validation; backend and cache metrics account for them', async () => {
    const lib = fs.readFileSync(path.join(tmp, 'mnt', 'lib.rs'), 'utf8');
    const sync = fs.readFileSync(path.join(tmp, 'mnt', 'sync_io.rs'), 'utf8');
    expect(lib.length).toBe(16931);
    expect(sync.length).toBe(13400);
    expect(lib.startsWith('// Copyright (C) 2020 Alibaba Cloud. All rights reserved.')).toBe(true);
    expect(lib).toContain('SPDX-License-Identifier: Apache-2.0');
    const backend = await d!.client.call<{ read_amount_total: number; digest_failures: number; read_errors: number }>('GET', '/api/v1/metrics/backend');
    expect(backend.read_amount_total).toBeGreaterThan(0);
    expect(backend.digest_failures).toBe(0);
    expect(backend.read_errors).toBe(0);
    const files = await d!.client.call<{ path: string }[]>('GET', '/api/v1/metrics/files');
    expect(files.map((f) => f.path).sort()).toEqual(['/lib.rs', '/sync_io.rs']);
  });
});
