/**
 * nydusctl: ask a running nydusd about itself.
 *   nydusctl --sock SOCK info|metrics|backend|cache|files|pattern [--json] [--id MOUNTPOINT]
 */
import { Command } from 'commander';
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

async function main(): Promise<void> {
  const program = new Command('nydusctl')
    .description('Query a running nydusd over its API socket')
    .requiredOption('-S, --sock <path>', 'nydusd API socket')
    .option('--json', 'print the raw JSON answer')
    .option('--id <mountpoint>', 'one rafs instance of a shared daemon')
    .argument('<what>', Object.keys(PATHS).join('|'))
    .showHelpAfterError()
    .parse();
  const o = program.opts<{ sock: string; json?: boolean; id?: string }>();
  const what = program.args[0];
  if (!PATHS[what]) fail(`unknown command ${JSON.stringify(what)} (${Object.keys(PATHS).join(', ')})`);
  const client = new NydusdClient(o.sock);
  const q = o.id && what !== 'info' ? `?id=${encodeURIComponent(o.id)}` : '';
  let body: unknown;
  try {
    body = await client.call('GET', PATHS[what] + q);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOENT' || code === 'ECONNREFUSED' ? `${o.sock}: no nydusd is listening there` : (e as Error).message);
  }
  process.stdout.write(`${o.json ? JSON.stringify(body, null, 2) : human(what, body)}\n`);
}

main().catch((e) => fail((e as Error).message));
