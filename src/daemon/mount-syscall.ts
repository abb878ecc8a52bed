/**
 * mount(2) and umount2(2) with exactly the arguments given, for file-backed EROFS mounts.
 *
 * Why not mount(8): util-linux's mount (and busybox's) turns a regular-file source of a filesystem
 * blkid knows into a loop device, and once the bootstrap is a block device the kernel wants every
 * `device=` to be one too: one loop device per blob over the blob-view file, each with its own queue
 * and request size limit, that must be found and detached after a crash. The kernel's file-backed
 * EROFS (CONFIG_EROFS_FS_BACKED_BY_FILE) takes the regular files directly, so nothing is left to
 * clean up but the mount itself. Node has no binding for mount(2) and this project builds no native
 * code of its own, so a one-line perl calls the system call through perl's `syscall` builtin: perl-base
 * is essential on Debian (always installed) and starts in milliseconds (python3 with ctypes took
 * 0.3-0.9 s per mount on a loaded machine). The syscall numbers are per architecture, below.
 *
 * Contract: `mountSyscall` resolves once the kernel mounted, or rejects with one line naming the
 * target and the errno (`EINVAL: Invalid argument`). It runs asynchronously: the kernel opens the
 * `device=` files during the call, and when they live on this process's own FUSE mount, this
 * process must keep answering while it waits. `umountSyscall` unmounts (lazily with `detach`).
 */
import { spawn } from 'node:child_process';

export const MS_RDONLY = 1;
export const MNT_DETACH = 2;

/** mount and umount2 in the kernel's syscall tables (arch/x86/entry/syscalls, include/uapi/asm-generic/unistd.h). */
const SYSCALLS: Partial<Record<NodeJS.Architecture, { mount: number; umount2: number }>> = {
  x64: { mount: 165, umount2: 166 },
  arm64: { mount: 40, umount2: 39 },
  riscv64: { mount: 40, umount2: 39 },
};

// argv: syscall number, argument types (s = string, passed as a pointer; i = integer), arguments.
const HELPER = String.raw`use Errno; my ($nr, $types, @a) = @ARGV; for my $k (0 .. $#a) { $a[$k] += 0 if substr($types, $k, 1) eq 'i' }
if (syscall($nr + 0, @a) != 0) { my ($n) = grep { $!{$_} } keys %!; print STDERR (($n // 'errno ' . ($! + 0)) . ": $!\n"); exit 1 }`;
const TYPES = { mount: 'sssis', umount2: 'si' } as const;

function helper(call: 'mount' | 'umount2', args: string[]): Promise<void> {
  const nr = SYSCALLS[process.arch]?.[call];
  if (nr === undefined) return Promise.reject(new Error(`no ${call} syscall number known for ${process.arch}`));
  return new Promise((resolve, reject) => {
    const p = spawn('perl', ['-e', HELPER, String(nr), TYPES[call], ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', (e) => reject(new Error(`perl (needed to call ${call}(2)): ${e.message}`)));
    p.on('close', (code) => (code === 0 ? resolve() : reject(new Error(err.trim().split('\n').pop() || `perl exited with ${code}`))));
  });
}

export async function mountSyscall(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
  try {
    await helper('mount', [source, target, fstype, String(flags), data]);
  } catch (e) {
    throw new Error(`mount -t ${fstype} ${source} ${target}: ${(e as Error).message}`);
  }
}

export async function umountSyscall(target: string, detach = false): Promise<void> {
  try {
    await helper('umount2', [target, String(detach ? MNT_DETACH : 0)]);
  } catch (e) {
    throw new Error(`umount ${target}: ${(e as Error).message}`);
  }
}
