/**
 * A directory on disk -> tree + chunks. Reads with lstat (never follows symlinks), groups hard
 * links by (dev, ino), and reads file data a chunk at a time.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Inode, InodeKind, newInode } from '../format/model';
import { BuildError, errorMessage } from './errors';
import { encodeDev, splitGlibcDev } from './devices';
import { FileChunker } from './file-chunker';
import { BlobWriter } from './blob-writer';
import { readTreeXattrs } from './xattrs';
import type { HotMatcher } from './hot-files';

export interface SourceContext {
  writer: BlobWriter;
  chunkSize: number;
  onProgress?: (bytes: number) => void;
  /** Ranks files on the prefetch list (their chunks go first); absent: every file is written in source order. */
  hot?: HotMatcher | null;
}

export function readDirectory(root: string, ctx: SourceContext): Inode {
  let st: fs.BigIntStats;
  try {
    st = fs.lstatSync(root, { bigint: true });
  } catch (err) {
    throw new BuildError(root, errorMessage(err));
  }
  if (!st.isDirectory()) throw new BuildError(root, 'source is not a directory');
  const xattrs = readTreeXattrs(path.resolve(root));
  const links = new Map<string, Inode>();
  const buf = Buffer.allocUnsafe(ctx.chunkSize);

  const top = path.resolve(root);
  const visit = (p: string, st: fs.BigIntStats): Inode => {
    const kind = kindOf(st, p);
    if (kind !== 'dir' && st.nlink > 1n) {
      const known = links.get(`${st.dev}:${st.ino}`);
      if (known) return known;
    }
    const inode = newInode(kind, Number(st.mode & 0o7777n), {
      uid: Number(st.uid),
      gid: Number(st.gid),
      mtime: Number(st.mtimeNs / 1_000_000_000n),
      mtimeNsec: Number(st.mtimeNs % 1_000_000_000n),
      xattrs: xattrs.get(p) ?? new Map(),
    });
    if (kind !== 'dir' && st.nlink > 1n) links.set(`${st.dev}:${st.ino}`, inode);
    try {
      if (kind === 'dir') {
        const names = fs.readdirSync(p).sort(byBytes);
        for (const name of names) {
          const child = path.join(p, name);
          inode.children!.set(name, visit(child, fs.lstatSync(child, { bigint: true })));
        }
      } else if (kind === 'file') {
        readFile(p, inode, ctx, buf, ctx.hot ? ctx.hot(path.relative(top, p).split(path.sep)) : 0);
      } else if (kind === 'symlink') {
        inode.target = fs.readlinkSync(p);
        inode.size = Buffer.byteLength(inode.target);
      } else if (kind === 'chardev' || kind === 'blockdev') {
        const { major, minor } = splitGlibcDev(st.rdev);
        inode.rdev = encodeDev(major, minor);
      }
    } catch (err) {
      if (err instanceof BuildError) throw err;
      throw new BuildError(p, errorMessage(err));
    }
    return inode;
  };
  return visit(top, st);
}

function readFile(p: string, inode: Inode, ctx: SourceContext, buf: Buffer, rank: number): void {
  const chunker = new FileChunker(ctx.writer, ctx.chunkSize, rank);
  const fd = fs.openSync(p, 'r');
  try {
    for (;;) {
      let fill = 0;
      while (fill < buf.length) {
        const n = fs.readSync(fd, buf, fill, buf.length - fill, null);
        if (n === 0) break;
        fill += n;
      }
      if (fill > 0) {
        chunker.push(buf.subarray(0, fill));
        ctx.onProgress?.(fill);
      }
      if (fill < buf.length) break;
    }
  } finally {
    fs.closeSync(fd);
  }
  inode.chunks = chunker.end();
  inode.size = chunker.size;
}

function kindOf(st: fs.BigIntStats, p: string): InodeKind {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'chardev';
  if (st.isBlockDevice()) return 'blockdev';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  throw new BuildError(p, 'unknown file type');
}

/** Byte order of UTF-8 names (what EROFS dirents use), not UTF-16 order. */
export function byBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
