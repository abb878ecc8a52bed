/**
 * Disk usage of a directory tree the way containerd's fs.DiskUsage counts it: every inode once
 * (hard links are shared), size as allocated blocks * 512.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface Usage {
  size: number;
  inodes: number;
}

export async function diskUsage(root: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0n;
  const stack = [root];
  while (stack.length > 0) {
    const dir = stack.pop()!;
    const st = await fs.promises.lstat(dir, { bigint: true });
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += st.blocks * 512n;
    }
    if (!st.isDirectory()) continue;
    for (const name of await fs.promises.readdir(dir)) stack.push(path.join(dir, name));
  }
  return { size: Number(size), inodes: seen.size };
}
