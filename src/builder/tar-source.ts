/**
 * An OCI layer tar (or tar.gz) read as a stream -> tree + chunks. File data is chunked as it
 * arrives; nothing holds more than one chunk of it. Understands PAX headers (path, linkpath, size,
 * uid, gid, mtime with nanoseconds, SCHILY/LIBARCHIVE xattrs, GNU sparse 1.0), GNU long names and
 * base-256 sizes (via tar-stream). OCI whiteouts stay ordinary entries here; merge applies them.
 */
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';
import { Inode, InodeKind, newInode } from '../format/model';
import { encodeXattrs } from '../format/xattr';
import { BuildError, errorMessage, printable } from './errors';
import { entryComponents } from './paths';
import { encodeDev } from './devices';
import { FileChunker } from './file-chunker';
import { TreeBuilder } from './tree';
import { SourceContext } from './dir-source';
import { installTarHeaderHooks, RAW_PAX, RawPax } from './tar-headers';
import { SparseReader } from './tar-sparse';

type Header = Omit<tarStream.Header, 'type' | 'pax'> & { type: string | null; pax?: Record<string | symbol, unknown> | null };

export async function readTar(input: NodeJS.ReadableStream, gzip: boolean, ctx: SourceContext, label = gzip ? 'tar.gz' : 'tar'): Promise<Inode> {
  installTarHeaderHooks();
  const tree = new TreeBuilder();
  const extract = tarStream.extract();
  const source = input as Readable;
  // tar-stream is streamx, not node streams: wire errors of every stage into the extractor.
  source.on('error', (err: Error) => extract.destroy(err));
  let upstream: Readable = source;
  if (gzip) {
    const gunzip = createGunzip();
    gunzip.on('error', (err: Error) => extract.destroy(err));
    upstream = source.pipe(gunzip);
  }
  upstream.pipe(extract as unknown as NodeJS.WritableStream);
  let current: Readable | null = null;
  let ended = false;
  upstream.on('end', () => (ended = true));
  const stall = new StallGuard(
    () => ended || source.isPaused() || upstream.isPaused(),
    () => {
      const err = new Error('the tar parser stopped making progress (damaged archive)');
      current?.destroy(err);
      extract.destroy(err);
    },
  );
  let n = 0;
  let where = label;
  try {
    for await (const entry of extract) {
      n++;
      const header = entry.header as unknown as Header;
      where = `${label} entry #${n} '${printable(header.name)}'`;
      current = entry as unknown as Readable;
      await addEntry(tree, header, progress(entry as AsyncIterable<Buffer>, stall), ctx, where);
      current = null;
      stall.touch();
      // Until the next header parses, a failure is the parser's, after this entry.
      where = `${label} after entry #${n} '${printable(header.name)}'`;
    }
  } catch (err) {
    upstream.unpipe();
    source.destroy();
    if (err instanceof BuildError) throw err;
    throw new BuildError(where, describe(err));
  } finally {
    stall.stop();
  }
  return tree.root;
}

/**
 * The extractor must keep making progress while input is waiting for it (the input ended, or is
 * paused because the extractor stopped taking bytes). If it sits still for LIMIT_MS (a damaged
 * archive can leave a parser waiting for bytes that will never come) the build fails instead of
 * hanging. A slow input alone never trips it.
 */
class StallGuard {
  static readonly LIMIT_MS = 5_000;
  private last = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(inputWaiting: () => boolean, onStall: () => void) {
    this.timer = setInterval(() => {
      if (!inputWaiting()) this.touch();
      else if (Date.now() - this.last > StallGuard.LIMIT_MS) {
        this.stop();
        onStall();
      }
    }, 250);
    this.timer.unref();
  }

