/**
 * The one lazy unmount (src/fuse/unmount.ts) and the mount table it reads (src/fuse/mount-table.ts):
 * nothing is spawned for a directory that is no mountpoint (the daemon manager calls it before
 * every instance mount), a dead FUSE mount (its daemon gone: ENOTCONN) is detached, only the top
 * one of stacked mounts goes, mounts below a directory come deepest first, and mountinfo's escapes
 * (a space in the path) are read right.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cleanStaleMount } from '../src/daemon/mounts';
import { mountFuse } from '../src/fuse/device';
import { mountAt, mountAtAsync, mountsBelow } from '../src/fuse/mount-table';
import { detach, detachSync } from '../src/fuse/unmount';
import { describeWith } from './helpers/capabilities';

// The module object itself (not an import wrapper), so the spies see unmount.ts's calls.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const childProcess = require('node:child_process') as typeof import('node:child_process');

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'unmount-'));
});

afterEach(() => {
  jest.restoreAllMocks();
  // Whatever a failed test left mounted below dir (bounded: at most a few layers).
  for (const d of [path.join(dir, 'a b'), dir]) for (let i = 0; i < 4 && mountAt(d); i++) detachSync(d);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a directory that is no mountpoint: detach, detachSync and cleanStaleMount spawn no process and report it free', async () => {
  const execFile = jest.spyOn(childProcess, 'execFile');
  const execFileSync = jest.spyOn(childProcess, 'execFileSync');
  const spawn = jest.spyOn(childProcess, 'spawn');
  expect(mountAt(dir)).toBeUndefined();
  expect(await mountAtAsync(dir)).toBeUndefined();
  expect(await detach(dir)).toBe(true);
  expect(detachSync(dir)).toBe(true);
  expect(await detach(path.join(dir, 'missing'))).toBe(true);
  expect(cleanStaleMount(dir)).toBe('none');
  expect([execFile.mock.calls, execFileSync.mock.calls, spawn.mock.calls]).toEqual([[], [], []]);
});

test('mountAt reads the root mount', () => {
  expect(mountAt('/')).toEqual({ fsType: expect.any(String), device: expect.stringMatching(/^\d+:\d+$/) });
});

describeWith(['root', 'fuse'], 'mounted directories', () => {
  /** A FUSE mount whose daemon is gone: mounted, then its only descriptor closed before INIT was answered. */
  async function deadFuseMount(at: string): Promise<void> {
    fs.closeSync(await mountFuse({ mountpoint: at, source: 'nydus', subtype: 'unmount-test', options: ['ro'] }));
  }

  test('a dead FUSE mount (ENOTCONN) at a path with a space is found and detached, by detach and by detachSync', async () => {
    const at = path.join(dir, 'a b');
    // The same spies as above do see the tool runs when something is mounted.
    const execFile = jest.spyOn(childProcess, 'execFile');
    const execFileSync = jest.spyOn(childProcess, 'execFileSync');
    for (const how of ['async', 'sync'] as const) {
      await deadFuseMount(at);
      expect(mountAt(at)).toEqual({ fsType: 'fuse.unmount-test', device: expect.stringMatching(/^0:\d+$/) });
      expect(() => fs.statSync(at)).toThrow(/ENOTCONN/);
      expect(how === 'async' ? await detach(at) : detachSync(at)).toBe(true);
      expect(mountAt(at)).toBeUndefined();
      expect(fs.statSync(at).isDirectory()).toBe(true);
    }
    expect([execFile.mock.calls.map((c) => c[0]), execFileSync.mock.calls.map((c) => c[0])]).toEqual([['umount'], ['umount']]);
  });

  test('cleanStaleMount detaches a dead FUSE mount and reports a live mount without touching it', async () => {
    const at = path.join(dir, 'a b');
    await deadFuseMount(at);
    expect(cleanStaleMount(at)).toBe('cleaned');
    expect(mountAt(at)).toBeUndefined();
    childProcess.execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', at]);
    expect(cleanStaleMount(at)).toBe('live');
    expect(mountAt(at)?.fsType).toBe('tmpfs');
  });

  test('stacked mounts: only the top one goes per call', async () => {
    childProcess.execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
    await deadFuseMount(dir);
    expect(mountAt(dir)?.fsType).toBe('fuse.unmount-test');
    expect(await detach(dir)).toBe(true);
    expect(mountAt(dir)?.fsType).toBe('tmpfs');
    expect(await detach(dir)).toBe(true);
    expect(mountAt(dir)).toBeUndefined();
  });

  test('mountsBelow lists the mounts at and below a directory, deepest first, unescaped', async () => {
    childProcess.execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', dir]);
    const inner = path.join(dir, 'a b');
    fs.mkdirSync(inner);
    await deadFuseMount(inner);
    expect(mountsBelow(dir)).toEqual([inner, dir]);
    expect(mountsBelow(inner)).toEqual([inner]);
    for (const m of mountsBelow(dir)) expect(detachSync(m)).toBe(true);
    expect(mountsBelow(dir)).toEqual([]);
  });
});
