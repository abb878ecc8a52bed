/**
 * A private containerd for tests, the demo and benchmarks: its own root, state, sockets and config
 * in a temp dir, and a `[proxy_plugins.<name>]` snapshotter pointing at a unix socket. It never
 * touches the machine's own containerd (/run/containerd, /var/lib/containerd).
 *
 * CRI is off unless `cri` is given; then containerd's CRI plugin serves `runtime.v1` on the same
 * socket and pulls with the proxy snapshotter, passing it the `cri.*` labels
 * (`disable_snapshot_annotations = false`), as deploy/containerd-config.toml tells Kubernetes users.
 * Its pods use host networking only (no CNI plugins here), its runc state is kept in `runcRoot`.
 *
 *   const ctd = await startContainerd({ snapshotterSocket: sock });
 *   await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'nydus', ref]);
 *   await ctd.stop();   // kills tasks, stops containerd, unmounts and removes the temp dir
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { mountsBelow } from '../fuse/mount-table';
import { detachSync } from '../fuse/unmount';

export interface ContainerdOptions {
  /** Unix socket of the proxy snapshotter. */
  snapshotterSocket: string;
  /** Plugin name, as given to `--snapshotter` (default `nydus`). */
  snapshotterName?: string;
  /** Directory for everything (default: a fresh temp dir, removed by stop()). */
  dir?: string;
  /** Enables the CRI plugin. */
  cri?: {
    /** The pod sandbox image (`sandbox_image`); it must be pullable without the internet. */
    sandboxImage: string;
    /** certs.d directory for CRI pulls (`registry.config_path`), e.g. with `http://` servers. */
    registryConfigPath?: string;
  };
}

/** The namespace containerd's CRI plugin keeps its images, containers and snapshots in. */
export const CRI_NAMESPACE = 'k8s.io';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface Containerd {
  /** containerd's gRPC socket. */
  address: string;
  dir: string;
  namespace: string;
  /** runc's state directory for this containerd's containers. runc keeps state per container id
   * under one root shared by every containerd of the machine unless told otherwise, so two private
   * containerds running a container of the same name would collide; `ctr()` passes it to `run`. */
  runcRoot: string;
  /** Runs `ctr --address … -n <namespace> ARGS` (`run` gets `--runc-root`); rejects with stderr on a non-zero exit. */
  ctr(args: string[], timeoutMs?: number): Promise<CommandResult>;
  /** Runs this repository's `bin/ctr-remote --address … -n <namespace> ARGS` (for `images rpull`). */
  ctrRemote(args: string[], timeoutMs?: number): Promise<CommandResult>;
  /** containerd's own log so far. */
  log(): string;
  stop(): Promise<void>;
}

function run(bin: string, args: string[], timeoutMs: number): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(bin)} ${args.join(' ')}: ${stderr.trim() || err.message}`));
      else resolve({ stdout, stderr });
    });
  });
}

function criToml(dir: string, name: string, cri: NonNullable<ContainerdOptions['cri']>): string {
  const p = '[plugins."io.containerd.grpc.v1.cri"';
  return `
${p}]
  sandbox_image = ${JSON.stringify(cri.sandboxImage)}
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # The sandbox's oom_score_adj (-998) needs CAP_SYS_RESOURCE, which a nested or confined host
  # may lack; clamp it to containerd's own, as for rootless containerd.
  restrict_oom_score_adj = true
  ${p}.containerd]
    snapshotter = "${name}"
    disable_snapshot_annotations = false
    default_runtime_name = "runc"
    ${p}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      ${p}.containerd.runtimes.runc.options]
        Root = "${dir}/runc"
  ${p}.cni]
    bin_dir = "${dir}/cni/bin"
    conf_dir = "${dir}/cni/net.d"
  ${p}.registry]
    config_path = ${JSON.stringify(cri.registryConfigPath ?? '')}
`;
}

function configToml(dir: string, name: string, sock: string, cri?: ContainerdOptions['cri']): string {
  return `version = 2
root = "${dir}/root"
state = "${dir}/state"
${cri ? '' : 'disabled_plugins = ["io.containerd.grpc.v1.cri"]'}

[grpc]
  address = "${dir}/containerd.sock"

[ttrpc]
  address = "${dir}/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[proxy_plugins]
  [proxy_plugins.${name}]
    type = "snapshot"
    address = "${sock}"
