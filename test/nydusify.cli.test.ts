/**
 * Acceptance 2 through ./bin/nydusify: conversion against the htpasswd (Basic) and the token-auth
 * registries with credentials from flags, the environment and DOCKER_CONFIG; wrong credentials
 * exit non-zero with one clear line; no credential ever appears in output or logs.
 * Needs `npm run build` (bin/nydusify runs dist/cli/nydusify.js); the test builds if dist is missing.
 */
import { execFile, execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startRegistry, TestRegistry } from './helpers/registry';
import { pushImage, skopeoInspect } from './helpers/images';
import { REPO_ROOT } from './helpers/fixtures';

jest.setTimeout(10 * 60_000);

const BIN = path.join(REPO_ROOT, 'bin', 'nydusify');

interface Run { code: number; stdout: string; stderr: string }

function nydusify(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(BIN, args, { env: { ...process.env, NYDUSIFY_SOURCE_USER: '', NYDUSIFY_TARGET_USER: '', ...env }, maxBuffer: 1 << 26, timeout: 5 * 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
    });
  });
}

beforeAll(() => {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'cli', 'nydusify.js'))) execFileSync('npm', ['run', 'build'], { cwd: REPO_ROOT, stdio: 'ignore' });
});

describe('nydusify CLI with authenticated registries', () => {
  let basic: TestRegistry;
  let token: TestRegistry;
  let emptyDockerConfig: string;
  const secrets = ['wonder-land-77', 'builder-9-secret', 'WRONG-pw-123'];
  beforeAll(async () => {
    basic = await startRegistry({ auth: 'basic', username: 'alice', password: secrets[0] });
    token = await startRegistry({ auth: 'token', username: 'bob', password: secrets[1] });
    await pushImage(basic, 'busybox', 'src/busybox', 'v1');
    await pushImage(token, 'debian-2layer', 'src/debian2', 'v1');
    emptyDockerConfig = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-nodockercfg-'));
  });
  afterAll(async () => {
    await basic?.stop();
    await token?.stop();
    if (emptyDockerConfig) fs.rmSync(emptyDockerConfig, { recursive: true, force: true });
  });

  const noLeak = (r: Run) => { for (const s of secrets) { expect(r.stdout).not.toContain(s); expect(r.stderr).not.toContain(s); } };

  test('Basic registry: credentials from flags; convert then check', async () => {
    const creds = ['--source-user', `alice:${secrets[0]}`, '--target-user', `alice:${secrets[0]}`, '--plain-http'];
    const json = path.join(emptyDockerConfig, 'result.json');
    const conv = await nydusify(['convert', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/busybox:v1`, '--output-json', json, ...creds], { DOCKER_CONFIG: emptyDockerConfig });
    expect(conv.stderr).not.toMatch(/error/);
    expect(conv.code).toBe(0);
    expect(conv.stdout).toMatch(new RegExp(`^converted .* -> ${basic.host}/nydus/busybox:v1@sha256:[0-9a-f]{64} \\(1 layers, 1 blobs pushed`));
    // Not a terminal: progress comes as log lines.
    expect(conv.stderr).toMatch(/layer 1\/1: convert/);
    expect(conv.stderr).toMatch(/layer 1\/1: push/);
    noLeak(conv);
    // Upstream's --output-json: acceleration-service's Metric, one JSON line, durations in ns.
    const text = fs.readFileSync(json, 'utf8');
    fs.rmSync(json);
    expect(text.endsWith('}\n')).toBe(true);
    const metric = JSON.parse(text);
    expect(Object.keys(metric)).toEqual(['SourceImageSize', 'TargetImageSize', 'SourcePullElapsed', 'ConversionElapsed', 'TargetPushElapsed']);
    const src = await skopeoInspect(basic, `${basic.host}/src/busybox:v1`);
    expect(metric.SourceImageSize).toBe(src.config.size + src.layers.reduce((a: number, l: { size: number }) => a + l.size, 0));
    expect(metric.TargetImageSize).toBeGreaterThan(0);
    for (const k of ['SourcePullElapsed', 'ConversionElapsed', 'TargetPushElapsed']) expect(Number.isInteger(metric[k]) && metric[k] >= 0).toBe(true);
    const check = await nydusify(['check', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/busybox:v1`, ...creds], { DOCKER_CONFIG: emptyDockerConfig });
    expect(check.code).toBe(0);
    expect(check.stdout).toMatch(/^check passed: .* 1 blobs, \d+ chunks verified, \d+ entries match the source/);
    noLeak(check);
  });

  test('Basic registry: credentials from DOCKER_CONFIG config.json', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-dockercfg-'));
    try {
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: { [basic.host]: { auth: Buffer.from(`alice:${secrets[0]}`).toString('base64') } } }));
      const r = await nydusify(['convert', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/busybox:cfg`, '--plain-http'], { DOCKER_CONFIG: dir });
      expect(r.code).toBe(0);
      // Same blobs as the first conversion: nothing to push but the manifest.
      expect(r.stdout).toMatch(/\(1 layers, 0 blobs pushed/);
      noLeak(r);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('token registry: credentials from the environment, two-layer Debian', async () => {
    const flags = ['--plain-http', '--source-ca', token.caCertPath!, '--target-ca', token.caCertPath!];
    const env = { NYDUSIFY_SOURCE_USER: `bob:${secrets[1]}`, NYDUSIFY_TARGET_USER: `bob:${secrets[1]}`, DOCKER_CONFIG: emptyDockerConfig };
    const conv = await nydusify(['convert', '--source', `${token.host}/src/debian2:v1`, '--target', `${token.host}/nydus/debian2:v1`, '--work-dir', os.tmpdir(), ...flags], env);
    expect(conv.code).toBe(0);
    expect(conv.stdout).toMatch(/\(2 layers, 2 blobs pushed/);
    noLeak(conv);
    expect(token.tokenRequests().some((t) => t.account === 'bob' && /repository:nydus\/debian2:pull,push/.test(t.scope))).toBe(true);
    const m = await skopeoInspect(token, `${token.host}/nydus/debian2:v1`);
    expect(m.layers.map((l: { annotations: Record<string, string> }) => Object.keys(l.annotations)[0])).toEqual([
      'containerd.io/snapshot/nydus-blob', 'containerd.io/snapshot/nydus-blob', 'containerd.io/snapshot/nydus-bootstrap',
    ]);
    const check = await nydusify(['check', '--source', `${token.host}/src/debian2:v1`, '--target', `${token.host}/nydus/debian2:v1`, ...flags], env);
    expect(check.stdout).toMatch(/^check passed/);
    expect(check.code).toBe(0);
  });

  test('wrong credentials: non-zero exit, one clear line, no secret', async () => {
    const basicRun = await nydusify(['convert', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/x:y`, '--plain-http',
      '--source-user', `alice:${secrets[2]}`, '--target-user', `alice:${secrets[2]}`], { DOCKER_CONFIG: emptyDockerConfig });
    expect(basicRun.code).not.toBe(0);
    expect(basicRun.stderr.trim().split('\n').pop()).toBe(`nydusify: error: registry ${basic.host}, repository src/busybox: GET manifest v1: HTTP 401: credentials rejected (UNAUTHORIZED authentication required)`);
    expect(basicRun.stderr).not.toMatch(/\n\s+at /);
    noLeak(basicRun);
    const tokenRun = await nydusify(['convert', '--source', `${token.host}/src/debian2:v1`, '--target', `${token.host}/nydus/x:y`, '--plain-http',
      '--source-ca', token.caCertPath!, '--source-user', `bob:${secrets[2]}`], { DOCKER_CONFIG: emptyDockerConfig });
    expect(tokenRun.code).not.toBe(0);
    expect(tokenRun.stderr.trim().split('\n').pop()).toMatch(new RegExp(`^nydusify: error: registry ${token.host}, repository src/debian2: token for repository:src/debian2:pull: HTTP 401: the token server rejected the credentials$`));
    noLeak(tokenRun);
    const anon = await nydusify(['convert', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/x:y`, '--plain-http'], { DOCKER_CONFIG: emptyDockerConfig });
    expect(anon.stderr).toMatch(/nydusify: error: .*HTTP 401: authentication required \(no credentials given\)/);
  });

  test('on a terminal: a progress bar per layer', async () => {
    // script(1) gives the tool a pseudo-terminal; everything it prints comes back on script's stdout.
    const cmd = [BIN, 'convert', '--source', `${basic.host}/src/busybox:v1`, '--target', `${basic.host}/nydus/busybox:tty`, '--plain-http',
      '--source-user', `alice:${secrets[0]}`, '--target-user', `alice:${secrets[0]}`].map((a) => `'${a}'`).join(' ');
    const out = await new Promise<Run>((resolve) => {
      execFile('script', ['-qec', cmd, '/dev/null'], { env: { ...process.env, DOCKER_CONFIG: emptyDockerConfig }, timeout: 5 * 60_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }));
    });
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/layer 1\/1 [0-9a-f]{12} \[[\u2588\u2591]{30}\] 100% (done|exists)/);
    expect(out.stdout).not.toMatch(/"level":30/);
    noLeak(out);
  });

  test('bad arguments give one-line errors', async () => {
    const r = await nydusify(['convert', '--source', 'a/b:c', '--target', 'd/e:f', '--chunk-size', '3000']);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim()).toBe('nydusify: error: chunk size 3000 is not a power of two between 0x1000 and 0x1000000');
    const r2 = await nydusify(['convert', '--source', 'Bad Ref', '--target', 'd/e:f']);
    expect(r2.stderr.trim()).toBe('nydusify: error: invalid image reference "Bad Ref": empty or contains whitespace');
  });
});
