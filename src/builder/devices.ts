/**
 * Device numbers. The model stores rdev as the kernel's `new_encode_dev` (what EROFS keeps in
 * i_u); tar headers carry major/minor; lstat gives glibc's 64-bit dev_t.
 */

export function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | (major << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

export function decodeDev(rdev: number): { major: number; minor: number } {
  return { major: (rdev & 0xfff00) >>> 8, minor: ((rdev & 0xff) | ((rdev >>> 12) & 0xfff00)) >>> 0 };
}

/** glibc dev_t (from a bigint lstat) to major/minor. */
export function splitGlibcDev(dev: bigint): { major: number; minor: number } {
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  return { major, minor };
}