  touch(): void {
    this.last = Date.now();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

async function* progress(data: AsyncIterable<Buffer>, stall: StallGuard): AsyncIterable<Buffer> {
  for await (const buf of data) {
    stall.touch();
    yield buf;
  }
}

async function addEntry(tree: TreeBuilder, h: Header, data: AsyncIterable<Buffer>, ctx: SourceContext, where: string): Promise<void> {
  const pax = h.pax ?? {};
  const raw = (pax[RAW_PAX] as RawPax | undefined) ?? new Map<string, Buffer>();
  let name = h.name;
  const sparse = sparseInfo(pax, where);
  if (sparse) name = sparse.name;
  const parts = entryComponents(name, where);
  const kind = kindOf(h.type, where);
  const inode = newInode(kind === 'link' ? 'file' : kind, num(h.mode, 'mode', where), {
    uid: paxInt(pax.uid, num(h.uid, 'uid', where), 'uid', where),
    gid: paxInt(pax.gid, num(h.gid, 'gid', where), 'gid', where),
    xattrs: xattrsOf(pax, raw, where),
  });
  setMtime(inode, h, pax, where);
  if (kind === 'link') {
    if (!h.linkname) throw new BuildError(where, 'hard link without a target');
    tree.link(parts, entryComponents(h.linkname, where), where);
    await drain(data);
    return;
  }
  if (kind === 'file') {
    const chunker = new FileChunker(ctx.writer, ctx.chunkSize, ctx.hot ? ctx.hot(parts) : 0);
    if (sparse) {
      const reader = new SparseReader(chunker, sparse.realSize, where);
      for await (const buf of data) {
        reader.push(buf);
        ctx.onProgress?.(buf.length);
      }
      reader.end();
    } else {
      for await (const buf of data) {
        chunker.push(buf);
        ctx.onProgress?.(buf.length);
      }
    }
    inode.chunks = chunker.end();
    inode.size = chunker.size;
  } else {
    await drain(data);
    if (kind === 'symlink') {
      if (!h.linkname) throw new BuildError(where, 'symlink without a target');
      inode.target = h.linkname;
      inode.size = Buffer.byteLength(h.linkname);
    } else if (kind === 'chardev' || kind === 'blockdev') {
      inode.rdev = encodeDev(num(h.devmajor, 'devmajor', where), num(h.devminor, 'devminor', where));
    }
  }
  tree.add(parts, inode, where);
}

function kindOf(type: string | null | undefined, where: string): InodeKind | 'link' {
  switch (type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'link';
    case 'character-device':
      return 'chardev';
    case 'block-device':
      return 'blockdev';
    case 'fifo':
      return 'fifo';
    default:
      // tar-stream reports typeflags it does not know (old GNU sparse 'S', 'D', 'V', ...) as null.
      throw new BuildError(where, type ? `unsupported tar entry type '${type}'` : 'unsupported tar entry type (not 0-7: old GNU sparse files need tar --format=posix)');
  }
}

function num(v: number | undefined, field: string, where: string): number {
  if (v === undefined || v === null) return 0;
  if (!Number.isSafeInteger(v) || v < 0) throw new BuildError(where, `bad ${field} field in tar header`);
  return v;
}

function paxInt(v: unknown, fallback: number, field: string, where: string): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (typeof v !== 'string' || !/^\d+$/.test(v) || n > 0xffffffff) throw new BuildError(where, `bad PAX ${field} '${String(v)}'`);
  return n;
}

function setMtime(inode: Inode, h: Header, pax: Record<string | symbol, unknown>, where: string): void {
  const p = pax.mtime;
  if (typeof p === 'string') {
    const m = /^(-?\d+)(?:\.(\d+))?$/.exec(p);
    if (!m) throw new BuildError(where, `bad PAX mtime '${p}'`);
    inode.mtime = Math.max(0, Number(m[1]));
    inode.mtimeNsec = m[2] ? Number((m[2] + '000000000').slice(0, 9)) : 0;
    return;
  }
  const ms = h.mtime instanceof Date ? h.mtime.getTime() : NaN;
  if (!Number.isFinite(ms)) throw new BuildError(where, 'bad mtime field in tar header');
  inode.mtime = Math.max(0, Math.floor(ms / 1000));
}

function xattrsOf(pax: Record<string | symbol, unknown>, raw: RawPax, where: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const key of Object.keys(pax)) {
    if (key.startsWith('SCHILY.xattr.')) {
      const value = raw.get(key) ?? Buffer.from(String(pax[key]));
      out.set(key.slice('SCHILY.xattr.'.length), value);
    } else if (key.startsWith('LIBARCHIVE.xattr.')) {
      let name: string;
      try {
        name = decodeURIComponent(key.slice('LIBARCHIVE.xattr.'.length));
      } catch {
        throw new BuildError(where, `bad xattr name in PAX key '${key}'`);
      }
      out.set(name, Buffer.from(String(pax[key]), 'base64'));
    }
  }
  // The format's own encoder is the judge of what EROFS can store (name prefixes, sizes).
  try {
    encodeXattrs(out, where);
  } catch (err) {
    throw new BuildError(where, errorMessage(err).replace(`${where}: `, ''));
  }
  return out;
}

function sparseInfo(pax: Record<string | symbol, unknown>, where: string): { name: string; realSize: number } | null {
  if (pax['GNU.sparse.major'] === undefined && pax['GNU.sparse.map'] === undefined && pax['GNU.sparse.offset'] === undefined) return null;
  if (pax['GNU.sparse.major'] !== '1' || pax['GNU.sparse.minor'] !== '0') {
    throw new BuildError(where, 'only GNU sparse format 1.0 is supported (tar --sparse --format=posix)');
  }
  const name = pax['GNU.sparse.name'];
  const realSize = Number(pax['GNU.sparse.realsize']);
  if (typeof name !== 'string' || !Number.isSafeInteger(realSize) || realSize < 0) throw new BuildError(where, 'bad GNU sparse 1.0 PAX records');
  return { name, realSize };
}

async function drain(data: AsyncIterable<Buffer>): Promise<void> {
  for await (const piece of data) void piece;
}

function describe(err: unknown): string {
  const msg = errorMessage(err);
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code && code.startsWith('Z_')) return `gzip: ${msg}`;
  return msg;
}
