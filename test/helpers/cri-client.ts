/**
 * A small CRI client for tests: what the kubelet does for one pod, over `runtime.v1` (the API
 * definition from kubernetes/cri-api in proto/cri-api/), with @grpc/grpc-js.
 *
 * The runtime service and the image service may live on different sockets, as with the kubelet's
 * `--container-runtime-endpoint` and `--image-service-endpoint` (the nydus snapshotter's CRI image
 * proxy serves the latter). Pods use the node's network (no CNI) and, like the kubelet, each
 * container's output goes to `<log_directory>/<log_path>` in CRI's log format.
 *
 *   const cri = new CriClient({ runtime: ctd.address, image: snapshotterSocket });
 *   await cri.pullImage(ref, { username, password });
 *   const pod = await cri.runPod('demo', logDir);
 *   const id = await cri.createContainer(pod, 'app', ref, ['python3', '-c', 'print(1)']);
 *   await cri.startContainer(id);
 *   const st = await cri.waitExited(id, 60_000);  // exit_code, log_path
 *   cri.readLog(st.log_path)                       // [{stream: 'stdout', text: '1'}]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadCriPackage } from '../../src/snapshotter/cri-image-proxy';

/** runtime.v1.NamespaceMode */
const NODE = 'NODE';
const CONTAINER = 'CONTAINER';

export interface CriAuth {
  username?: string;
  password?: string;
  auth?: string;
  server_address?: string;
  identity_token?: string;
}

export interface PodHandle {
  id: string;
  config: Record<string, unknown>;
}

export interface ContainerStatus {
  id: string;
  state: 'CONTAINER_CREATED' | 'CONTAINER_RUNNING' | 'CONTAINER_EXITED' | 'CONTAINER_UNKNOWN';
  exit_code: number;
  reason: string;
  message: string;
  log_path: string;
  image_ref: string;
}

export interface LogLine {
  stream: 'stdout' | 'stderr';
  text: string;
}

type Call = (method: string, req: object) => Promise<any>; // eslint-disable-line

function caller(client: grpc.Client, timeoutMs: number): Call {
  const c = client as unknown as Record<string, Function>;
  return (method, req) =>
    new Promise((resolve, reject) => {
      if (typeof c[method] !== 'function') return reject(new Error(`no such CRI method ${method}`));
      c[method].call(client, req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: unknown) => {
        if (err) reject(Object.assign(new Error(`CRI ${method}: ${err.details || err.message}`), { code: err.code }));
        else resolve(res);
      });
    });
}

const target = (sock: string): string => (sock.includes('://') ? sock : `unix://${sock}`);

export class CriClient {
  private readonly runtimeClient: grpc.Client;
  private readonly imageClient: grpc.Client;
  private readonly rt: Call;
  private readonly img: Call;

  /** `runtime`/`image`: unix socket paths (or grpc targets); `image` defaults to `runtime`. */
  constructor(o: { runtime: string; image?: string; timeoutMs?: number }) {
    const pkg = loadCriPackage();
    const timeout = o.timeoutMs ?? 10 * 60_000;
    const opts = { 'grpc.max_receive_message_length': 16 << 20 };
    this.runtimeClient = new pkg.RuntimeService(target(o.runtime), grpc.credentials.createInsecure(), opts);
    this.imageClient = new pkg.ImageService(target(o.image ?? o.runtime), grpc.credentials.createInsecure(), opts);
    this.rt = caller(this.runtimeClient, timeout);
    this.img = caller(this.imageClient, timeout);
  }

