/**
 * What `nydus-overlayfs` is asked to mount, and the plain overlay mount it performs instead.
 *
 * Callers, as verified in their sources:
 *  - containerd 1.6 (mount/mount_linux.go `mountWithHelper`) runs for a `fuse.nydus-overlayfs`
 *    mount `mount.fuse overlay <target> -o <opt> -o <opt>… -t nydus-overlayfs`; fuse3's mount.fuse
 *    joins the options, may add `dev`/`suid`, and runs `nydus-overlayfs overlay <target> -o <opts>`
 *    through /bin/sh, so the helper is found in PATH.
 *  - util-linux `mount -t fuse.nydus-overlayfs overlay <target> -o …` runs
 *    `/sbin/mount.fuse.nydus-overlayfs overlay <target> [-sfnv] -o <opts> -t fuse.nydus-overlayfs`
 *    when that file exists, else mount.fuse as above.
 *
 * Contract: `parseHelperArgs` accepts both shapes and fails with one line on anything else (a
 * source other than `overlay`, no target, no options left); `extraoption=` and
 * `io.katacontainers.volume=` options are dropped. `overlayMountCommand` yields the `mount`
 * arguments and the directory to run it in: when the options would not fit the kernel's one-page
 * mount data, paths are made relative to their common parent (as containerd does for overlay).
 */
import * as path from 'node:path';
import { isNydusOnlyOption } from '../snapshotter/kata-mounts';

export interface HelperArgs {
  source: string;
  target: string;
  /** The overlay options, nydus-only ones removed. */
  options: string[];
  /** How many nydus-only options were dropped. */
  dropped: number;
}

/** Flags util-linux mount helpers may get; they ask for nothing this helper does differently. */
const IGNORED_FLAGS = new Set(['-s', '-f', '-n', '-v']);

export function parseHelperArgs(argv: string[]): HelperArgs {
  const positional: string[] = [];
  const raw: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '-t') {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      if (a === '-o') raw.push(...argv[i + 1].split(',').filter(Boolean));
      i++;
    } else if (IGNORED_FLAGS.has(a)) {
      continue;
    } else if (a.startsWith('-')) {
      throw new Error(`unknown flag ${a} (usage: nydus-overlayfs overlay <target> -o <options>)`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 2) throw new Error(`expected "overlay <target>", got ${positional.length} arguments (usage: nydus-overlayfs overlay <target> -o <options>)`);
  const [source, target] = positional;
  if (source !== 'overlay') throw new Error(`invalid filesystem source ${JSON.stringify(source)} for overlayfs (must be "overlay")`);
  if (!target) throw new Error('empty overlayfs mount target');
  const options = raw.filter((o) => !isNydusOnlyOption(o));
  if (options.length === 0) throw new Error('empty overlayfs mount options');
  return { source, target, options, dropped: raw.length - options.length };
}

/** The kernel copies one page of mount data; leave room as containerd does. */
const MAX_DATA = 4096 - 512;
const PATH_KEYS = ['lowerdir=', 'upperdir=', 'workdir='];

/** The longest common directory of `paths` (never "/"), or undefined. */
function commonDir(paths: string[]): string | undefined {
  let prefix = paths[0];
  for (const p of paths) while (!p.startsWith(prefix)) prefix = prefix.slice(0, -1);
  const dir = path.dirname(prefix + 'x');
  return dir === '/' || dir === '.' ? undefined : dir;
}

/** Options with overlay paths relative to a common directory, if that helps. */
function compact(options: string[]): { cwd?: string; options: string[] } {
  const dirs = options.flatMap((o) => {
    const k = PATH_KEYS.find((p) => o.startsWith(p));
    return k ? o.slice(k.length).split(':') : [];
  });
  const cwd = dirs.length > 1 && dirs.every((d) => path.isAbsolute(d)) ? commonDir(dirs) : undefined;
  if (!cwd) return { options };
  const rel = (d: string): string => path.relative(cwd, d);
  return {
    cwd,
    options: options.map((o) => {
      const k = PATH_KEYS.find((p) => o.startsWith(p));
      return k ? k + o.slice(k.length).split(':').map(rel).join(':') : o;
    }),
  };
}

/** `mount` arguments for the plain overlay, and the directory to run it in. */
export function overlayMountCommand(a: HelperArgs): { args: string[]; cwd?: string } {
  let opts: { cwd?: string; options: string[] } = { options: a.options };
  if (a.options.join(',').length >= MAX_DATA) opts = compact(a.options);
  // -i: never hand this mount to another helper (there is none for overlay, but be explicit).
  return { args: ['-i', '-t', 'overlay', a.source, a.target, '-o', opts.options.join(',')], cwd: opts.cwd };
}
