/**
 * Per-image credential resolution of the snapshotter (src/snapshotter/pull-auth.ts): upstream's
 * order (labels, docker config, template), docker config forms including the credential-helper
 * protocol (a `docker-credential-*` program on PATH), and change notification for a rotated file.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PULL_SECRET, PULL_USERNAME, PullAuth } from '../src/snapshotter/pull-auth';

const b64 = (s: string): string => Buffer.from(s).toString('base64');

let dir: string;
let bin: string;
const opened: PullAuth[] = [];

function pullAuth(cfg: unknown, template?: { auth?: string; host?: string }): PullAuth {
  const d = fs.mkdtempSync(path.join(dir, 'cfg-'));
  if (cfg !== undefined) fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg), { mode: 0o600 });
  const p = new PullAuth({ env: { DOCKER_CONFIG: d, PATH: `${bin}:/usr/bin:/bin` }, template });
  opened.push(p);
  return p;
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pull-auth-'));
  bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  // A credential helper speaking docker's protocol: server URL on stdin, JSON on stdout.
  fs.writeFileSync(path.join(bin, 'docker-credential-testhelper'), `#!/bin/sh
[ "$1" = get ] || exit 1
read server
case "$server" in
  helped.example:5000) echo '{"ServerURL":"helped.example:5000","Username":"hu","Secret":"hs"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"https://index.docker.io/v1/","Username":"hub","Secret":"hubs"}' ;;
  tok.example) echo '{"ServerURL":"tok.example","Username":"<token>","Secret":"refresh"}' ;;
  *) echo "credentials not found in native keychain" >&2; exit 1 ;;
esac
`, { mode: 0o755 });
});

afterAll(() => {
  for (const p of opened) p.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('labels first, then the docker config, then the template (for its host or any)', async () => {
  const p = pullAuth({ auths: { 'reg.example:5000': { auth: b64('dockeruser:dockerpw') } } }, { auth: b64('tpl:tplpw') });
  const labels = { [PULL_USERNAME]: 'labeluser', [PULL_SECRET]: 'labelpw' };
  expect(await p.resolve('reg.example:5000/app:1', labels)).toEqual({ auth: b64('labeluser:labelpw'), from: 'labels' });
  // a label pair with an empty half is no credential (upstream)
  expect(await p.resolve('reg.example:5000/app:1', { [PULL_USERNAME]: 'labeluser' })).toEqual({ auth: b64('dockeruser:dockerpw'), from: 'docker-config' });
  expect(await p.resolve('other.example/app:1', {})).toEqual({ auth: b64('tpl:tplpw'), from: 'template' });
  const scoped = pullAuth(undefined, { auth: b64('tpl:tplpw'), host: 'reg.example:5000' });
  expect(await scoped.resolve('reg.example:5000/app:1', {})).toEqual({ auth: b64('tpl:tplpw'), from: 'template' });
  expect(await scoped.resolve('other.example/app:1', {})).toEqual({ from: 'none' });
});

test('docker config forms: username/password, scheme-prefixed keys, credHelpers, credsStore, identity tokens skipped', async () => {
  const p = pullAuth({
    auths: { 'https://plain.example': { username: 'pu', password: 'pp' }, 'tok.example': { identitytoken: 'abc' }, 'empty.example': {} },
    credHelpers: { 'helped.example:5000': 'testhelper' },
    credsStore: 'testhelper',
  });
  expect(await p.resolve('plain.example/x/y:1', {})).toEqual({ auth: b64('pu:pp'), from: 'docker-config' });
  expect(await p.resolve('helped.example:5000/x:1', {})).toEqual({ auth: b64('hu:hs'), from: 'docker-config' });
  // Hub through the store, asked with Hub's legacy server URL
  expect(await p.resolve('library/debian:12', {})).toEqual({ auth: b64('hub:hubs'), from: 'docker-config' });
  expect(await p.resolve('tok.example/x:1', {})).toEqual({ from: 'none' });
  // the store knows nothing for this host: anonymous, not an error
  expect(await p.resolve('empty.example/x:1', {})).toEqual({ from: 'none' });
  const missingHelper = pullAuth({ credHelpers: { 'reg.example': 'not-installed' } });
  expect(await missingHelper.resolve('reg.example/x:1', {})).toEqual({ from: 'none' });
  const broken = pullAuth(undefined, { auth: b64('tpl:x') });
  fs.writeFileSync(broken.dockerConfigFile, '{"auths": ');
  expect(await broken.resolve('reg.example/x:1', {})).toEqual({ auth: b64('tpl:x'), from: 'template' });
});

test('a config file replaced on disk (rotated password) is noticed and read again', async () => {
  const p = pullAuth({ auths: { 'reg.example': { auth: b64('u:old') } } });
  expect((await p.resolve('reg.example/x:1', {})).auth).toBe(b64('u:old'));
  let changes = 0;
  p.watch(() => changes++);
  const tmp = `${p.dockerConfigFile}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ auths: { 'reg.example': { auth: b64('u:new') } } }));
  fs.renameSync(tmp, p.dockerConfigFile);
  for (let i = 0; i < 100 && changes === 0; i++) await new Promise((r) => setTimeout(r, 50));
  expect(changes).toBeGreaterThan(0);
  expect((await p.resolve('reg.example/x:1', {})).auth).toBe(b64('u:new'));
});