${cri ? criToml(dir, name, cri) : ''}`;
}

/** Lazily unmounts everything mounted at or below `dir`, deepest first; never throws. */
export function unmountBelow(dir: string): void {
  for (const m of mountsBelow(dir)) detachSync(m); // one already gone with its parent is skipped
}

/** The nydusd processes a snapshotter with state in `root` recorded in its metadata store (they
 * outlive the snapshotter by design, so whoever started it stops them by PID). */
export function recordedDaemons(root: string): { pid: number; apiSock: string }[] {
  const db = path.join(root, 'metadata.db');
  if (!fs.existsSync(db)) return [];
  const h = new Database(db, { readonly: true, fileMustExist: true });
  try {
    return (h.prepare("SELECT value FROM records WHERE kind = 'daemon'").all() as { value: string }[]).map((r) => JSON.parse(r.value) as { pid: number; apiSock: string });
  } catch {
    return []; // The table is created with the store; not there yet.
  } finally {
    h.close();
  }
}

/**
 * PIDs of processes whose command line names a path under `dir`: the daemons a snapshotter rooted
 * there spawned, including one spawned and not yet recorded when the snapshotter was killed.
 */
export function processesUnder(dir: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').some((a) => a.startsWith(`${dir}/`))) out.push(Number(e));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/** SIGKILLs each pid; one that is already gone is skipped. */
export function killPids(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

async function waitReady(address: string, proc: ChildProcess, logFile: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (let i = 0; i < 300 && Date.now() < deadline; i++) {
    if (proc.exitCode !== null) throw new Error(`containerd exited (${proc.exitCode}): ${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    try {
      await run('ctr', ['--address', address, 'version'], 5000);
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  throw new Error(`containerd at ${address} not ready after 30 s`);
}

/** Our ctr-remote (src/cli/ctr-remote.ts), from src/, dist/ and dist-bench/src/ (the benchmarks) alike. */
const CTR_REMOTE = [path.resolve(__dirname, '..', '..', 'bin', 'ctr-remote'), path.resolve(__dirname, '..', '..', '..', 'bin', 'ctr-remote')].find((p) => fs.existsSync(p)) ?? path.resolve(__dirname, '..', '..', 'bin', 'ctr-remote');

/** PIDs of containerd-shim processes started for the containerd listening on `address`. */
function shimsOf(address: string): number[] {
  const pids: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let argv: string[];
    try {
      argv = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone
    }
    if (/containerd-shim/.test(argv[0] ?? '') && argv[argv.indexOf('-address') + 1] === address && argv.includes('-address')) pids.push(Number(e));
  }
  return pids;
}

export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const dir = opts.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ctd-'));
  fs.mkdirSync(dir, { recursive: true });
  const name = opts.snapshotterName ?? 'nydus';
  const configPath = path.join(dir, 'config.toml');
  fs.writeFileSync(configPath, configToml(dir, name, opts.snapshotterSocket, opts.cri));
  const address = path.join(dir, 'containerd.sock');
  const logFile = path.join(dir, 'containerd.log');
  const out = fs.openSync(logFile, 'a');
  const proc = spawn('containerd', ['--config', configPath], { stdio: ['ignore', out, out] });
  fs.closeSync(out);
  const namespace = 'default';
  const runcRoot = path.join(dir, 'runc');
  const base = ['--address', address, '-n', namespace];
  const ctd: Containerd = {
    address,
    dir,
    namespace,
    runcRoot,
    ctr: (args, timeoutMs = 300_000) => run('ctr', [...base, ...(args[0] === 'run' ? ['run', '--runc-root', runcRoot, ...args.slice(1)] : args)], timeoutMs),
    ctrRemote: (args, timeoutMs = 300_000) => run(CTR_REMOTE, [...base, ...args], timeoutMs),
    log: () => fs.readFileSync(logFile, 'utf8'),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        // Tasks first: their shims outlive containerd otherwise.
        for (const ns of opts.cri ? [namespace, CRI_NAMESPACE] : [namespace]) {
          const nsBase = ['--address', address, '-n', ns];
          const tasks = await run('ctr', [...nsBase, 'tasks', 'ls', '-q'], 10_000).catch(() => ({ stdout: '' }));
          for (const id of tasks.stdout.split('\n').filter(Boolean)) {
            await run('ctr', [...nsBase, 'tasks', 'kill', '-s', 'SIGKILL', id], 10_000).catch(() => undefined);
            for (let i = 0; i < 50; i++) {
              const r = await run('ctr', [...nsBase, 'tasks', 'delete', id], 10_000).then(() => true, () => false);
              if (r) break;
              await new Promise((res) => setTimeout(res, 100));
            }
          }
        }
        proc.kill('SIGTERM');
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => {
            proc.kill('SIGKILL');
            resolve();
          }, 10_000);
          proc.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
        });
      }
      // A shim whose task went away while containerd was stopping is left without anyone to tell
      // it to exit; it names this containerd's socket on its command line.
      for (const pid of shimsOf(address)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // Exited meanwhile.
        }
      }
      unmountBelow(dir);
      if (!opts.dir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  try {
    await waitReady(address, proc, logFile);
  } catch (err) {
    await ctd.stop();
    throw err;
  }
  return ctd;
}
