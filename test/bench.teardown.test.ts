/**
 * The demo's and benchmarks' undo list: newest first, each step once, a failing step reported
 * without stopping the rest, scopes undone on their own or with their parent; and a real process
 * that receives SIGINT undoes what it registered before it exits (runs dist-bench/: needs `npm run build:bench`, which scripts/test.sh does).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Teardown } from '../bench/support/teardown';
import { REPO_ROOT } from './helpers/fixtures';

test('steps run newest first, once, and a failure does not stop the rest', async () => {
  const done: string[] = [];
  const reports: string[] = [];
  const td = new Teardown((m) => reports.push(m));
  td.add('a', () => done.push('a'));
  td.add('b', () => {
    throw new Error('boom');
  });
  const drop = td.add('c', () => done.push('c'));
  td.add('d', async () => {
    await new Promise((r) => setTimeout(r, 10));
    done.push('d');
  });
  drop();
  await Promise.all([td.run(), td.run()]);
  await td.run();
  expect(done).toEqual(['d', 'a']);
  expect(reports).toEqual(['cleanup: b: boom']);
});

test('a scope is undone by its own run, or with its parent when still pending', async () => {
  const done: string[] = [];
  const td = new Teardown(() => undefined);
  td.add('outer', () => done.push('outer'));
  const first = td.scope('first');
  first.add('first.1', () => done.push('first.1'));
  await first.run();
  const second = td.scope('second');
  second.add('second.1', () => done.push('second.1'));
  second.add('second.2', () => done.push('second.2'));
  await td.run();
  expect(done).toEqual(['first.1', 'second.2', 'second.1', 'outer']);
});

test('SIGINT undoes the registered steps, then the process exits 130', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'teardown-'));
  try {
    const marker = path.join(dir, 'undone');
    const script = `
      const { Teardown } = require(${JSON.stringify(path.join(REPO_ROOT, 'dist-bench', 'bench', 'support', 'teardown.js'))});
      const td = new Teardown(() => undefined);
      td.onSignals();
      td.add('marker', () => require('fs').writeFileSync(${JSON.stringify(marker)}, 'yes'));
      console.log('ready');
      setTimeout(() => undefined, 60000);
    `;
    const p = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    // 'ready', or the child's early end (e.g. dist-bench/ not built) fails the test at once.
    const first = await Promise.race([new Promise<string>((resolve) => p.stdout!.once('data', (d: Buffer) => resolve(d.toString()))), exited.then((c) => `exited ${c}`)]);
    expect(first.trim()).toBe('ready');
    p.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(fs.readFileSync(marker, 'utf8')).toBe('yes');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
