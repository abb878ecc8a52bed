/**
 * nydusctl: ask a running nydusd about itself, or tell it something. Upstream's verbs and ours:
 *   nydusctl -S SOCK [-r|--raw|--json] info
 *   nydusctl -S SOCK set log-level LEVEL                       PUT /api/v1/daemon {"log_level"}
 *   nydusctl -S SOCK metrics [backend|cache|fsstats] [-I SECS]  -I repeats backend deltas every SECS
 *   nydusctl -S SOCK mount -s BOOTSTRAP -c CONFIG -m MOUNTPOINT -t rafs
 *   nydusctl -S SOCK umount -m MOUNTPOINT
 *   nydusctl -S SOCK backend|cache|files|pattern [--id MOUNTPOINT]   (ours: per source, per file)
 *   nydusctl -S SOCK [--id MOUNTPOINT] prefetch-list [-o FILE]       (ours: the files read so far, in
 *       first-read order, one path a line: the input of `nydusify convert --prefetch-patterns`,
 *       `nydus-image create --prefetch-files` and `nydusd --prefetch-files`; upstream has no such verb,
 *       its snapshotter records the list with an NRI plugin instead)
 */
import { Command } from 'commander';
import * as fs from 'node:fs';
import { NydusdClient } from '../daemon/client';

type Obj = Record<string, any>;

function fail(msg: string): never {
  process.stderr.write(`nydusctl: error: ${msg}\n`);
  process.exit(1);
}

const PATHS: Record<string, string> = {
  info: '/api/v1/daemon',
  metrics: '/api/v1/metrics',
  backend: '/api/v1/metrics/backend',
  cache: '/api/v1/metrics/blobcache',
  files: '/api/v1/metrics/files',
  pattern: '/api/v1/metrics/pattern',
};

function mib(n: number): string {
  return `${(n / 1048576).toFixed(2)} MiB`;
}

function table(rows: (string | number)[][]): string {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(w[i])).join('  ').trimEnd()).join('\n');
}

function human(what: string, b: any): string {
  switch (what) {
    case 'info': {
      const lines = [`ID:      ${b.id}`, `State:   ${b.state}`, `Version: ${b.version?.package_ver} (${b.version?.rustc})`];
      const inst = Object.values(b.backend_collection ?? {}) as Obj[];
      lines.push(`Instances: ${inst.length}`);
      if (inst.length) lines.push(table([['MOUNTPOINT', 'TYPE', 'BACKEND', 'MOUNTED', 'PREFETCH'], ...inst.map((i) => [i.mountpoint, i.fs_type, i.backend_type, i.mounted_time, String(i.prefetch)])]));
      return lines.join('\n');
    }
    case 'metrics':
      return [`Reads:        ${b.read_count} (${mib(b.data_read)})`, `Read errors:  ${b.read_errors}`, `Opens:        ${b.nr_opens}`, `Avg latency:  ${b.read_count ? (b.read_latency_millis_total / b.read_count).toFixed(2) : '0'} ms`].join('\n');
    case 'backend': {
      const rows = Object.entries(b.sources as Obj).map(([n, s]: [string, Obj]) => [n, s.requests, mib(s.bytes), s.errors, s.digestFailures, s.requests ? (s.latencyMsTotal / s.requests).toFixed(1) : '0', (b.health as Obj | undefined)?.[n] ?? '-']);
      return [`Backend: ${b.backend_type}   requests ${b.read_count}   ${mib(b.read_amount_total)}   errors ${b.read_errors}   digest failures ${b.digest_failures}`, table([['SOURCE', 'REQUESTS', 'BYTES', 'ERRORS', 'DIGEST_FAIL', 'AVG_MS', 'HEALTH'], ...rows])].join('\n');
    }
    case 'cache': {
      const dur = b.prefetch_end_time_millis && b.prefetch_begin_time_millis ? (b.prefetch_end_time_millis - b.prefetch_begin_time_millis) / 1000 : 0;
      return [
        `Store:        ${b.store_path}`,
        `Hits/misses:  ${b.hits} / ${b.misses} (${mib(b.hit_bytes)} from cache)`,
        `Chunks ready: ${b.chunks_ready} of ${b.chunks_total}${b.data_all_ready ? ' (all)' : ''}`,
        `Corrupt:      ${b.corrupt_chunks}`,
        `Prefetch:     ${mib(b.prefetch_data_amount)} in ${b.prefetch_requests_count} chunks${dur > 0 ? `, ${dur.toFixed(1)} s, ${mib(b.prefetch_data_amount / dur)}/s` : ''}`,
      ].join('\n');
    }
    case 'files':
      return table([['PATH', 'INO', 'READS', 'BYTES'], ...(b as Obj[]).map((f) => [f.path, f.ino, f.nr_read, f.bytes])]);
    default:
      return table([['ORDER', 'PATH', 'INO', 'READS', 'FIRST_ACCESS'], ...(b as Obj[]).map((f, i) => [i, f.path, f.ino, f.nr_read, new Date(f.first_access_time_secs * 1000 + f.first_access_time_nanos / 1e6).toISOString()])]);
  }
}

