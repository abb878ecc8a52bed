/**
 * A nydus image and the snapshotter stack for the containerd tests: pushes the two-layer
 * Debian/python image, converts it with ./bin/nydusify, counts what the registry served per blob,
 * and runs ./bin/containerd-nydus-grpc from a config.toml it writes, with a private containerd in
 * front of it.
 *
 *   const image = await convertedImage(reg);       // { ref, blobs, bootDigest }
 *   const stack = await startSnapshotterStack({ dir, daemon: { recover_policy: 'restart' } });
 *   await stack.ctd!.ctr([...]);                   // stack.snapshotter.kill9() / start() to restart it
 *   await stack.stop();                            // containerd, snapshotter, every nydusd; no mount left
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { mountsBelow } from '../../src/fuse/mount-table';
import { RegistryClient } from '../../src/registry';
import { Containerd, ContainerdOptions, killPids, processesUnder, recordedDaemons, startContainerd, unmountBelow } from './containerd';
import { REPO_ROOT } from './fixtures';
import { pushImage } from './images';
import type { TestRegistry } from './registry';

const run = promisify(execFile);

export interface Converted {
  blobs: { digest: string; size: number }[];
  bootDigest: string;
}

/** Pushes the two-layer Debian/python test image and converts it with ./bin/nydusify. */
export async function convertedImage(reg: TestRegistry): Promise<{ ref: string } & Converted> {
  const src = await pushImage(reg, 'debian-2layer', 'oci/debian');
  const ref = `${reg.host}/nydus/debian:latest`;
  await run(path.join(REPO_ROOT, 'bin', 'nydusify'), ['convert', '--source', src, '--target', ref, '--plain-http'], {
    timeout: 15 * 60_000,
    maxBuffer: 1 << 24,
  });
  const client = new RegistryClient({ registry: reg.host, insecure: true, noDockerConfig: true });
  try {
    const layers = (await client.getManifest('nydus/debian', 'latest')).json.layers as { digest: string; size: number; annotations?: Record<string, string> }[];
    const hex = (dg: string): string => dg.replace(/^sha256:/, '');
    return {
      ref,
      blobs: layers.filter((l) => l.annotations?.['containerd.io/snapshot/nydus-blob'] === 'true').map((l) => ({ digest: hex(l.digest), size: l.size })),
      bootDigest: hex(layers.find((l) => l.annotations?.['containerd.io/snapshot/nydus-bootstrap'] === 'true')!.digest),
    };
  } finally {
    await client.close();
  }
}

/** Bytes the registry served for one blob: Range lengths, or the whole blob for a plain GET. */
export function blobBytes(reg: TestRegistry, digest: string, size: number): number {
  let total = 0;
  for (const r of reg.requests()) {
    if (r.method !== 'GET' || !r.path.includes(`/blobs/sha256:${digest}`) || r.status >= 400) continue;
    const m = /bytes=(\d+)-(\d*)/.exec(r.range ?? '');
    total += m ? (m[2] ? Number(m[2]) : size - 1) - Number(m[1]) + 1 : size;
  }
  return total;
}

/** ./bin/containerd-nydus-grpc with a config file, output appended to `logFile`; stopped by PID. */
export class SnapshotterProcess {
  proc?: ChildProcess;
  constructor(
    readonly configPath: string,
    readonly address: string,
    readonly logFile: string,
    private readonly env?: NodeJS.ProcessEnv,
    /** Files besides the gRPC socket whose existence says it is ready (the system controller's socket). */
    private readonly readyFiles: string[] = [],
  ) {}

