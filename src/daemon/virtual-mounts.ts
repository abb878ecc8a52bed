/**
 * Upstream nydusd serves every instance of a daemon under its one --mountpoint: the API names an
 * instance by its path inside it (`/ID`, or `/` for the command-line image). This daemon gives each
 * instance its own FUSE mount, so the API path becomes the host directory `<mountRoot>/ID`. Without
 * a --mountpoint (this project's own shared daemon) the API path is the absolute host path itself.
 */
import * as path from 'node:path';

export function hostMountpoint(mountRoot: string | undefined, apiPath: string): string {
  if (!mountRoot) return path.resolve(apiPath);
  // Normalised below "/" first, so "../x" cannot climb out of the root.
  return path.resolve(path.join(mountRoot, path.posix.normalize(`/${apiPath}`)));
}
