/** The tar tree check compares: OCI whiteouts, opaque directories, replacement, hard links, diff lines. */
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { applyLayer, diffTrees, FsTree } from '../src/convert/tar-tree';

async function tarOf(entries: { name: string; type?: 'file' | 'directory' | 'symlink' | 'link'; data?: string; linkname?: string; mode?: number }[]): Promise<Readable> {
  const pack = tarStream.pack();
  for (const e of entries) pack.entry({ name: e.name, type: e.type ?? 'file', mode: e.mode ?? 0o644, linkname: e.linkname, size: e.data?.length ?? 0 }, e.data ?? '');
  pack.finalize();
  const parts: Buffer[] = [];
  for await (const c of pack as AsyncIterable<Buffer>) parts.push(c);
  return Readable.from([Buffer.concat(parts)]);
}

describe('tar tree (OCI whiteouts)', () => {
  test('whiteouts, opaque directories, replacement and hard links', async () => {
    const tree: FsTree = new Map();
    await applyLayer(tree, await tarOf([
      { name: './', type: 'directory', mode: 0o755 },
      { name: 'a/x', data: 'x' }, { name: 'a/y', data: 'y' }, { name: 'b/deep/z', data: 'z' }, { name: 'c', data: 'c' },
      { name: 'h', type: 'link', linkname: 'c' },
    ]), { gzip: false, whiteouts: true, where: 'lower' });
    expect(tree.get('a')?.implicit).toBe(true);
    expect(tree.get('h')?.digest).toBe(tree.get('c')?.digest);
    await applyLayer(tree, await tarOf([
      { name: 'a/.wh..wh..opq' }, { name: 'a/new', data: 'n' }, { name: 'b/.wh.deep' }, { name: '.wh.c' }, { name: 'b', type: 'directory', mode: 0o700 },
    ]), { gzip: false, whiteouts: true, where: 'upper' });
    expect([...tree.keys()].sort()).toEqual(['', 'a', 'a/new', 'b', 'h']);
    expect(tree.get('b')?.mode).toBe(0o700);
    const other: FsTree = new Map(tree);
    other.set('a/new', { ...tree.get('a/new')!, mode: 0o600 });
    other.delete('h');
    expect(diffTrees(tree, other, ['src', 'dst']).sort()).toEqual([
      '/a/new: src has file mode 644 uid 0 gid 0 size 1 sha256 ' + tree.get('a/new')!.digest!.slice(0, 12) + '; dst has file mode 600 uid 0 gid 0 size 1 sha256 ' + tree.get('a/new')!.digest!.slice(0, 12),
      '/h: only in src',
    ]);
  });
});