  /** The runtime's name and version, retried (bounded) until its CRI service answers. */
  async version(waitMs = 30_000): Promise<{ runtime_name: string; runtime_version: string; runtime_api_version: string }> {
    const deadline = Date.now() + waitMs;
    for (let i = 0; ; i++) {
      try {
        return await this.rt('Version', { version: 'v1' });
      } catch (err) {
        if (Date.now() > deadline || i > 300) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  /** PullImage as the kubelet sends it; returns the image id (`sha256:…` of the config). */
  async pullImage(image: string, auth?: CriAuth): Promise<string> {
    const res = await this.img('PullImage', { image: { image }, auth: auth ?? null });
    return res.image_ref;
  }

  async imageStatus(image: string): Promise<{ id: string; repo_tags: string[] } | null> {
    return (await this.img('ImageStatus', { image: { image } })).image ?? null;
  }

  async listImages(): Promise<{ id: string; repo_tags: string[] }[]> {
    return (await this.img('ListImages', { filter: null })).images;
  }

  async removeImage(image: string): Promise<void> {
    await this.img('RemoveImage', { image: { image } });
  }

  /** RunPodSandbox with the node's network, PID namespace per container, logs under `logDirectory`. */
  async runPod(name: string, logDirectory: string): Promise<PodHandle> {
    fs.mkdirSync(logDirectory, { recursive: true });
    const config = {
      metadata: { name, namespace: 'default', uid: `uid-${name}`, attempt: 0 },
      // No hostname: a host-network pod shares the node's UTS namespace (the kubelet leaves it empty too).
      log_directory: logDirectory,
      labels: { app: name },
      linux: { security_context: { namespace_options: { network: NODE, pid: CONTAINER, ipc: 'POD' } } },
    };
    const res = await this.rt('RunPodSandbox', { config, runtime_handler: '' });
    return { id: res.pod_sandbox_id, config };
  }

  /** CreateContainer in `pod`; the log goes to `<pod log_directory>/<name>.log`. */
  async createContainer(pod: PodHandle, name: string, image: string, command: string[], env: Record<string, string> = {}): Promise<string> {
    const config = {
      metadata: { name, attempt: 0 },
      image: { image },
      command,
      // KeyValue.value is `bytes` in this cri-api (wire-compatible with the older `string`).
      envs: Object.entries(env).map(([key, value]) => ({ key, value: Buffer.from(value) })),
      log_path: `${name}.log`,
      linux: { security_context: { namespace_options: { network: NODE, pid: CONTAINER, ipc: 'POD' } } },
    };
    const res = await this.rt('CreateContainer', { pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
    return res.container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.rt('StartContainer', { container_id: id });
  }

  async containerStatus(id: string): Promise<ContainerStatus> {
    return (await this.rt('ContainerStatus', { container_id: id, verbose: false })).status;
  }

  /** Polls ContainerStatus (every 200 ms, at most `timeoutMs`) until the container has exited. */
  async waitExited(id: string, timeoutMs: number): Promise<ContainerStatus> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < Math.ceil(timeoutMs / 200) + 1; i++) {
      const st = await this.containerStatus(id);
      if (st.state === 'CONTAINER_EXITED') return st;
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`container ${id} did not exit within ${timeoutMs} ms`);
  }

  async listContainers(podId?: string): Promise<{ id: string; state: string }[]> {
    return (await this.rt('ListContainers', { filter: podId ? { pod_sandbox_id: podId } : null })).containers;
  }

  async listPods(): Promise<{ id: string; state: string }[]> {
    return (await this.rt('ListPodSandbox', { filter: null })).items;
  }

  async stopPod(id: string): Promise<void> {
    await this.rt('StopPodSandbox', { pod_sandbox_id: id });
  }

  async removePod(id: string): Promise<void> {
    await this.rt('RemovePodSandbox', { pod_sandbox_id: id });
  }

  /**
   * The lines of a container log in CRI's format (`<RFC3339Nano> <stream> <P|F> <text>`), partial
   * (`P`) lines joined with what follows, as the kubelet shows them.
   */
  readLog(logPath: string): LogLine[] {
    const out: LogLine[] = [];
    let partial: Partial<Record<LogLine['stream'], string>> = {};
    for (const line of fs.readFileSync(logPath, 'utf8').split('\n')) {
      if (!line) continue;
      const m = /^(\S+) (stdout|stderr) ([PF]) ?(.*)$/.exec(line);
      if (!m) throw new Error(`${path.basename(logPath)}: not a CRI log line: ${JSON.stringify(line.slice(0, 80))}`);
      const stream = m[2] as LogLine['stream'];
      const text = (partial[stream] ?? '') + m[4];
      if (m[3] === 'P') partial = { ...partial, [stream]: text };
      else {
        out.push({ stream, text });
        delete partial[stream];
      }
    }
    return out;
  }

  close(): void {
    this.runtimeClient.close();
    this.imageClient.close();
  }
}
