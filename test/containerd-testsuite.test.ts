/**
 * containerd's own snapshotter test suite against containerd-nydus-grpc (the Go side is in
 * test/containerd-testsuite/): every test the suite runs passes. The suite skips one test by
 * itself ("Rename": overlay on some kernels); all others must pass. The first build of the Go test
 * takes a few minutes (Go's build cache keeps it for later runs).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';
import { testWith } from './helpers/capabilities';

jest.setTimeout(20 * 60_000);

testWith(['root', 'go-containerd'], "containerd 1.6's snapshotter suite passes over the proxy-plugin gRPC dial", () => {
  const r = spawnSync('go', ['test', '-count=1', '-v', './test/containerd-testsuite'], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    timeout: 19 * 60_000,
    maxBuffer: 256 << 20,
    env: { ...process.env, GO111MODULE: 'off', GOPATH: '/usr/share/gocode', GOFLAGS: '', NYDUS_SNAPSHOTTER_BIN: path.join(REPO_ROOT, 'bin', 'containerd-nydus-grpc') },
  });
  const out = `${r.stdout}${r.stderr}`;
  const results = [...out.matchAll(/^ {4}--- (PASS|FAIL|SKIP): TestNydusSnapshotter\/(\S+)/gm)].map((m) => ({ status: m[1], name: m[2] }));
  const failed = results.filter((t) => t.status === 'FAIL').map((t) => t.name);
  // On failure, show the suite's own words for the failed tests.
  expect({ failed, detail: failed.length ? out.split('\n').filter((l) => /testsuite\.go:\d+|Error|error/.test(l)).slice(0, 40) : [] }).toEqual({ failed: [], detail: [] });
  expect(results.filter((t) => t.status === 'SKIP').map((t) => t.name)).toEqual(['Rename']);
  expect(results.filter((t) => t.status === 'PASS').length).toBe(20);
  expect(r.status).toBe(0);
});