/** The access pattern as a prefetch list; one instance only (a list mixing images' paths means nothing). */
function prefetchList(pattern: Obj[], id: string | undefined): string {
  const mounts = [...new Set(pattern.map((p) => p.mountpoint as string))];
  if (!id && mounts.length > 1) fail(`prefetch-list: the daemon serves ${mounts.length} instances (${mounts.join(', ')}); name one with --id`);
  const paths = pattern.map((p) => p.path as string).filter((p) => p.startsWith('/'));
  // The list is one path a line (upstream's format): a name holding a newline cannot be written.
  for (const p of paths) if (p.includes('\n')) process.stderr.write(`nydusctl: warning: prefetch-list: ${JSON.stringify(p)} has a newline in its name; left out\n`);
  return paths.filter((p) => !p.includes('\n')).map((p) => `${p}\n`).join('');
}

interface Globals {
  sock: string;
  raw?: boolean;
  json?: boolean;
  id?: string;
}

/** Calls nydusd; a socket nobody listens on is one clear line. */
async function call(g: Globals, method: string, path: string, body?: unknown): Promise<unknown> {
  try {
    return await new NydusdClient(g.sock).call(method, path, body);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOENT' || code === 'ECONNREFUSED' ? `${g.sock}: no nydusd is listening there` : (e as Error).message);
  }
}

async function show(g: Globals, what: string): Promise<void> {
  const q = g.id && what !== 'info' ? `?id=${encodeURIComponent(g.id)}` : '';
  const body = await call(g, 'GET', PATHS[what] + q);
  process.stdout.write(`${g.raw || g.json ? JSON.stringify(body, null, 2) : human(what, body)}\n`);
}

