/**
 * nydus-overlayfs: the mount helper containerd runs (through mount.fuse) for the snapshotter's
 * `fuse.nydus-overlayfs` mounts. It drops the options meant for VM runtimes (`extraoption=`,
 * `io.katacontainers.volume=`) and mounts a plain overlay with util-linux `mount`.
 *
 *   nydus-overlayfs overlay <target> -o lowerdir=…,upperdir=…,workdir=…,extraoption=…
 *
 * Exit 0 once mounted; otherwise one line on stderr (containerd shows it in its error) and exit 1.
 * With NYDUS_OVERLAYFS_LOG=<file>, one line per mount is appended there (the helper runs under
 * containerd's shim, whose output nobody sees on success). Options are never logged: they are
 * paths only, but the dropped ones carry the image's nydusd config.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { overlayMountCommand, parseHelperArgs } from '../mount-helper/overlay-args';

function note(line: string): void {
  const file = process.env.NYDUS_OVERLAYFS_LOG;
  if (!file) return;
  try {
    fs.appendFileSync(file, `${new Date().toISOString()} nydus-overlayfs[${process.pid}]: ${line}\n`, { mode: 0o600 });
  } catch {
    // The log is a convenience; the mount result is what counts.
  }
}

function fail(msg: string): never {
  process.stderr.write(`nydus-overlayfs: ${msg}\n`);
  note(`error: ${msg}`);
  process.exit(1);
}

function main(): void {
  const argv = process.argv.slice(2);
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write('usage: nydus-overlayfs overlay <target> -o <options>\n');
    return;
  }
  let args;
  try {
    args = parseHelperArgs(argv);
  } catch (err) {
    fail((err as Error).message);
  }
  const cmd = overlayMountCommand(args);
  const r = spawnSync('mount', cmd.args, { cwd: cmd.cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 });
  if (r.error) fail(`running mount: ${r.error.message}`);
  if (r.status !== 0) fail(`mount overlay at ${args.target}: ${(r.stderr || r.stdout || `exit ${r.status}`).trim().split('\n')[0]}`);
  const lowers = args.options.find((o) => o.startsWith('lowerdir='))?.split(':').length ?? 0;
  note(`mounted overlay at ${args.target} (${lowers} lower dirs, ${args.dropped} nydus option(s) dropped${cmd.cwd ? `, paths relative to ${cmd.cwd}` : ''})`);
}

main();
