/**
 * One FUSE connection for every rafs instance of a supervised daemon (docs/nydusd.md "Failover"),
 * as upstream's shared nydusd serves them: the daemon's --mountpoint is one FUSE mount whose root
 * is a directory made here, and each instance is the subdirectory named by its API mountpoint
 * (`/ID` is `<mountpoint>/ID`). One connection per daemon is what lets a supervisor that spawned
 * the daemon keep the descriptor: new instances need no new descriptor.
 *
 * Node ids: the root is 1; a node of the instance at index k (1, 2, ... given by the caller and
 * kept across restarts) is k * 2^40 + its id in the instance (src/daemon/fuse.ts), so a node id
 * the kernel holds means the same file to every nydusd that serves the connection. Inode numbers
 * are made the same way, so two instances never show one inode number.
 *
 * Contract: instance names are single path components; a name that comes and goes (an instance)
 * is given to the kernel with no entry cache time and a missing name is not cached, so a mount or
 * unmount shows at once; requests for a node of an index with no instance answer ESTALE.
 */
import type { Attr, DirEntry, Entry, FuseFs, ReadReply, Statfs } from '../fuse/session';
import { errno, FuseError } from '../fuse/session';
import type { FuseMount } from './fuse';

/** Node ids below this belong to the root (only 1) or an instance's index 0, which is never used. */
const SPAN = 2 ** 40;
/** Indexes fit node ids in 2^53 (JavaScript's exact integers). */
export const MAX_INDEX = 2 ** 53 / SPAN - 1;

const DT_DIR = 4;

export class FuseRoot implements FuseFs {
  private readonly byName = new Map<string, { index: number; fs: FuseMount }>();
  private readonly byIndex = new Map<number, FuseMount>();
  private readonly mtime = Math.floor(Date.now() / 1000);

  attach(name: string, index: number, fs: FuseMount): void {
    if (!Number.isInteger(index) || index < 1 || index > MAX_INDEX) throw new Error(`instance index ${index}: out of range 1..${MAX_INDEX}`);
    if (this.byName.has(name) || this.byIndex.has(index)) throw new Error(`instance ${name} (index ${index}): already attached`);
    this.byName.set(name, { index, fs });
    this.byIndex.set(index, fs);
  }

  detach(name: string): void {
    const e = this.byName.get(name);
    if (!e) return;
    this.byName.delete(name);
    this.byIndex.delete(e.index);
  }

  /** The instance serving global node id `g`, and the id there. */
  private route(g: number): { k: number; fs: FuseMount; local: number } {
    const k = Math.floor(g / SPAN);
    const fs = this.byIndex.get(k);
    if (!fs) throw new FuseError(errno.ESTALE, `node ${g}: no instance at index ${k}`);
    return { k, fs, local: g - k * SPAN };
  }

  private rootAttr(): Attr {
    return { ino: 1, size: 4096, blocks: 8, mtime: this.mtime, mtimensec: 0, mode: 0o040755, nlink: 2 + this.byName.size, uid: 0, gid: 0, rdev: 0, blksize: 4096 };
  }

  private global(k: number, e: Entry): Entry {
    return { ...e, nodeid: k * SPAN + e.nodeid, attr: { ...e.attr, ino: k * SPAN + e.attr.ino } };
  }

  lookup(parent: number, name: string): Entry | undefined {
    if (parent === 1) {
      if (name === '.' || name === '..') return { nodeid: 1, attr: this.rootAttr(), entryTtl: 0 };
      const e = this.byName.get(name);
      // Not cached either way: an instance may be mounted or unmounted at any time.
      if (!e) throw new FuseError(errno.ENOENT);
      return { ...this.global(e.index, { nodeid: 1, attr: e.fs.getattr(1) }), entryTtl: 0 };
    }
    const { k, fs, local } = this.route(parent);
    if (local === 1 && name === '..') return { nodeid: 1, attr: this.rootAttr(), entryTtl: 0 };
    const e = fs.lookup(local, name);
    return e && this.global(k, e);
  }

  forget(nodeid: number, nlookup: number): void {
    if (nodeid === 1) return;
    const k = Math.floor(nodeid / SPAN);
    this.byIndex.get(k)?.forget(nodeid - k * SPAN, nlookup);
  }

  getattr(nodeid: number): Attr {
    if (nodeid === 1) return this.rootAttr();
    const { k, fs, local } = this.route(nodeid);
    const a = fs.getattr(local);
    return { ...a, ino: k * SPAN + a.ino };
  }

  readlink(nodeid: number): Buffer {
    const { fs, local } = this.route(nodeid);
    return fs.readlink(local);
  }

  open(nodeid: number, flags: number): number {
    if (nodeid === 1) throw new FuseError(errno.EISDIR);
    const { fs, local } = this.route(nodeid);
    return fs.open(local, flags);
  }

  read(nodeid: number, fh: number, offset: number, size: number): Promise<ReadReply> {
    const { fs, local } = this.route(nodeid);
    return fs.read(local, fh, offset, size);
  }

  release(): void {
    // Instances keep nothing per open file.
  }

  opendir(nodeid: number): number {
    if (nodeid === 1) return 0;
    const { fs, local } = this.route(nodeid);
    return fs.opendir(local);
  }

  readdir(nodeid: number, fh: number): readonly DirEntry[] {
    if (nodeid === 1) {
      const list: DirEntry[] = [
        { name: '.', ino: 1, type: DT_DIR },
        { name: '..', ino: 1, type: DT_DIR },
      ];
      for (const [name, e] of this.byName) list.push({ name, ino: e.index * SPAN + e.fs.getattr(1).ino, type: DT_DIR });
      return list;
    }
    const { k, fs, local } = this.route(nodeid);
    return fs.readdir(local, fh).map((d) => ({ ...d, ino: local === 1 && d.name === '..' ? 1 : k * SPAN + d.ino }));
  }

  releasedir(nodeid: number, fh: number): void {
    if (nodeid === 1) return;
    const k = Math.floor(nodeid / SPAN);
    this.byIndex.get(k)?.releasedir(nodeid - k * SPAN, fh);
  }

  statfs(): Statfs {
    let files = 1;
    for (const { fs } of this.byName.values()) files += fs.statfs().files;
    return { blocks: 0, files, bsize: 4096, namelen: 255 };
  }

  getxattr(nodeid: number, name: string): Buffer {
    if (nodeid === 1) throw new FuseError(errno.ENODATA);
    const { fs, local } = this.route(nodeid);
    return fs.getxattr(local, name);
  }

  listxattr(nodeid: number): Buffer {
    if (nodeid === 1) return Buffer.alloc(0);
    const { fs, local } = this.route(nodeid);
    return fs.listxattr(local);
  }

  access(nodeid: number, mask: number): void {
    if (nodeid === 1) {
      if (mask & 2) throw new FuseError(errno.EROFS);
      return;
    }
    const { fs, local } = this.route(nodeid);
    fs.access(local, mask);
  }
}