/** Upstream's `metrics backend -I N`: every N seconds, what the backend did since the last sample. */
async function watchBackend(g: Globals, seconds: number): Promise<never> {
  const q = g.id ? `?id=${encodeURIComponent(g.id)}` : '';
  let last = (await call(g, 'GET', PATHS.backend + q)) as Obj;
  for (;;) {
    await new Promise((r) => setTimeout(r, seconds * 1000));
    const cur = (await call(g, 'GET', PATHS.backend + q)) as Obj;
    const d = (k: string) => (cur[k] ?? 0) - (last[k] ?? 0);
    const reqs = d('read_count');
    process.stdout.write(
      [
        `Backend read bandwidth:  ${(d('read_amount_total') / seconds / 1024).toFixed(0)} KB/s`,
        `Backend average IO size: ${reqs ? Math.round(d('read_amount_total') / reqs) : 0} bytes`,
        `Backend average latency: ${reqs ? (d('read_cumulative_latency_millis_total') / reqs).toFixed(1) : 0} ms`,
        `Backend errors:          ${d('read_errors')}`,
        '',
      ].join('\n'),
    );
    last = cur;
  }
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
/** Upstream's `set` items and the daemon fields they map to. */
const SETTABLE: Record<string, string> = { 'log-level': 'log_level' };

async function main(): Promise<void> {
  const program = new Command('nydusctl')
    .description('Query and configure a running nydusd over its API socket')
    .requiredOption('-S, --sock <path>', 'nydusd API socket')
    .option('-r, --raw', 'print the raw JSON answer')
    .option('--json', 'the same as --raw')
    .option('--id <mountpoint>', 'one rafs instance of a shared daemon')
    .showHelpAfterError();
  const g = (): Globals => program.opts<Globals>();
  program.command('info').description('the daemon: state, version, instances').action(() => show(g(), 'info'));
  program
    .command('set <kind> <value>')
    .description(`configure the daemon; kinds: ${Object.keys(SETTABLE).join(', ')} (${LOG_LEVELS.join(', ')})`)
    .action(async (kind: string, value: string) => {
      const field = SETTABLE[kind];
      if (!field) fail(`set: unknown kind ${JSON.stringify(kind)} (${Object.keys(SETTABLE).join(', ')})`);
      if (!LOG_LEVELS.includes(value)) fail(`set log-level: expected ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(value)}`);
      await call(g(), 'PUT', '/api/v1/daemon', { [field]: value });
    });
  program
    .command('metrics [category]')
    .description('fsstats (default), backend or cache metrics')
    .option('-I, --interval <seconds>', 'with backend: print what changed every this many seconds, until interrupted')
    .action(async (category: string | undefined, o: { interval?: string }) => {
      const cat = category ?? 'fsstats';
      const what = { fsstats: 'metrics', backend: 'backend', cache: 'cache' }[cat];
      if (!what) fail(`metrics: unknown category ${JSON.stringify(cat)} (backend, cache, fsstats)`);
      if (o.interval !== undefined) {
        const secs = Number(o.interval);
        if (!Number.isInteger(secs) || secs < 1) fail(`--interval: expected whole seconds, got ${JSON.stringify(o.interval)}`);
        if (what !== 'backend') process.stderr.write(`nydusctl: warning: --interval applies to backend metrics only (upstream too); showing ${cat} once\n`);
        else await watchBackend(g(), secs);
      }
      await show(g(), what);
    });
  program
    .command('mount')
    .description('mount a rafs instance in a shared daemon')
    .requiredOption('-s, --source <bootstrap>', 'the image bootstrap')
    .requiredOption('-c, --config <file>', 'nydusd config for the instance (JSON or TOML)')
    .requiredOption('-m, --mountpoint <dir>', 'where to mount it')
    .requiredOption('-t, --type <type>', 'rafs (upstream also has passthrough_fs, which this nydusd does not serve)')
    .action(async (o: { source: string; config: string; mountpoint: string; type: string }) => {
      if (o.type !== 'rafs') fail(`mount: --type ${o.type} is not supported (only rafs)`);
      let config: string;
      try {
        config = fs.readFileSync(o.config, 'utf8');
      } catch (e) {
        fail(`--config: ${o.config}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
      }
      await call(g(), 'POST', `/api/v1/mount?mountpoint=${encodeURIComponent(o.mountpoint)}`, { source: o.source, fs_type: o.type, config });
    });
  program
    .command('umount')
    .description('unmount a rafs instance')
    .requiredOption('-m, --mountpoint <dir>', 'the instance to unmount')
    .action(async (o: { mountpoint: string }) => {
      await call(g(), 'DELETE', `/api/v1/mount?mountpoint=${encodeURIComponent(o.mountpoint)}`);
    });
  program
    .command('prefetch-list')
    .description('the files read so far, in first-read order, one path a line (a prefetch list for nydusify --prefetch-patterns)')
    .option('-o, --output <file>', 'write the list there instead of stdout')
    .action(async (o: { output?: string }) => {
      const text = prefetchList((await call(g(), 'GET', PATHS.pattern + (g().id ? `?id=${encodeURIComponent(g().id!)}` : ''))) as Obj[], g().id);
      if (!o.output) return void process.stdout.write(text);
      const tmp = `${o.output}.${process.pid}.tmp`;
      try {
        fs.writeFileSync(tmp, text, { mode: 0o644 });
        fs.renameSync(tmp, o.output);
      } catch (e) {
        fs.rmSync(tmp, { force: true });
        fail(`--output: ${o.output}: ${(e as Error).message}`);
      }
    });
  for (const what of ['backend', 'cache', 'files', 'pattern']) {
    program.command(what).description(`${what} metrics (per source, per file)`).action(() => show(g(), what));
  }
  await program.parseAsync();
}

main().catch((e) => fail((e as Error).message));
