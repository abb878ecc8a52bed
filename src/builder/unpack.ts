/**
 * `unpackToTar`: an image and its blobs -> the tree as a POSIX tar (parents before children, names
 * in byte order). The first name of a multiply-linked inode carries the data; later names are hard
 * link entries to it. Every chunk is digest-verified as it is read (BlobReader). Sockets have no
 * tar representation and are skipped with a warning, as GNU tar does.
 */
import { Inode, RafsImage } from '../format/model';
import { logger } from '../util/log';
import { BlobReader } from './blob-reader';
import { decodeDev } from './devices';
import { byBytes } from './dir-source';
import { BuildError } from './errors';
import { TarHeader, TarType, TarWriter } from './tar-writer';

const log = logger('unpack');

/** `files` names blob files by blob id where they are not `<blobDir>/<blobId>` (see BlobReader). */
export async function unpackToTar(image: RafsImage, blobDir: string | undefined, out: NodeJS.WritableStream, files?: ReadonlyMap<string, string>): Promise<void> {
  const reader = new BlobReader(image, blobDir, files);
  const tar = new TarWriter(out);
  const firstName = new Map<Inode, string>();
  const visit = async (inode: Inode, name: string): Promise<void> => {
    const base: Omit<TarHeader, 'type'> = {
      name,
      mode: inode.mode,
      uid: inode.uid,
      gid: inode.gid,
      mtime: inode.mtime,
      mtimeNsec: inode.mtimeNsec,
      xattrs: inode.xattrs,
    };
    if (inode.kind === 'dir') {
      await tar.entry({ ...base, name: name === '.' ? './' : `${name}/`, type: 'directory' });
      const names = [...inode.children!.keys()].sort(byBytes);
      for (const child of names) await visit(inode.children!.get(child)!, `${name}/${child}`);
      return;
    }
    const first = firstName.get(inode);
    if (first !== undefined) {
      await tar.entry({ ...base, type: 'link', linkname: first });
      return;
    }
    firstName.set(inode, name);
    switch (inode.kind) {
      case 'file':
        await tar.entry({ ...base, type: 'file', size: inode.size }, fileData(inode, image.chunkSize, reader, name));
        return;
      case 'symlink':
        await tar.entry({ ...base, type: 'symlink', linkname: inode.target ?? '' });
        return;
      case 'chardev':
      case 'blockdev': {
        const { major, minor } = decodeDev(inode.rdev);
        const type: TarType = inode.kind === 'chardev' ? 'character-device' : 'block-device';
        await tar.entry({ ...base, type, devmajor: major, devminor: minor });
        return;
      }
      case 'fifo':
        await tar.entry({ ...base, type: 'fifo' });
        return;
      case 'socket':
        log.warn({ path: name }, 'socket skipped: tar cannot represent sockets');
        return;
    }
  };
  try {
    await visit(image.root, '.');
    await tar.finish();
  } finally {
    reader.close();
  }
}

function* fileData(inode: Inode, chunkSize: number, reader: BlobReader, name: string): Generator<Buffer> {
  let pos = 0;
  for (const chunk of inode.chunks!) {
    const expected = Math.min(chunkSize, inode.size - pos);
    if (chunk.uncompressedSize !== expected) {
      throw new BuildError(`file '${name}'`, `chunk at file offset ${pos} holds ${chunk.uncompressedSize} bytes, expected ${expected}`);
    }
    yield reader.read(chunk);
    pos += expected;
  }
  if (pos !== inode.size) throw new BuildError(`file '${name}'`, `chunks cover ${pos} bytes of ${inode.size}`);
}
