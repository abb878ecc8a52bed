/**
 * A small POSIX (pax) tar writer. We write tars ourselves rather than with tar-stream's packer
 * because its PAX encoder turns values into UTF-8 strings, which corrupts binary xattr values
 * (security.capability) and drops sub-second mtimes. ustar header fields are used when a value
 * fits; a PAX extended header carries whatever does not (long or non-ASCII names and link
 * targets, large ids and sizes, nanosecond mtimes, `SCHILY.xattr.*`).
 */
export type TarType = 'file' | 'link' | 'symlink' | 'character-device' | 'block-device' | 'directory' | 'fifo';

export interface TarHeader {
  name: string;
  type: TarType;
  mode: number;
  uid?: number;
  gid?: number;
  /** Seconds. */
  mtime?: number;
  mtimeNsec?: number;
  size?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Map<string, Buffer>;
  /** Extra PAX records (e.g. GNU sparse keys in crafted test tars). */
  pax?: Map<string, Buffer | string>;
}

const TYPEFLAG: Record<TarType, string> = {
  file: '0', link: '1', symlink: '2', 'character-device': '3', 'block-device': '4', directory: '5', fifo: '6',
};
const BLOCK = 512;

export class TarWriter {
  private closed = false;

  constructor(private readonly out: NodeJS.WritableStream) {}

  /** Writes one entry; `body` (files only) must deliver exactly `size` bytes. */
  async entry(h: TarHeader, body?: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>): Promise<void> {
    const size = h.type === 'file' ? h.size ?? 0 : 0;
    const pax = paxRecords(h, size);
    if (pax.length > 0) {
      await this.write(header({ name: paxName(h.name), type: 'x', mode: 0o644, size: pax.length }));
      await this.write(pax);
      await this.write(padding(pax.length));
    }
    await this.write(header({ ...h, name: h.name, type: TYPEFLAG[h.type], size }));
    if (size === 0) return;
    let written = 0;
    const pieces = Buffer.isBuffer(body) ? [body] : body ?? [];
    for await (const piece of pieces as AsyncIterable<Buffer>) {
      written += piece.length;
      if (written > size) throw new Error(`tar entry '${h.name}': body longer than ${size} bytes`);
      await this.write(piece);
    }
    if (written !== size) throw new Error(`tar entry '${h.name}': body is ${written} bytes, header says ${size}`);
    await this.write(padding(size));
  }

  /** Writes the end-of-archive marker and ends the output stream. */
  async finish(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.write(Buffer.alloc(2 * BLOCK));
    await new Promise<void>((resolve, reject) => {
      this.out.once('error', reject);
      this.out.end(() => resolve());
    });
  }

  private write(buf: Buffer): Promise<void> {
    if (buf.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const ok = this.out.write(buf, (err) => (err ? reject(err) : undefined));
      if (ok) resolve();
      else this.out.once('drain', () => resolve());
    });
  }
}

interface RawHeader {
  name: string;
  type: string;
  mode: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  size: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}

function header(h: RawHeader): Buffer {
  const buf = Buffer.alloc(BLOCK);
  buf.write(asciiField(h.name, 100), 0, 'latin1');
  octal(buf, 100, 8, h.mode & 0o7777);
  octal(buf, 108, 8, h.uid ?? 0);
  octal(buf, 116, 8, h.gid ?? 0);
  octal(buf, 124, 12, h.size);
  octal(buf, 136, 12, Math.max(0, h.mtime ?? 0));
  buf.write(h.type, 156, 'latin1');
  if (h.linkname) buf.write(asciiField(h.linkname, 100), 157, 'latin1');
  buf.write('ustar\u000000', 257, 'latin1');
  octal(buf, 329, 8, h.devmajor ?? 0);
  octal(buf, 337, 8, h.devminor ?? 0);
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of buf) sum += b;
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return buf;
}

/** Writes `value` as NUL-terminated octal; a value too large is written as 0 (PAX carries it). */
function octal(buf: Buffer, off: number, len: number, value: number): void {
  const s = value.toString(8);
  buf.write((s.length < len ? s : '0').padStart(len - 1, '0'), off, 'latin1');
}

function fitsOctal(value: number, len: number): boolean {
  return value.toString(8).length < len;
}

function isPlainAscii(s: string, max: number): boolean {
  return s.length <= max && /^[\x20-\x7e]*$/.test(s);
}

/** A header-field version of a name that needed PAX: readers take the PAX value instead. */
function asciiField(s: string, max: number): string {
  return s.replace(/[^\x20-\x7e]/g, '_').slice(0, max);
}

function paxName(name: string): string {
  const base = name.replace(/\/+$/, '').split('/').pop() ?? '';
  return asciiField(`PaxHeaders/${base}`, 100);
}

function paxRecords(h: TarHeader, size: number): Buffer {
  const records: Buffer[] = [];
  const add = (key: string, value: Buffer | string): void => {
    const v = Buffer.isBuffer(value) ? value : Buffer.from(value, 'utf8');
    const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), v, Buffer.from('\n')]);
    let len = body.length + String(body.length).length;
    if (String(len).length !== String(body.length).length) len = body.length + String(len).length;
    records.push(Buffer.from(String(len)), body);
  };
  if (!isPlainAscii(h.name, 100)) add('path', h.name);
  if (h.linkname && !isPlainAscii(h.linkname, 100)) add('linkpath', h.linkname);
  if (!fitsOctal(h.uid ?? 0, 8)) add('uid', String(h.uid));
  if (!fitsOctal(h.gid ?? 0, 8)) add('gid', String(h.gid));
  if (!fitsOctal(size, 12)) add('size', String(size));
  if (h.mtimeNsec) add('mtime', `${h.mtime ?? 0}.${String(h.mtimeNsec).padStart(9, '0')}`);
  for (const [k, v] of h.xattrs ?? []) add(`SCHILY.xattr.${k}`, v);
  for (const [k, v] of h.pax ?? []) add(k, v);
  return Buffer.concat(records);
}

function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}
