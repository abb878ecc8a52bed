/**
 * Reads upstream's `.result` files of the RAFS v5 test images (test/fixtures/nydus-upstream/v5):
 * a `tree -J` listing (directories, files, symlinks with targets) followed by `md5sum` lines of every
 * regular file. `treeJson` renders any listing in the same shape, so a test compares whole trees.
 */
import * as fs from 'node:fs';

export interface TreeNode {
  type: 'directory' | 'file' | 'link';
  name: string;
  target?: string;
  contents?: TreeNode[];
}

export interface V5Result {
  root: TreeNode;
  /** Absolute path -> md5 hex of the file's content. */
  md5: Map<string, string>;
}

export function readV5Result(file: string): V5Result {
  const text = fs.readFileSync(file, 'utf8');
  const end = text.indexOf('\n]\n') + 2;
  const json = JSON.parse(text.slice(0, end)) as TreeNode[];
  const md5 = new Map<string, string>();
  for (const line of text.slice(end).split('\n')) {
    const m = /^([0-9a-f]{32}) {2}(\/.*)$/.exec(line);
    if (m) md5.set(m[2], m[1]);
  }
  return { root: json[0], md5 };
}

/** One entry of a listing: path relative to the root ('' for the root), kind, symlink target. */
export interface Listed {
  path: string;
  kind: 'dir' | 'file' | 'symlink' | string;
  target?: string;
}

/** The `tree -J` shape of a listing (children by name, like `tree`'s default sort for ASCII names). */
export function treeJson(entries: Listed[]): TreeNode {
  const nodes = new Map<string, TreeNode>();
  const root: TreeNode = { type: 'directory', name: '', contents: [] };
  nodes.set('', root);
  for (const e of [...entries].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    if (e.path === '') continue;
    const slash = e.path.lastIndexOf('/');
    const parent = nodes.get(slash < 0 ? '' : e.path.slice(0, slash))!;
    const name = e.path.slice(slash + 1);
    const node: TreeNode =
      e.kind === 'dir' ? { type: 'directory', name, contents: [] } : e.kind === 'symlink' ? { type: 'link', name, target: e.target, contents: [] } : { type: 'file', name };
    parent.contents!.push(node);
    if (e.kind === 'dir') nodes.set(e.path, node);
  }
  const sort = (n: TreeNode): void => {
    n.contents?.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    n.contents?.forEach(sort);
  };
  sort(root);
  return root;
}
