/**
 * Assembles a filesystem tree from entries arriving in any order (tar order is arbitrary): missing
 * parent directories are created implicitly, a later entry for the same name replaces the earlier
 * one (as tar extraction does), and a later directory entry for an existing directory only updates
 * its attributes. Hard links share one Inode object.
 */
import { Inode, newInode } from '../format/model';
import { BuildError } from './errors';

/** Attributes of directories that exist only because an entry below them does. */
const IMPLICIT_DIR_MODE = 0o755;

export class TreeBuilder {
  readonly root: Inode = newInode('dir', IMPLICIT_DIR_MODE);

  /** Places `inode` at `parts`; `where` names the entry for errors. */
  add(parts: readonly string[], inode: Inode, where: string): void {
    if (parts.length === 0) {
      if (inode.kind !== 'dir') throw new BuildError(where, 'the root entry must be a directory');
      copyAttributes(this.root, inode);
      return;
    }
    const parent = this.dir(parts.slice(0, -1), where);
    const name = parts[parts.length - 1];
    const existing = parent.children!.get(name);
    if (existing && existing.kind === 'dir' && inode.kind === 'dir') {
      copyAttributes(existing, inode);
      return;
    }
    parent.children!.set(name, inode);
  }

  /** Adds a hard link at `parts` to the inode already at `target`. */
  link(parts: readonly string[], target: readonly string[], where: string): void {
    const inode = this.lookup(target);
    if (!inode) throw new BuildError(where, `hard link target '${target.join('/')}' is not in the layer before it`);
    if (inode.kind === 'dir') throw new BuildError(where, `hard link target '${target.join('/')}' is a directory`);
    if (parts.length === 0) throw new BuildError(where, 'the root cannot be a hard link');
    const parent = this.dir(parts.slice(0, -1), where);
    parent.children!.set(parts[parts.length - 1], inode);
  }

  lookup(parts: readonly string[]): Inode | undefined {
    let node: Inode | undefined = this.root;
    for (const part of parts) {
      if (!node || node.kind !== 'dir') return undefined;
      node = node.children!.get(part);
    }
    return node;
  }

  /** The directory at `parts`, creating missing ones; a non-directory in the way is an error. */
  private dir(parts: readonly string[], where: string): Inode {
    let node = this.root;
    for (const part of parts) {
      let child = node.children!.get(part);
      if (!child) {
        child = newInode('dir', IMPLICIT_DIR_MODE);
        node.children!.set(part, child);
      } else if (child.kind !== 'dir') {
        throw new BuildError(where, `parent '${parts.join('/')}' is not a directory`);
      }
      node = child;
    }
    return node;
  }
}

/** Copies everything but the children (directory entries met again carry new attributes). */
export function copyAttributes(to: Inode, from: Inode): void {
  to.mode = from.mode;
  to.uid = from.uid;
  to.gid = from.gid;
  to.mtime = from.mtime;
  to.mtimeNsec = from.mtimeNsec;
  to.xattrs = new Map(from.xattrs);
}
