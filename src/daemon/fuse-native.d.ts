/** The part of fuse-native's API this daemon uses (the package ships no types). */
declare module 'fuse-native' {
  namespace Fuse {
    type OPERATIONS = Record<string, (...args: any[]) => void>;
    interface OPTIONS {
      force?: boolean;
      mkdir?: boolean;
      allowOther?: boolean;
      kernelCache?: boolean;
      autoCache?: boolean;
      entryTimeout?: number;
      attrTimeout?: number;
      fsname?: string;
      subtype?: string;
      maxRead?: number;
      debug?: boolean;
      timeout?: number | false;
    }
  }
  class Fuse {
    constructor(mnt: string, ops: Fuse.OPERATIONS, opts?: Fuse.OPTIONS);
    mount(cb: (err?: Error | null) => void): void;
    unmount(cb: (err?: Error | null) => void): void;
    static unmount(mnt: string, cb: (err?: Error | null) => void): void;
    static ENOENT: number;
    static ENOTDIR: number;
    static EINVAL: number;
    static EIO: number;
    static EROFS: number;
    static ENODATA: number;
  }
  export = Fuse;
}
