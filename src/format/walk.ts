/** Tree traversal over the image model: depth-first, children in byte order of their names. */
import { Inode, RafsImage } from './model';

/** Names sorted by their UTF-8 bytes, the order EROFS directories are stored in. */
export function sortedNames(children: Map<string, Inode>): string[] {
  const keyed = [...children.keys()].map((name) => ({ name, key: Buffer.from(name) }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key));
  return keyed.map((k) => k.name);
}

/**
 * Every entry of the tree as [absolute path, inode], root first as `/`, depth-first with children
 * sorted. A hard-linked inode appears once per name. Uses an explicit stack, so deep trees are fine.
 */
export function* walk(image: RafsImage): Iterable<[path: string, inode: Inode]> {
  const stack: Array<[string, Inode]> = [['/', image.root]];
  while (stack.length > 0) {
    const [path, inode] = stack.pop()!;
    yield [path, inode];
    if (inode.kind === 'dir' && inode.children) {
      const names = sortedNames(inode.children);
      const prefix = path === '/' ? '/' : `${path}/`;
      for (let i = names.length - 1; i >= 0; i--) stack.push([prefix + names[i], inode.children.get(names[i])!]);
    }
  }
}

/** The inode at an absolute or relative path (`/a/b`, `a/b`, `/`), or undefined. */
export function lookup(image: RafsImage, path: string): Inode | undefined {
  let cur: Inode | undefined = image.root;
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (!cur || cur.kind !== 'dir' || !cur.children) return undefined;
    cur = cur.children.get(part);
  }
  return cur;
}
