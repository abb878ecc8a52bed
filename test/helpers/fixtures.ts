/**
 * Shared test fixtures built by scripts/fixtures.sh and cached on the machine between runs.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

export const FIXTURES_DIR = process.env.NYDUS_FIXTURES ?? '/var/tmp/nydus-ts-fixtures';
export const REPO_ROOT = path.resolve(__dirname, '..', '..');
/** Images written by upstream Nydus, copied into the repository (provenance in its README.md). */
export const UPSTREAM_FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures', 'nydus-upstream');

function ensure(what: 'debian' | 'busybox'): void {
  execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'fixtures.sh'), what], {
    stdio: ['ignore', 'inherit', 'inherit'],
    timeout: 20 * 60_000,
  });
}

/** A real Debian bookworm root filesystem (minbase + python3) as a directory. */
export function debianRootfsDir(): string {
  ensure('debian');
  return path.join(FIXTURES_DIR, 'debian-rootfs');
}

/** The same Debian tree as an OCI layer tar (numeric owners, xattrs). */
export function debianRootfsTar(): string {
  ensure('debian');
  return path.join(FIXTURES_DIR, 'debian-rootfs.tar');
}

/** A tiny tree with a static busybox: /bin/busybox plus applet symlinks, /etc/passwd. */
export function busyboxRootfsDir(): string {
  ensure('busybox');
  return path.join(FIXTURES_DIR, 'busybox-rootfs');
}