  async start(): Promise<void> {
    // A socket left by a snapshotter killed before at the same address would pass for ready, and
    // the new one removes it just before it listens: containerd could dial in between (ENOENT).
    for (const f of [this.address, ...this.readyFiles]) fs.rmSync(f, { force: true });
    const out = fs.openSync(this.logFile, 'a');
    this.proc = spawn(path.join(REPO_ROOT, 'bin', 'containerd-nydus-grpc'), ['--config', this.configPath], { stdio: ['ignore', out, out], env: this.env });
    fs.closeSync(out);
    const ready = (): boolean => [this.address, ...this.readyFiles].every((f) => fs.existsSync(f));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !ready()) {
      if (this.proc.exitCode !== null) throw new Error(`snapshotter exited: ${fs.readFileSync(this.logFile, 'utf8').slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!ready()) throw new Error(`snapshotter not ready within 30 s (waiting for ${[this.address, ...this.readyFiles].filter((f) => !fs.existsSync(f)).join(', ')})`);
  }

  async kill9(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc!.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
  }
}

/**
 * Timeout for a test that runs containers through the stack: longer than the bounded waits inside
 * such tests (a container's exit: 5 min; a tree walk through a lazy mount: minutes on a loaded
 * machine). Under Jest's default of 120 s a slow test timed out while its containerd calls went
 * on; the teardown then ran beside them, and in the CRI test containerd, still creating that
 * test's container, had the snapshotter start a dedicated nydusd just as the snapshotter was
 * killed (a nydusd nobody had recorded yet outlived the run).
 */
export const STACK_TEST_TIMEOUT_MS = 15 * 60_000;

export interface StackOptions {
  /** Where the config, socket and log go (`<dir>/<name>.toml`, `.sock`, `.log`); the caller owns it. */
  dir: string;
  /** File name stem (default `nydus`), for a second snapshotter in the same directory. */
  name?: string;
  /** The snapshotter's state (default `<dir>/root`). */
  root?: string;
  /** `daemon_mode` (default `shared`). */
  daemonMode?: 'shared' | 'dedicated' | 'multiple';
  /** Keys of `[daemon]` besides `nydusd_config`: recover_policy, fs_driver, failover_policy... */
  daemon?: Record<string, string>;
  /** `[daemon] nydusd_config` (default config/nydusd.json). */
  nydusdConfig?: string;
  /** More sections, verbatim ([remote.mirrors_config], [remote.auth], [system], [metrics]). */
  extraToml?: string;
  /** The snapshotter's environment (default this process's). */
  env?: NodeJS.ProcessEnv;
  /** See SnapshotterProcess. */
  readyFiles?: string[];
  /** The containerd in front of it (default a plain one); false for none. */
  containerd?: false | Omit<ContainerdOptions, 'snapshotterSocket'>;
}

export interface SnapshotterStack {
  dir: string;
  root: string;
  /** The snapshotter's gRPC socket. */
  address: string;
  configPath: string;
  logFile: string;
  snapshotter: SnapshotterProcess;
  /** Undefined without one, or once stopContainerd() ran. */
  ctd?: Containerd;
  /** The snapshotter's log so far. */
  log(): string;
  /** PIDs of the nydusd processes the snapshotter recorded. */
  daemonPids(): number[];
  stopContainerd(): Promise<void>;
  /**
   * Stops containerd (its tasks and shims), then the snapshotter, then every nydusd it spawned
   * (recorded ones, and by command line any spawned too late to be recorded), all by PID, and
   * detaches what is left mounted below root. Rejects, naming them, if a process or mount survives.
   * Idempotent.
   */
  stop(): Promise<void>;
}

const toml = (v: string): string => JSON.stringify(v);

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Writes the config, starts the snapshotter and (unless `containerd: false`) a containerd using it. */
export async function startSnapshotterStack(o: StackOptions): Promise<SnapshotterStack> {
  const name = o.name ?? 'nydus';
  const root = o.root ?? path.join(o.dir, 'root');
  const address = path.join(o.dir, `${name}.sock`);
  const configPath = path.join(o.dir, `${name}.toml`);
  const logFile = path.join(o.dir, `${name}.log`);
  const daemon = { nydusd_config: o.nydusdConfig ?? path.join(REPO_ROOT, 'config', 'nydusd.json'), ...o.daemon };
  fs.writeFileSync(
    configPath,
    [
      'version = 1',
      `root = ${toml(root)}`,
      `address = ${toml(address)}`,
      `daemon_mode = ${toml(o.daemonMode ?? 'shared')}`,
      '[daemon]',
      ...Object.entries(daemon).map(([k, v]) => `${k} = ${toml(v)}`),
      o.extraToml ?? '',
      '[log]',
      'level = "debug"',
      '',
    ].join('\n'),
  );
  const snapshotter = new SnapshotterProcess(configPath, address, logFile, o.env, o.readyFiles);
  let stopped: Promise<void> | undefined;
  const stack: SnapshotterStack = {
    dir: o.dir,
    root,
    address,
    configPath,
    logFile,
    snapshotter,
    log: () => fs.readFileSync(logFile, 'utf8'),
    daemonPids: () => recordedDaemons(root).map((d) => d.pid),
    async stopContainerd() {
      const ctd = stack.ctd;
      stack.ctd = undefined;
      await ctd?.stop();
    },
    stop() {
      stopped ??= (async () => {
        // containerd first: once it is gone nothing asks the snapshotter for a mount any more.
        await stack.stopContainerd();
        await snapshotter.kill9();
        const pids = new Set([...recordedDaemons(root).map((d) => d.pid), ...processesUnder(root)]);
        killPids(pids);
        for (let i = 0; i < 100 && [...pids].some(alive); i++) await new Promise((r) => setTimeout(r, 50));
        unmountBelow(root);
        const left = [...[...pids].filter(alive).map((p) => `process ${p}`), ...processesUnder(root).map((p) => `process ${p}`), ...mountsBelow(root).map((m) => `mount ${m}`)];
        if (left.length) throw new Error(`snapshotter stack at ${o.dir}: still there after stop: ${left.join(', ')}`);
      })();
      return stopped;
    },
  };
  try {
    await snapshotter.start();
    if (o.containerd !== false) stack.ctd = await startContainerd({ ...o.containerd, snapshotterSocket: address });
  } catch (err) {
    await stack.stop().catch(() => undefined);
    throw err;
  }
  return stack;
}

/**
 * The end of a stack test: stops `stack` (if it started), then unmounts whatever is left below
 * `dir` and removes it, also when the stop failed (its error is still thrown).
 */
export async function stopAndRemove(stack: SnapshotterStack | undefined, dir: string | undefined): Promise<void> {
  try {
    await stack?.stop();
  } finally {
    if (dir) {
      unmountBelow(dir);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}
