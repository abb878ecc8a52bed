/**
 * Test OCI images, built offline with umoci from the shared fixture trees, cached as OCI layouts
 * under $NYDUS_FIXTURES/oci-images/<name>, and pushed into a test registry with skopeo.
 *
 *   busybox        one layer: the busybox tree
 *   pause          the busybox tree whose entrypoint sleeps forever: a pod sandbox image for
 *                  containerd's CRI plugin (`sandbox_image`), as there is no registry to pull one from
 *   debian         one layer: the Debian rootfs tar
 *   debian-2layer  the Debian layer plus a second layer that deletes (whiteouts, one opaque dir)
 *                  and adds files; DEBIAN_2LAYER_CHANGES says exactly what.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { FIXTURES_DIR, busyboxRootfsDir, debianRootfsTar } from './fixtures';

const run = promisify(execFile);

export type TestImage = 'busybox' | 'pause' | 'debian' | 'debian-2layer';

/** What the second layer of `debian-2layer` does to the Debian tree. */
export const DEBIAN_2LAYER_CHANGES = {
  /** Removed by plain whiteouts (a file and a whole directory). */
  deleted: ['/etc/motd', '/usr/share/doc/perl'],
  /** Made opaque: its lower contents vanish, only `opaqueKept` remains inside. */
  opaqueDir: '/usr/share/man',
  opaqueKept: '/usr/share/man/README.nydus',
  /** New or replaced files and their contents (big.bin spans several 1 MiB chunks). */
  added: {
    '/etc/hostname': 'nydus-test\n',
    '/opt/nydus-test/hello.txt': 'hello from the upper layer\n',
  } as Record<string, string>,
  bigFile: '/opt/nydus-test/big.bin',
  bigFileSize: 3 * 1024 * 1024 + 123,
};

/** Deterministic pseudo-random bytes (xorshift) so the big file compresses poorly but is reproducible. */
export function patternBytes(size: number, seed = 0x9e3779b9): Buffer {
  const buf = Buffer.alloc(size);
  let x = seed >>> 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13; x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5; x >>>= 0;
    buf[i] = x & 0xff;
  }
  return buf;
}

const IMAGES_DIR = path.join(FIXTURES_DIR, 'oci-images');
const EPOCH = new Date('2024-01-01T00:00:00Z');

async function tarDir(dir: string, out: string): Promise<void> {
  await run('tar', ['--numeric-owner', '--xattrs', "--xattrs-include=*", '-C', dir, '-cf', out, '.'], { maxBuffer: 1 << 24 });
}

async function upperLayerTar(work: string): Promise<string> {
  const stage = path.join(work, 'upper');
  const c = DEBIAN_2LAYER_CHANGES;
  const put = (p: string, data: string | Buffer) => {
    const full = path.join(stage, p);
    fs.mkdirSync(path.dirname(full), { recursive: true });
    fs.writeFileSync(full, data);
  };
  for (const d of c.deleted) put(path.join(path.dirname(d), '.wh.' + path.basename(d)), '');
  put(path.join(c.opaqueDir, '.wh..wh..opq'), '');
  put(c.opaqueKept, 'only this survives in the opaque directory\n');
  for (const [p, content] of Object.entries(c.added)) put(p, content);
  put(c.bigFile, patternBytes(c.bigFileSize));
  // Stable metadata: directories 0755, everything dated EPOCH.
  const fix = (p: string) => {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755);
      for (const e of fs.readdirSync(p)) fix(path.join(p, e));
    } else fs.chmodSync(p, 0o644);
    fs.utimesSync(p, EPOCH, EPOCH);
  };
  fix(stage);
  const out = path.join(work, 'upper.tar');
  await tarDir(stage, out);
  return out;
}

async function umoci(args: string[]): Promise<void> {
  await run('umoci', args, { maxBuffer: 1 << 24, timeout: 10 * 60_000 });
}

/** The cached OCI layout of `name` (tag `latest`); builds it on first use. */
export async function imageLayout(name: TestImage): Promise<string> {
  const dir = path.join(IMAGES_DIR, name);
  if (fs.existsSync(path.join(dir, 'index.json'))) return dir;
  fs.mkdirSync(IMAGES_DIR, { recursive: true });
  const work = fs.mkdtempSync(path.join(IMAGES_DIR, `.${name}.partial-`));
  try {
    const layout = path.join(work, 'layout');
    const img = `${layout}:latest`;
    await umoci(['init', '--layout', layout]);
    await umoci(['new', '--image', img]);
    const created = EPOCH.toISOString();
    if (name === 'busybox' || name === 'pause') {
      const tar = path.join(work, 'busybox.tar');
      await tarDir(busyboxRootfsDir(), tar);
      await umoci(['raw', 'add-layer', '--image', img, '--history.created', created, '--history.created_by', 'busybox tree', tar]);
      const run = name === 'pause' ? ['--config.entrypoint', '/bin/sleep', '--config.entrypoint', 'inf'] : ['--config.cmd', '/bin/sh'];
      await umoci(['config', '--image', img, ...run, '--created', created, '--no-history']);
    } else {
      await umoci(['raw', 'add-layer', '--image', img, '--history.created', created, '--history.created_by', 'debootstrap bookworm', debianRootfsTar()]);
      if (name === 'debian-2layer') {
        const upper = await upperLayerTar(work);
        await umoci(['raw', 'add-layer', '--image', img, '--history.created', created, '--history.created_by', 'delete and add files', upper]);
      }
      await umoci(['config', '--image', img, '--config.cmd', '/usr/bin/python3', '--config.env', 'LANG=C.UTF-8', '--created', created, '--no-history']);
    }
    try {
      fs.renameSync(layout, dir);
    } catch (e) {
      // Another process finished the same layout first; theirs is as good as ours.
      if (!fs.existsSync(path.join(dir, 'index.json'))) throw e;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  return dir;
}

export interface PushTarget {
  host: string;
  username?: string;
  password?: string;
}

/**
 * Pushes test image `name` to `host/repo:tag` over plain HTTP; returns the reference. `format`
 * `v2s2` converts to Docker schema-2 media types on the way.
 */
export async function pushImage(target: PushTarget, name: TestImage, repo: string, tag = 'latest', format: 'oci' | 'v2s2' = 'oci'): Promise<string> {
  const layout = await imageLayout(name);
  const ref = `${target.host}/${repo}:${tag}`;
  const args = ['copy', '--quiet', '--dest-tls-verify=false', '--format', format];
  if (target.username !== undefined) args.push('--dest-creds', `${target.username}:${target.password ?? ''}`);
  args.push(`oci:${layout}:latest`, `docker://${ref}`);
  await run('skopeo', args, { maxBuffer: 1 << 24, timeout: 10 * 60_000 });
  return ref;
}

/** `skopeo inspect --raw` (manifest) or `--config` of a reference, parsed. */
export async function skopeoInspect(target: PushTarget, ref: string, what: 'raw' | 'config' = 'raw'): Promise<any> {
  const args = ['inspect', '--tls-verify=false', what === 'raw' ? '--raw' : '--config'];
  if (target.username !== undefined) args.push('--creds', `${target.username}:${target.password ?? ''}`);
  args.push(`docker://${ref}`);
  const { stdout } = await run('skopeo', args, { maxBuffer: 1 << 26, timeout: 2 * 60_000 });
  return JSON.parse(stdout);
}
