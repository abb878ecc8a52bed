/**
 * Where nydusify puts blobs when they do not go to the target registry: upstream's
 * `--backend-type s3|oss|localfs` with `--backend-config JSON` or `--backend-config-file FILE`
 * (the same keys as nydusd's backend of that type; localfs: `{"dir": ...}`). An object is named
 * `<object_prefix><blob id>`, a localfs file `<dir>/<blob id>`, as upstream names them, so nydusd
 * (ours and upstream's) finds them with the same config.
 *
 * Contract: `put` leaves the whole blob in place or throws; `download` writes the blob to a file
 * and throws unless its sha256 is the blob id. Credentials are read from the config only (never
 * from arguments of child processes) and appear in no message.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ConfigError, parseObjectStoreConfig } from '../daemon/config';
import { ObjectStore } from '../fetch/object-store';

export type BlobBackendType = 's3' | 'oss' | 'localfs';

export interface BlobBackend {
  readonly type: BlobBackendType;
  /** For messages: `s3 bucket B at HOST`, `localfs DIR`. */
  readonly where: string;
  /** The stored blob's size, or undefined when it is not there. */
  size(blobId: string): Promise<number | undefined>;
  put(blobId: string, file: string, size: number): Promise<void>;
  download(blobId: string, file: string): Promise<void>;
  close(): Promise<void>;
}

/** Pieces read per request when a whole blob is downloaded from a bucket. */
const DOWNLOAD_PIECE = 16 << 20;

/** The config text of `--<prefix>backend-config` / `--<prefix>backend-config-file` (one of them). */
export function backendConfigText(flag: string, json?: string, file?: string): string {
  if (json && file) throw new Error(`--${flag}backend-config conflicts with --${flag}backend-config-file`);
  if (file) {
    try {
      return fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw new Error(`--${flag}backend-config-file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  if (!json?.trim()) throw new Error(`--${flag}backend-type needs --${flag}backend-config or --${flag}backend-config-file`);
  return json;
}

/** Opens the backend of `--<flag>backend-type TYPE`; `warn` hears about unknown config keys. */
export function openBlobBackend(type: string, configText: string, flag: string, warn: (line: string) => void): BlobBackend {
  const where = `--${flag}backend-config`;
  if (type !== 's3' && type !== 'oss' && type !== 'localfs') throw new Error(`--${flag}backend-type ${JSON.stringify(type)}: expected s3, oss or localfs`);
  let raw: unknown;
  try {
    raw = JSON.parse(configText);
  } catch (e) {
    throw new Error(`${where}: invalid JSON: ${(e as Error).message}`);
  }
  try {
    if (type === 'localfs') {
      const dir = (raw as { dir?: unknown } | null)?.dir;
      if (typeof dir !== 'string' || !dir) throw new ConfigError(`${where}.dir`, 'is required for the localfs backend (a directory)');
      for (const k of Object.keys(raw as object)) if (k !== 'dir') warn(`${where}.${k}: unknown key, ignored`);
      return new LocalFsBackend(dir);
    }
    const { config, unknown } = parseObjectStoreConfig(type, raw, where);
    for (const k of unknown) warn(`${k}: unknown key, ignored`);
    return new BucketBackend(new ObjectStore(config));
  } catch (e) {
    if (e instanceof ConfigError) throw new Error(e.message);
    throw e;
  }
}

/** Streams `file` through sha256 and checks it is `blobId`. */
async function checkDigest(file: string, blobId: string, where: string): Promise<void> {
  const h = crypto.createHash('sha256');
  for await (const c of fs.createReadStream(file)) h.update(c as Buffer);
  const got = h.digest('hex');
  if (got !== blobId) throw new Error(`${where}: blob ${blobId} has digest sha256:${got}`);
}

class BucketBackend implements BlobBackend {
  readonly type: 's3' | 'oss';
  readonly where: string;

  constructor(private readonly store: ObjectStore) {
    this.type = store.cfg.kind;
    this.where = store.where;
  }

  size(blobId: string): Promise<number | undefined> {
    return this.store.size(blobId);
  }

  put(blobId: string, file: string, size: number): Promise<void> {
    return this.store.put(blobId, file, size);
  }

  async download(blobId: string, file: string): Promise<void> {
    const size = await this.store.size(blobId);
    if (size === undefined) throw new Error(`${this.where}: object ${this.store.key(blobId)} does not exist`);
    const fd = fs.openSync(file, 'w', 0o600);
    try {
      for (let off = 0; off < size; off += DOWNLOAD_PIECE) {
        const piece = await this.store.getRange(blobId, off, Math.min(DOWNLOAD_PIECE, size - off));
        fs.writeSync(fd, piece, 0, piece.length, off);
      }
    } finally {
      fs.closeSync(fd);
    }
    await checkDigest(file, blobId, this.where);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

class LocalFsBackend implements BlobBackend {
  readonly type = 'localfs';
  readonly where: string;

  constructor(private readonly dir: string) {
    this.where = `localfs ${dir}`;
  }

  async size(blobId: string): Promise<number | undefined> {
    try {
      const st = await fs.promises.stat(path.join(this.dir, blobId));
      return st.isFile() ? st.size : undefined;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async put(blobId: string, file: string): Promise<void> {
    await fs.promises.mkdir(this.dir, { recursive: true });
    // Copied under a temporary name and renamed, so a reader never sees half a blob.
    const tmp = path.join(this.dir, `.${blobId}.${process.pid}.tmp`);
    try {
      await fs.promises.copyFile(file, tmp);
      await fs.promises.rename(tmp, path.join(this.dir, blobId));
    } catch (e) {
      await fs.promises.rm(tmp, { force: true });
      throw new Error(`${this.where}: storing blob ${blobId}: ${(e as Error).message}`);
    }
  }

  async download(blobId: string, file: string): Promise<void> {
    const from = path.join(this.dir, blobId);
    try {
      await fs.promises.copyFile(from, file);
    } catch (e) {
      throw new Error(`${this.where}: blob ${blobId}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    await checkDigest(file, blobId, this.where);
  }

  async close(): Promise<void> {}
}
