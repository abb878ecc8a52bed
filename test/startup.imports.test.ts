/**
 * What the command-line path loads (issue 18, fixed start-up costs; bench/startup.ts measures the
 * time): `ctr-remote --help` loads commander and nothing of gRPC, undici or pino; the modules rpull
 * loads before its first request leave out pino, grpc-js and proto-loader (ctr-remote speaks gRPC
 * through src/ctr/grpc-client.ts) and undici's package entry; util/log loads pino with the first line logged,
 * and that line is still redacted JSON. Runs the built dist/ in child processes (fresh module caches).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/fixtures';

/** Packages (under node_modules) and our own modules a run loaded, from the list `run` appends to stderr. */
function packagesOf(stderr: string): Set<string> {
  const m = /LOADED (\[.*\])/.exec(stderr);
  if (!m) throw new Error(`no module list in: ${stderr.slice(0, 500)}`);
  const files = JSON.parse(m[1]) as string[];
  return new Set(files.map((f) => /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f)?.[1] ?? path.relative(REPO_ROOT, f)));
}

/** Runs `code` in a node process from the repository root; returns stderr (the module list is appended at exit). */
function run(code: string): string {
  const preload = "process.on('exit', () => process.stderr.write('\\nLOADED ' + JSON.stringify(Object.keys(require.cache)) + '\\n'));";
  return spawnSync('node', ['-e', preload + code], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 }).stderr;
}

test('ctr-remote --help loads commander only: no gRPC, protobuf, undici or pino', () => {
  const err = run("process.argv = [process.argv[0], 'ctr-remote', '--help']; require('./dist/cli/ctr-remote.js');");
  const pk = packagesOf(err);
  expect(pk.has('commander')).toBe(true);
  for (const heavy of ['@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs', 'undici', 'pino']) expect([heavy, pk.has(heavy)]).toEqual([heavy, false]);
});

test('the modules rpull loads before its first request: no pino, grpc-js, proto-loader or undici\'s fetch', () => {
  const err = run("for (const m of ['registry/credentials', 'ctr/containerd-client', 'ctr/progress', 'ctr/rpull']) require('./dist/' + m);");
  const pk = packagesOf(err);
  expect(pk.has('undici')).toBe(true);
  for (const heavy of ['pino', '@grpc/grpc-js', '@grpc/proto-loader']) expect([heavy, pk.has(heavy)]).toEqual([heavy, false]);
  // undici's Agent and request() only, not its package entry (fetch, WebSocket, mocks, caches).
  const files = [...pk].filter((f) => f.includes('undici'));
  expect(files).toEqual(['undici']);
  expect(/LOADED (\[.*\])/.exec(err)![1]).not.toMatch(/undici\/(index\.js|lib\/web\/)/);
});

test('util/log loads pino with the first line logged, and the line is JSON with credentials redacted', () => {
  const err = run([
    "const { logger } = require('./dist/util/log');",
    "const log = logger('probe');",
    "process.stderr.write('BEFORE ' + Object.keys(require.cache).some((f) => f.includes('/node_modules/pino/')) + '\\n');",
    "log.warn({ auth: 'secret-value', n: 1 }, 'hello');",
  ].join(' '));
  expect(err).toMatch(/^BEFORE false$/m);
  const line = err.split('\n').find((l) => l.startsWith('{'));
  expect(line).toBeDefined();
  const j = JSON.parse(line!);
  expect(j).toMatchObject({ component: 'probe', msg: 'hello', n: 1, auth: '[redacted]' });
  expect(err).not.toContain('secret-value');
  expect(packagesOf(err).has('pino')).toBe(true);
});
