/**
 * /dev/fuse: open a FUSE connection, mount it with the kernel's `fd=N` option, find the
 * connection's id, and abort it. Unmounting is unmount.ts's job.
 *
 * Contract: `mountFuse` returns an open /dev/fuse descriptor whose first request is the kernel's
 * INIT, or throws one line naming what failed (and closes the descriptor); `abortConnection` makes
 * every pending and future read of the descriptor fail with ENODEV, as closing the last descriptor
 * of a connection would.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { mountAt } from './mount-table';

export interface MountSpec {
  /** Where to mount (created when missing). */
  mountpoint: string;
  /** The mount's source column (`nydus`). */
  source: string;
  /** Filesystem subtype: the mount shows as `fuse.<subtype>`. */
  subtype: string;
  /** Extra `-o` options (`ro`, `allow_other`, `default_permissions`, `max_read=...`). */
  options: string[];
}

function run(cmd: string, args: string[], stdio: ('ignore' | 'pipe' | number)[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args, { stdio });
    let stderr = '';
    p.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', (e) => resolve({ code: -1, stderr: e.message }));
    p.on('close', (code) => resolve({ code, stderr: stderr.trim() }));
  });
}

/** The FUSE misc device is character device 10:229 on every Linux. */
const FUSE_MAJOR = 10;
const FUSE_MINOR = 229;
const UNAVAILABLE = 'FUSE transport unavailable: /dev/fuse';
const HINT = 'load the fuse kernel module (modprobe fuse) or give the container /dev/fuse';

/** Opens /dev/fuse read-write, or throws one line saying why it is not usable. */
function openDevice(): number {
  let fd: number;
  try {
    fd = fs.openSync('/dev/fuse', fs.constants.O_RDWR);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${UNAVAILABLE}: ${code === 'ENOENT' ? 'no such device file' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : code}; ${HINT}`);
  }
  const st = fs.fstatSync(fd);
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
  if (!st.isCharacterDevice() || major !== FUSE_MAJOR || minor !== FUSE_MINOR) {
    fs.closeSync(fd);
    throw new Error(`${UNAVAILABLE} is not the FUSE device (${st.isCharacterDevice() ? `character device ${major}:${minor}` : 'not a character device'}, want ${FUSE_MAJOR}:${FUSE_MINOR}); ${HINT}`);
  }
  return fd;
}

/** Opens /dev/fuse and mounts it at `spec.mountpoint` through mount(8), which gets the descriptor as its fd 3. */
export async function mountFuse(spec: MountSpec): Promise<number> {
  fs.mkdirSync(spec.mountpoint, { recursive: true });
  const fd = openDevice();
  // rootmode is the root's file type for the kernel's first inode; uid/gid those of the mounter.
  const opts = [`fd=3`, 'rootmode=40000', `user_id=${process.getuid?.() ?? 0}`, `group_id=${process.getgid?.() ?? 0}`, ...spec.options];
  const r = await run('mount', ['-i', '-t', `fuse.${spec.subtype}`, '-o', opts.join(','), spec.source, spec.mountpoint], ['ignore', 'ignore', 'pipe', fd]);
  if (r.code !== 0) {
    fs.closeSync(fd);
    throw new Error(`mount ${spec.mountpoint}: ${r.stderr.split('\n')[0] || `mount exited with ${r.code}`}`);
  }
  return fd;
}

/**
 * The device (`0:NN`) of the FUSE mount at `dir`: its minor is the connection id under fusectl, and
 * `0:NN` names its bdi in /sys/class/bdi.
 */
export function mountDevice(dir: string): string | undefined {
  const m = mountAt(dir);
  return m?.fsType.startsWith('fuse') ? m.device : undefined;
}

/**
 * Sets the readahead window of the mount's bdi. The kernel starts a FUSE mount at 128 KiB, so
 * sequential reads arrive as 128 KiB READs whatever max_pages allows; a window of max_pages lets
 * them arrive whole.
 */
export function setReadAhead(dev: string, kib: number): boolean {
  try {
    fs.writeFileSync(`/sys/class/bdi/${dev}/read_ahead_kb`, String(kib));
    return true;
  } catch {
    return false;
  }
}

const FUSECTL = '/sys/fs/fuse/connections';

/**
 * Aborts FUSE connection `id` through fusectl. systemd mounts fusectl at boot; where nobody did,
 * it is mounted here (it only exposes the connections' control files).
 */
export async function abortConnection(dev: string): Promise<boolean> {
  const id = Number(dev.split(':')[1]);
  const file = `${FUSECTL}/${id}/abort`;
  if (!fs.existsSync(`${FUSECTL}/${id}`) && fs.readdirSync(FUSECTL).length === 0) await run('mount', ['-t', 'fusectl', 'fusectl', FUSECTL], ['ignore', 'ignore', 'pipe']);
  try {
    fs.writeFileSync(file, '1');
    return true;
  } catch {
    return false;
  }
}
