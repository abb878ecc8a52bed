/** Credential sources: docker config.json forms, the environment, user:password flags. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { dockerConfigCredentials, envCredentials, parseUserPass } from '../src/registry';
import { resolveCredentials } from '../src/registry/credentials';

describe('credentials', () => {
  let dir: string;
  beforeAll(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nydus-ts-creds-')); });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('docker config: auth, username/password, identity token, Hub key, no match', () => {
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ auths: {
      'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw1').toString('base64') },
      'http://reg.example:5000': { username: 'u2', password: 'pw2' },
      'tok.example': { identitytoken: 'refresh-me' },
    } }));
    const env = { DOCKER_CONFIG: dir };
    expect(resolveCredentials(dockerConfigCredentials('docker.io', env))).toEqual({ username: 'hub', password: 'pw1' });
    expect(resolveCredentials(dockerConfigCredentials('reg.example:5000', env))).toEqual({ username: 'u2', password: 'pw2' });
    expect(dockerConfigCredentials('tok.example', env)).toEqual({ identityToken: 'refresh-me' });
    expect(dockerConfigCredentials('other.example', env)).toBeUndefined();
    expect(dockerConfigCredentials('docker.io', { DOCKER_CONFIG: path.join(dir, 'absent') })).toBeUndefined();
  });

  test('a broken config file is an error naming the file', () => {
    const bad = fs.mkdtempSync(path.join(dir, 'bad-'));
    fs.writeFileSync(path.join(bad, 'config.json'), '{"auths": ');
    expect(() => dockerConfigCredentials('x', { DOCKER_CONFIG: bad })).toThrow(`${path.join(bad, 'config.json')}: not valid JSON`);
  });

  test('environment and user:password flags', () => {
    expect(envCredentials('NYDUSIFY_SOURCE', { NYDUSIFY_SOURCE_USER: 'a:b:c' })).toEqual({ username: 'a', password: 'b:c' });
    expect(envCredentials('NYDUSIFY_SOURCE', { NYDUSIFY_SOURCE_USERNAME: 'a', NYDUSIFY_SOURCE_PASSWORD: 'p' })).toEqual({ username: 'a', password: 'p' });
    expect(envCredentials('NYDUSIFY_SOURCE', {})).toBeUndefined();
    expect(() => parseUserPass('nopass', '--source-user')).toThrow('--source-user: expected USER:PASSWORD');
  });
});

