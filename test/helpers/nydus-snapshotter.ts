/**
 * A nydus image and a snapshotter process for the containerd tests: pushes the two-layer
 * Debian/python image, converts it with ./bin/nydusify, counts what the registry served per blob,
 * and runs ./bin/containerd-nydus-grpc with a config file (stopped by SIGKILL, by PID).
 *
 *   const image = await convertedImage(reg);       // { ref, blobs, bootDigest }
 *   const snp = new SnapshotterProcess(configPath, sock, logFile); await snp.start();
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { RegistryClient } from '../../src/registry';
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

export class SnapshotterProcess {
  proc?: ChildProcess;
  constructor(
    readonly configPath: string,
    readonly address: string,
    readonly logFile: string,
  ) {}

  async start(): Promise<void> {
    const out = fs.openSync(this.logFile, 'a');
    this.proc = spawn(path.join(REPO_ROOT, 'bin', 'containerd-nydus-grpc'), ['--config', this.configPath], { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline && !fs.existsSync(this.address)) {
      if (this.proc.exitCode !== null) throw new Error(`snapshotter exited: ${fs.readFileSync(this.logFile, 'utf8').slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!fs.existsSync(this.address)) throw new Error('snapshotter socket did not appear');
  }

  async kill9(): Promise<void> {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    const exited = new Promise((r) => this.proc!.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
  }
}

