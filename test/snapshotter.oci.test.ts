/**
 * Acceptance 2: a plain OCI image pulls and runs through our snapshotter, with a real registry,
 * a private containerd 1.6 using it as `[proxy_plugins.nydus]`, and runc.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Containerd, startContainerd } from './helpers/containerd';

import { pushImage } from './helpers/images';
import { startRegistry, TestRegistry } from './helpers/registry';
import { parseConfig } from '../src/snapshotter/config';
import { runSnapshotter, RunningSnapshotter } from '../src/snapshotter/run';
import { describeWith } from './helpers/capabilities';

const NEEDS = ['root', 'containerd'] as const;

describeWith(NEEDS, 'plain OCI image through containerd-nydus-grpc', () => {
  let dir: string;
  let reg: TestRegistry | undefined;
  let ctd: Containerd | undefined;
  let sn: RunningSnapshotter | undefined;
  let ref: string;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'snoci-'));
    const cfg = parseConfig('daemon_mode = "none"', 'test', { root: path.join(dir, 'root'), address: path.join(dir, 'nydus.sock') });
    sn = await runSnapshotter(cfg);
    ctd = await startContainerd({ snapshotterSocket: cfg.address });
    reg = await startRegistry();
    ref = await pushImage(reg, 'busybox', 'oci/busybox');
  }, 600_000);

  afterAll(async () => {
    await ctd?.stop();
    await sn?.close();
    await reg?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }, 120_000);

  test('ctr plugin ls shows the proxy snapshotter ok', async () => {
    const { stdout } = await ctd!.ctr(['plugin', 'ls']);
    expect(stdout).toMatch(/io\.containerd\.snapshotter\.v1\s+nydus\s+\S+\s+ok/);
  });

  test('pull unpacks into overlay snapshots and run prints the command output', async () => {
    await ctd!.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'nydus', ref]);
    // The layer was unpacked by containerd into our snapshot directory.
    const layers = sn!.snapshotter.list(['kind==committed']);
    expect(layers).toHaveLength(1);
    const { stdout } = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'oci-run-1', '/bin/busybox', 'sh', '-c', 'echo hello-$((6*7)); ls /bin/busybox']);
    expect(stdout).toContain('hello-42');
    expect(stdout).toContain('/bin/busybox');
  });

  test('a container writes to its own upper dir, not to the image layer', async () => {
    await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'oci-run-2', '/bin/busybox', 'sh', '-c', 'echo x > /etc/written-by-container']);
    const { stdout } = await ctd!.ctr(['run', '--rm', '--snapshotter', 'nydus', ref, 'oci-run-3', '/bin/busybox', 'sh', '-c', 'ls /etc/written-by-container || echo absent']);
    expect(stdout).toContain('absent');
  });
});
