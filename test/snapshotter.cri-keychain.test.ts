/**
 * The CRI keychain (src/snapshotter/cri-image-proxy.ts) and its place in the snapshotter's
 * credential order (pull-auth.ts): what a kubelet's PullImageRequest.auth releases, for which
 * image and registry, and `[remote.auth]` parsing. The proxy itself, between a CRI client and
 * containerd's CRI plugin, is exercised in test/snapshotter.cri.test.ts.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseConfig } from '../src/snapshotter/config';
import { CriKeychain, DEFAULT_IMAGE_SERVICE_ADDRESS } from '../src/snapshotter/cri-image-proxy';
import { PULL_SECRET, PULL_USERNAME, PullAuth } from '../src/snapshotter/pull-auth';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const REF = '127.0.0.1:5000/team/app:v1';

describe('CriKeychain', () => {
  test('username and password of a pull are released for that image, however its reference is spelt', () => {
    const k = new CriKeychain();
    k.remember('docker://127.0.0.1:5000/team/app:v1', { username: 'u', password: 'p' });
    expect(k.lookup(REF)).toEqual({ username: 'u', password: 'p' });
    k.remember('busybox', { username: 'hub', password: 'hp' });
    expect(k.lookup('docker.io/library/busybox:latest')).toEqual({ username: 'hub', password: 'hp' });
  });

  test('only for that image: another image of the same registry gets nothing', () => {
    const k = new CriKeychain();
    k.remember(REF, { username: 'u', password: 'p' });
    expect(k.lookup('127.0.0.1:5000/team/app:v2')).toBeUndefined();
    expect(k.lookup('127.0.0.1:5000/team/other:v1')).toBeUndefined();
  });

  test('auth (base64 user:password) is decoded as containerd does, trailing NULs trimmed', () => {
    const k = new CriKeychain();
    k.remember(REF, { auth: b64('u:p:with:colons\0\0') });
    expect(k.lookup(REF)).toEqual({ username: 'u', password: 'p:with:colons' });
    k.remember(REF, { auth: b64('no-colon') });
    expect(k.lookup(REF)).toEqual({ unusable: 'auth is not base64 of user:password' });
  });

  test('server_address naming another registry releases nothing; the same host with or without scheme does', () => {
    const k = new CriKeychain();
    k.remember(REF, { username: 'u', password: 'p', server_address: 'evil.example:5000' });
    expect(k.lookup(REF)).toBeUndefined();
    k.remember(REF, { username: 'u', password: 'p', server_address: 'http://127.0.0.1:5000' });
    expect(k.lookup(REF)).toEqual({ username: 'u', password: 'p' });
    k.remember('busybox', { username: 'hub', password: 'hp', server_address: 'https://index.docker.io/v1/' });
    expect(k.lookup('busybox')).toEqual({ username: 'hub', password: 'hp' });
  });

  test('tokens are not user and password; an empty or removed pull leaves nothing', () => {
    const k = new CriKeychain();
    k.remember(REF, { identity_token: 'it' });
    expect(k.lookup(REF)).toEqual({ unusable: 'identity token' });
    k.remember(REF, { registry_token: 'rt' });
    expect(k.lookup(REF)).toEqual({ unusable: 'registry token' });
    k.remember(REF, { username: 'u', password: 'p' });
    k.remember(REF, null);
    expect(k.lookup(REF)).toBeUndefined();
    k.remember(REF, { username: 'u', password: 'p' });
    k.forget('127.0.0.1:5000/team/app:v1');
    expect(k.lookup(REF)).toBeUndefined();
    expect(k.lookup('not a reference')).toBeUndefined();
    expect(() => k.remember('UPPER/Case', { username: 'u' })).toThrow(/invalid image reference/);
  });
});

describe('PullAuth with the CRI keychain', () => {
  let dir: string;
  const opened: PullAuth[] = [];
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cri-keychain-'));
  });
  afterAll(() => {
    opened.forEach((p) => p.close());
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const pullAuth = (cri: CriKeychain, dockerAuth?: string): PullAuth => {
    const d = fs.mkdtempSync(path.join(dir, 'cfg-'));
    if (dockerAuth) fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ auths: { '127.0.0.1:5000': { auth: dockerAuth } } }), { mode: 0o600 });
    const p = new PullAuth({ env: { DOCKER_CONFIG: d }, cri });
    opened.push(p);
    return p;
  };

  test("upstream's order: labels, then CRI, then docker config", async () => {
    const k = new CriKeychain();
    k.remember(REF, { username: 'cri-u', password: 'cri-p' });
    const p = pullAuth(k, b64('dock-u:dock-p'));
    expect(await p.resolve(REF, { [PULL_USERNAME]: 'lu', [PULL_SECRET]: 'ls' })).toEqual({ auth: b64('lu:ls'), from: 'labels' });
    expect(await p.resolve(REF, {})).toEqual({ auth: b64('cri-u:cri-p'), from: 'cri' });
    k.forget(REF);
    expect(await p.resolve(REF, {})).toEqual({ auth: b64('dock-u:dock-p'), from: 'docker-config' });
  });

  test('an identity token from CRI is skipped for the next source', async () => {
    const k = new CriKeychain();
    k.remember(REF, { identity_token: 'it' });
    expect(await pullAuth(k).resolve(REF, {})).toEqual({ from: 'none' });
  });
});

describe('[remote.auth] in config.toml', () => {
  test('enable_cri_keychain is honoured (no warning); image_service_address defaults to containerd\'s socket', () => {
    const on = parseConfig('[remote.auth]\nenable_cri_keychain = true\n', 't.toml');
    expect(on.criKeychain).toEqual({ enable: true, imageServiceAddress: DEFAULT_IMAGE_SERVICE_ADDRESS });
    expect(on.warnings).toEqual([]);
    expect(DEFAULT_IMAGE_SERVICE_ADDRESS).toBe('/run/containerd/containerd.sock');
    const custom = parseConfig('[remote.auth]\nenable_cri_keychain = true\nimage_service_address = "/run/k3s/containerd/containerd.sock"\n', 't.toml');
    expect(custom.criKeychain.imageServiceAddress).toBe('/run/k3s/containerd/containerd.sock');
    expect(parseConfig('', 't.toml').criKeychain.enable).toBe(false);
    expect(() => parseConfig('[remote.auth]\nenable_cri_keychain = "yes"\n', 't.toml')).toThrow(/t\.toml: remote\.auth\.enable_cri_keychain: must be true or false/);
  });
});
