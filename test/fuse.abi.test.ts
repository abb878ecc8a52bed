/**
 * src/fuse/abi.ts against the kernel's own header: gcc compiles sizeof/offsetof of every structure
 * and field we declare from the installed <linux/fuse.h> (linux-libc-dev), and the numbers must be
 * ours. Fields newer than the installed header are checked only where it has them.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as abi from '../src/fuse/abi';

const HEADER = '/usr/include/linux/fuse.h';
const haveGcc = spawnSync('sh', ['-c', 'command -v gcc'], { stdio: 'ignore' }).status === 0;
const testIf = haveGcc && fs.existsSync(HEADER) ? test : test.skip;

/** Fields added after protocol 7.38, with the minor that added them. */
const NEWER: Record<string, number> = { 'fuse_init_out.max_stack_depth': 40, 'fuse_init_out.request_timeout': 43, 'fuse_init_out.unused': 43, 'fuse_open_out.backing_id': 40 };

const structs = Object.values(abi).filter((v): v is abi.Struct => typeof v === 'object' && v !== null && 'fields' in v && 'size' in v);

testIf('every structure and field has the size and offset of the installed kernel header', () => {
  const minor = Number(/#define FUSE_KERNEL_MINOR_VERSION (\d+)/.exec(fs.readFileSync(HEADER, 'utf8'))![1]);
  const lines: string[] = [];
  const expected: string[] = [];
  for (const s of structs) {
    lines.push(`printf("${s.name} size %zu\\n", sizeof(struct ${s.name}));`);
    expected.push(`${s.name} size ${s.size}`);
    for (const f of s.fields) {
      if ((NEWER[`${s.name}.${f.name}`] ?? 0) > minor) continue;
      lines.push(`printf("${s.name}.${f.name} %zu\\n", offsetof(struct ${s.name}, ${f.name}));`);
      expected.push(`${s.name}.${f.name} ${f.offset}`);
    }
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fuse-abi-'));
  try {
    fs.writeFileSync(path.join(dir, 'a.c'), `#include <stdio.h>\n#include <stddef.h>\n#include <linux/fuse.h>\nint main(void) {\n${lines.join('\n')}\nreturn 0;\n}\n`);
    execFileSync('gcc', ['-o', path.join(dir, 'a'), path.join(dir, 'a.c')], { stdio: 'pipe' });
    const got = execFileSync(path.join(dir, 'a'), { encoding: 'utf8' }).trim().split('\n');
    expect(got).toEqual(expected);
    expect(structs.length).toBeGreaterThan(20);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('opcodes, flags and codes are the header values', () => {
  expect(abi.Op.INIT).toBe(26);
  expect(abi.Op.READDIRPLUS).toBe(44);
  expect(abi.Op.BATCH_FORGET).toBe(42);
  expect(abi.Init.MAX_PAGES).toBe(1 << 22);
  expect(abi.Init.HAS_RESEND2).toBe(1 << 7); // FUSE_HAS_RESEND is bit 39
  expect(abi.Notify.RESEND).toBe(7);
  if (fs.existsSync(HEADER)) {
    const h = fs.readFileSync(HEADER, 'utf8');
    const def = (name: string) => Number(new RegExp(`FUSE_${name}\\s*=\\s*(\\d+)`).exec(h)?.[1]);
    for (const [name, v] of Object.entries(abi.Op)) if (!Number.isNaN(def(name))) expect([name, v]).toEqual([name, def(name)]);
  }
});

test('encode and decode round-trip, u64 above 2^32 and the resend bit of a unique', () => {
  const b = Buffer.alloc(abi.fuse_in_header.size);
  const v = { len: 80, opcode: 15, unique: abi.FUSE_UNIQUE_RESEND | 42n, nodeid: 2 ** 40 + 3, uid: 1, gid: 2, pid: 3, total_extlen: 0, padding: 0 };
  expect(abi.encode(abi.fuse_in_header, b, 0, v)).toBe(40);
  expect(abi.decode(abi.fuse_in_header, b, 0)).toEqual(v);
});
