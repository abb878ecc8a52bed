/**
 * Kernel EROFS mode of a rafs instance: the kernel mounts the RAFS v6 bootstrap as a file-backed
 * EROFS filesystem whose devices are this daemon's blob-view files (blob-view.ts), in blob-table
 * order (device id k is blob k − 1). Lookups, stats, listings, xattrs and cached pages never reach
 * nydusd; first reads of data arrive at the blob view as large reads of the blobs' uncompressed
 * address space.
 *
 * Contract:
 *  - `kernelModeProblem(rafs, viewDir)` says why an image cannot be mounted this way (RAFS v5, chunks
 *    off the 4 KiB block grid, device list longer than mount(2)'s one-page option string); the
 *    daemon then serves it over FUSE and logs that line;
 *  - `mount()` resolves once the kernel mounted (the blobs are in the view from then on) or rejects
 *    with one line and leaves nothing behind;
 *  - `unmount()` unmounts (lazily when containers still hold it) and takes the blobs out of the view.
 *
 * When nydusd dies the EROFS mount stays (the kernel owns it): pages already read keep being served
 * from the page cache; a page never read fails with EIO, because its device file belonged to the
 * dead daemon's FUSE connection. A restarted daemon mounts a fresh view and a fresh EROFS mount for
 * new containers; the old mount lives until its last user goes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { setReadAhead } from '../fuse/device';
import { logger } from '../util/log';
import type { BlobView } from './blob-view';
import type { InflightOp } from './fuse';
import { mountSyscall, MS_RDONLY, umountSyscall } from './mount-syscall';
import type { RafsInstance } from './rafs';

const log = logger('erofs-mount');

/** EROFS block size: chunk addresses in the bootstrap are in these units. */
const BLOCK = 4096;
/** mount(2) copies at most one page of options. */
const MAX_OPTIONS = 4095;
/**
 * Read-ahead of the EROFS mount (KiB). The kernel starts a mount at 128 KiB; sequential reads then
 * reach the blob view 128 KiB at a time. 4 MiB lets a cold sequential read arrive as 1 MiB READs
 * (the FUSE request limit), several at once.
 */
const READ_AHEAD_KB = 4096;
/** The FUSE opcode the inflight API reports for blob reads. */
const FUSE_READ = 15;

function options(devices: string[]): string {
  return devices.map((d) => `device=${d}`).join(',');
}

export function kernelModeProblem(rafs: RafsInstance, viewDir: string): string | undefined {
  if (rafs.image.rafsVersion === 5) return 'RAFS v5 bootstrap: the kernel mounts RAFS v6 (EROFS) only';
  for (const bc of rafs.blobs) {
    for (const c of bc.ordered) {
      if (c.uncompressedOffset % BLOCK !== 0) return `blob ${bc.blob.blobId}: chunk ${c.index} starts at ${c.uncompressedOffset}, off the 4 KiB block grid`;
    }
  }
  const opts = options(rafs.blobs.map((bc) => path.join(viewDir, bc.blob.blobId)));
  if (opts.length > MAX_OPTIONS) return `${rafs.blobs.length} blob devices need ${opts.length} bytes of mount options (at most ${MAX_OPTIONS})`;
  return undefined;
}

/**
 * The bdis of file-backed EROFS mounts (`erofs-N`; the kernel names them by a counter, and nothing
 * in sysfs or mountinfo links one to its mount). The one that appears across our mount(2) is ours.
 */
function erofsBdis(): Set<string> {
  try {
    return new Set(fs.readdirSync('/sys/class/bdi').filter((n) => n.startsWith('erofs-')));
  } catch {
    return new Set();
  }
}

/** This process's EROFS mounts one at a time, so each finds its own bdi. */
let mountQueue: Promise<unknown> = Promise.resolve();

/**
 * mount(2) of a RAFS v6 bootstrap as a file-backed EROFS at `mountpoint` over the device files
 * `devices` (blob-table order), with the mount's read-ahead raised to READ_AHEAD_KB. Rejects with
 * one line, leaving nothing mounted. (The read benchmark's floor mounts this way too.)
 */
export async function mountErofs(bootstrap: string, mountpoint: string, devices: string[]): Promise<void> {
  fs.mkdirSync(mountpoint, { recursive: true });
  const run = mountQueue.then(async () => {
    const before = erofsBdis();
    await mountSyscall(path.resolve(bootstrap), mountpoint, 'erofs', MS_RDONLY, options(devices));
    return [...erofsBdis()].filter((b) => !before.has(b));
  });
  mountQueue = run.catch(() => undefined);
  const fresh = await run;
  if (fresh.length !== 1 || !setReadAhead(fresh[0], READ_AHEAD_KB)) log.warn({ mountpoint, bdis: fresh }, `could not set read_ahead_kb to ${READ_AHEAD_KB}; cold sequential reads arrive in 128 KiB pieces`);
}

export class ErofsMount {
  private mounted = false;

  constructor(
    public readonly rafs: RafsInstance,
    public readonly mountpoint: string,
    public readonly bootstrap: string,
    private readonly view: BlobView,
  ) {}

  async mount(): Promise<void> {
    const devices = this.rafs.blobs.map((bc) => this.view.add(this, bc, this.rafs.pipeline));
    try {
      await mountErofs(this.bootstrap, this.mountpoint, devices);
    } catch (e) {
      this.view.remove(this);
      throw e;
    }
    this.mounted = true;
    log.info({ mountpoint: this.mountpoint, devices: devices.length }, 'kernel EROFS mount over the blob view');
  }

  async unmount(): Promise<void> {
    if (this.mounted) {
      this.mounted = false;
      await umountSyscall(this.mountpoint).catch(async (e: Error) => {
        // Containers may still hold it: detach now, the kernel drops it with its last user.
        log.warn({ mountpoint: this.mountpoint, err: e.message }, 'EROFS mount busy; detaching it lazily');
        await umountSyscall(this.mountpoint, true).catch((e2: Error) => log.error({ mountpoint: this.mountpoint, err: e2.message }, 'EROFS unmount failed'));
      });
    }
    this.view.remove(this);
  }

  /** Blob reads of this instance waiting for data, as the inflight API lists FUSE requests. */
  get inflight(): Map<number, InflightOp> {
    const mine = new Set(this.rafs.blobs.map((bc) => bc.blob.blobId));
    const out = new Map<number, InflightOp>();
    for (const [n, r] of this.view.inflight) {
      if (mine.has(r.blobId)) out.set(n, { inode: r.nodeid, opcode: FUSE_READ, unique: n, timestamp_secs: Math.floor(r.startedMs / 1000) });
    }
    return out;
  }
}

/**
 * The instance mounted in kernel EROFS mode, or undefined (after one log line saying why) when the
 * image or the kernel does not allow it: the caller then serves it over FUSE.
 */
export async function tryKernelMount(rafs: RafsInstance, mountpoint: string, bootstrap: string, view: BlobView): Promise<ErofsMount | undefined> {
  let problem = kernelModeProblem(rafs, view.dir);
  if (!problem) {
    const m = new ErofsMount(rafs, mountpoint, bootstrap, view);
    try {
      await view.start();
      await m.mount();
      return m;
    } catch (e) {
      problem = (e as Error).message;
    }
  }
  log.warn({ mountpoint, reason: problem }, 'kernel EROFS mode is not possible for this image; serving it over FUSE');
  return undefined;
}
