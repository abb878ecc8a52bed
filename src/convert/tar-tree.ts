/**
 * A filesystem tree as a flat map of path -> entry, built by applying OCI layer tars in order
 * (whiteouts and opaque directories applied as the image spec says) with each file's content
 * hashed. `check` builds one from the source layers and one from the nydus image unpacked to a tar,
 * then compares them with `diffTrees`; both sides go through the same tar reading, so the
 * comparison tests the conversion, not two parsers.
 */
import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import * as tarStream from 'tar-stream';

export interface TreeEntry {
  type: 'file' | 'dir' | 'symlink' | 'chardev' | 'blockdev' | 'fifo';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** sha256 hex of the content (files). */
  digest?: string;
  linkname?: string;
  dev?: string;
  /** xattr names and values (as the tar's PAX records carry them), sorted. */
  xattrs?: string;
  /** A directory only implied by a deeper path; only its existence is compared. */
  implicit?: boolean;
}

/** Path without leading `./` or `/` and without a trailing `/`; the root is ''. */
export type FsTree = Map<string, TreeEntry>;

const WH = '.wh.';
const OPAQUE = '.wh..wh..opq';

function norm(name: string): string {
  return name.replace(/^(\.\/|\/)+/, '').replace(/^\.$/, '').replace(/\/+$/, '');
}

function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

function removeSubtree(tree: FsTree, p: string, keepSelf: boolean): void {
  if (!keepSelf) tree.delete(p);
  const prefix = p === '' ? '' : `${p}/`;
  for (const k of [...tree.keys()]) if (k !== '' && k.startsWith(prefix) && k !== p) tree.delete(k);
}

function ensureParents(tree: FsTree, p: string): void {
  for (let d = parentOf(p); ; d = parentOf(d)) {
    if (tree.has(d)) return;
    tree.set(d, { type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, implicit: true });
    if (d === '') return;
  }
}

function xattrsOf(pax: Record<string, string> | null | undefined): string | undefined {
  if (!pax) return undefined;
  const xs = Object.keys(pax).filter((k) => k.startsWith('SCHILY.xattr.')).sort().map((k) => `${k.slice(13)}=${Buffer.from(pax[k]).toString('hex')}`);
  return xs.length ? xs.join(',') : undefined;
}

/**
 * Applies one layer tar to `tree`. With `whiteouts`, `.wh.` entries delete from the layers below
 * and are not added; without, the tar is taken literally (a flattened image has none).
 */
export async function applyLayer(tree: FsTree, input: Readable, opts: { gzip: boolean; whiteouts: boolean; where: string }): Promise<void> {
  const extract = tarStream.extract();
  input.on('error', (e: Error) => extract.destroy(e));
  let upstream: Readable = input;
  if (opts.gzip) {
    const gz = createGunzip();
    gz.on('error', (e: Error) => extract.destroy(e));
    upstream = input.pipe(gz);
  }
  upstream.pipe(extract as unknown as NodeJS.WritableStream);
  const additions: [string, TreeEntry | { hardlink: string }][] = [];
  const deletions: [string, boolean][] = [];
  let n = 0;
  try {
    for await (const entry of extract) {
      n++;
      const h = entry.header;
      const p = norm(h.name);
      const base = p.slice(p.lastIndexOf('/') + 1);
      let digest: string | undefined;
      let size = 0;
      if (h.type === 'file' || h.type === 'contiguous-file') {
        const hash = createHash('sha256');
        for await (const c of entry as AsyncIterable<Buffer>) { hash.update(c); size += c.length; }
        digest = hash.digest('hex');
      } else {
        for await (const _ of entry as AsyncIterable<Buffer>) { /* drain */ }
      }
      if (opts.whiteouts && base === OPAQUE) { deletions.push([parentOf(p), true]); continue; }
      if (opts.whiteouts && base.startsWith(WH)) { deletions.push([(parentOf(p) ? `${parentOf(p)}/` : '') + base.slice(WH.length), false]); continue; }
      const common = { mode: (h.mode ?? 0) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0, xattrs: xattrsOf(h.pax as Record<string, string> | undefined) };
      switch (h.type) {
        case 'file': case 'contiguous-file': additions.push([p, { type: 'file', size, digest, ...common }]); break;
        case 'directory': additions.push([p, { type: 'dir', size: 0, ...common }]); break;
        case 'symlink': additions.push([p, { type: 'symlink', size: 0, linkname: h.linkname ?? '', ...common }]); break;
        case 'link': additions.push([p, { hardlink: norm(h.linkname ?? '') }]); break;
        case 'character-device': additions.push([p, { type: 'chardev', size: 0, dev: `${h.devmajor}:${h.devminor}`, ...common }]); break;
        case 'block-device': additions.push([p, { type: 'blockdev', size: 0, dev: `${h.devmajor}:${h.devminor}`, ...common }]); break;
        case 'fifo': additions.push([p, { type: 'fifo', size: 0, ...common }]); break;
        default: throw new Error(`unsupported tar entry type ${h.type}`);
      }
    }
  } catch (e) {
    input.destroy();
    throw new Error(`${opts.where}: tar entry #${n}: ${(e as Error).message}`);
  }
  // Whiteouts hide what the layers below had; this layer's own entries come after.
  for (const [p, opaque] of deletions) removeSubtree(tree, p, opaque);
  for (const [p, e] of additions) {
    let entry: TreeEntry;
    if ('hardlink' in e) {
      const target = tree.get(e.hardlink);
      if (!target) throw new Error(`${opts.where}: hard link ${p} -> ${e.hardlink}: target missing`);
      entry = target;
    } else entry = e;
    const old = tree.get(p);
    // A non-directory replacing a directory removes what was below it.
    if (old?.type === 'dir' && entry.type !== 'dir') removeSubtree(tree, p, false);
    if (p !== '') ensureParents(tree, p);
    tree.set(p, entry);
  }
}

function describe(e: TreeEntry): string {
  const parts = [e.type, `mode ${e.mode.toString(8)}`, `uid ${e.uid}`, `gid ${e.gid}`];
  if (e.type === 'file') parts.push(`size ${e.size}`, `sha256 ${e.digest?.slice(0, 12)}`);
  if (e.linkname !== undefined) parts.push(`-> ${e.linkname}`);
  if (e.dev) parts.push(`dev ${e.dev}`);
  if (e.xattrs) parts.push(`xattrs ${e.xattrs.length}`);
  return parts.join(' ');
}

/** Differences between two trees as lines (at most `limit`), or [] when they are the same. */
export function diffTrees(a: FsTree, b: FsTree, names: [string, string], limit = 20): string[] {
  const out: string[] = [];
  const add = (s: string) => { if (out.length < limit) out.push(s); };
  for (const [p, ea] of a) {
    const eb = b.get(p);
    const shown = `/${p}`;
    if (!eb) { add(`${shown}: only in ${names[0]}`); continue; }
    if (ea.implicit || eb.implicit) {
      if (ea.type !== eb.type) add(`${shown}: ${names[0]} has ${ea.type}, ${names[1]} has ${eb.type}`);
      continue;
    }
    const da = describe(ea);
    const db = describe(eb);
    if (da !== db || ea.digest !== eb.digest || ea.xattrs !== eb.xattrs) add(`${shown}: ${names[0]} has ${da}; ${names[1]} has ${db}`);
  }
  for (const p of b.keys()) if (!a.has(p)) add(`/${p}: only in ${names[1]}`);
  return out;
}
