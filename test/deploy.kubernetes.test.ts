/**
 * deploy/kubernetes/ as users apply it: kubectl itself parses every manifest
 * (`kubectl create --dry-run=client -o json -f deploy/kubernetes/`; kubectl needs API discovery to
 * map kinds to resources, served by test/helpers/kube-discovery.ts as no API server runs here),
 * then the objects kubectl produced are checked against what the snapshotter and nydusd read:
 * the config file the command names is mounted from a ConfigMap key that parses with every key
 * honoured; the state dir, the socket, containerd's socket and certs.d are host paths whose host
 * side is the one deploy/containerd-config.toml gives containerd; the nydusd template parses.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { parse } from 'smol-toml';
import { nydusdConfigAsV1 } from '../src/daemon/config';
import { parseConfig } from '../src/snapshotter/config';
import { describeWith } from './helpers/capabilities';
import { REPO_ROOT } from './helpers/fixtures';
import { KubeDiscovery, startKubeDiscovery } from './helpers/kube-discovery';

const run = promisify(execFile);
const DEPLOY = path.join(REPO_ROOT, 'deploy', 'kubernetes');

type Obj = { kind: string; apiVersion: string; metadata: { name: string; namespace?: string }; [k: string]: any }; // eslint-disable-line

interface VolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
  readOnly?: boolean;
  mountPropagation?: string;
}

describeWith(['kubectl'], 'deploy/kubernetes: the DaemonSet, its ConfigMaps and RBAC', () => {
  let api: KubeDiscovery | undefined;
  let tmp: string;
  let objects: Obj[];

  beforeAll(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'k8sdeploy-'));
    api = await startKubeDiscovery();
    const { stdout } = await run(
      'kubectl',
      ['--kubeconfig', api.kubeconfig, '--cache-dir', path.join(tmp, 'cache'), 'create', '--dry-run=client', '--validate=false', '-o', 'json', '-f', DEPLOY],
      { timeout: 120_000, maxBuffer: 1 << 24, env: { ...process.env, HOME: tmp, KUBECONFIG: api.kubeconfig } },
    );
    // One JSON document per object, each starting at the beginning of a line.
    objects = stdout.split(/^(?=\{)/m).filter((d) => d.trim()).map((d) => JSON.parse(d));
  }, 180_000);

  afterAll(async () => {
    await api?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const one = (kind: string, name?: string): Obj => {
    const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
    expect(found.map((o) => o.metadata.name)).toHaveLength(1);
    return found[0];
  };

  test('kubectl parses every manifest, reading only API discovery', () => {
    const files = fs.readdirSync(DEPLOY).filter((f) => /\.ya?ml$/.test(f));
    expect(files.sort()).toEqual(['nydus-snapshotter-rbac.yaml', 'nydus-snapshotter.yaml']);
    expect(objects.map((o) => `${o.kind}/${o.metadata.name}`).sort()).toEqual(
      ['ConfigMap/nydus-snapshotter-config', 'ConfigMap/nydusd-config', 'DaemonSet/nydus-snapshotter', 'Namespace/nydus-system', 'ServiceAccount/nydus-snapshotter-sa'].sort(),
    );
    const reqs = api!.requests();
    expect(reqs.length).toBeGreaterThan(0);
    expect(reqs.filter((r) => r.method !== 'GET')).toEqual([]);
    // Every namespaced object lives in the namespace the manifests create.
    for (const o of objects.filter((x) => x.kind !== 'Namespace')) expect(`${o.kind}:${o.metadata.namespace}`).toBe(`${o.kind}:nydus-system`);
  });

  test('the DaemonSet runs as the service account, which holds no token and no role', () => {
    const ds = one('DaemonSet');
    const sa = one('ServiceAccount');
    expect(ds.spec.template.spec.serviceAccountName).toBe(sa.metadata.name);
    expect(sa.automountServiceAccountToken).toBe(false);
    expect(objects.filter((o) => /Role/.test(o.kind))).toEqual([]);
  });

  test('every path the snapshotter and nydusd read is mounted, and is the host path containerd uses', () => {
    const ds = one('DaemonSet');
    const pod = ds.spec.template.spec;
    expect(pod.hostPID).toBe(true); // nydusd outlives a pod restart and is adopted by PID
    const [ctr] = pod.containers;
    expect(ctr.securityContext.privileged).toBe(true); // FUSE mounts
    const volumes = new Map<string, any>(pod.volumes.map((v: { name: string }) => [v.name, v])); // eslint-disable-line
    const mounts: VolumeMount[] = ctr.volumeMounts;
    for (const m of mounts) expect(volumes.has(m.name)).toBe(true);

    /** The mount a container path is under (longest mountPath), and where it is on the host or in a ConfigMap. */
    const resolve = (p: string): { mount: VolumeMount; hostPath?: string; configMap?: { name: string; key: string } } => {
      const m = mounts.filter((x) => p === x.mountPath || p.startsWith(x.mountPath.replace(/\/$/, '') + '/')).sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
      if (!m) throw new Error(`${p} is not under any volumeMount of the DaemonSet`);
      const v = volumes.get(m.name);
      const rest = path.relative(m.mountPath, p);
      if (v.hostPath) return { mount: m, hostPath: path.join(v.hostPath.path, m.subPath ?? '', rest) };
      if (v.configMap) return { mount: m, configMap: { name: v.configMap.name, key: m.subPath ?? rest } };
      throw new Error(`${p}: volume ${m.name} is neither hostPath nor configMap`);
    };
    const configMapFile = (p: string): string => {
      const r = resolve(p);
      expect(r.configMap).toBeDefined();
      const data = one('ConfigMap', r.configMap!.name).data as Record<string, string>;
      expect(Object.keys(data)).toContain(r.configMap!.key);
      return data[r.configMap!.key];
    };

    // The config file named on the command line comes from the ConfigMap and parses, every key honoured.
    const cmd: string[] = ctr.command;
    expect(cmd[0]).toBe('containerd-nydus-grpc');
    const configPath = cmd[cmd.indexOf('--config') + 1];
    const text = configMapFile(configPath);
    const raw = parse(text) as any; // eslint-disable-line
    // parseConfig checks that the certs.d dir exists; on the node it does (hostPath, DirectoryOrCreate).
    const certsHere = path.join(tmp, 'certs.d');
    fs.mkdirSync(certsHere);
    const cfg = parseConfig(text.replace(JSON.stringify(raw.remote.mirrors_config.dir), JSON.stringify(certsHere)), configPath);
    expect(cfg.warnings).toEqual([]);

    const containerd = parse(fs.readFileSync(path.join(REPO_ROOT, 'deploy', 'containerd-config.toml'), 'utf8')) as any; // eslint-disable-line
    const cri = containerd.plugins['io.containerd.grpc.v1.cri'];

    // State dir: the snapshotter hands containerd mounts with paths under it (lowerdir=<root>/mnt/…),
    // so it must be the same path on the host, writable, with FUSE mounts propagating to the host.
    const root = resolve(cfg.root);
    expect(root.hostPath).toBe(cfg.root);
    expect(root.mount.mountPropagation).toBe('Bidirectional');
    expect(root.mount.readOnly).toBeFalsy();
    for (const d of [cfg.cache.dir, cfg.log.dir]) expect(resolve(d).mount).toBe(root.mount);

    // The socket is where containerd's [proxy_plugins.nydus] dials, and what the probe checks.
    expect(resolve(cfg.address).hostPath).toBe(containerd.proxy_plugins.nydus.address);
    expect(ctr.readinessProbe.exec.command).toEqual(['test', '-S', cfg.address]);

    // CRI keychain on: the proxy forwards to containerd's own socket (its default grpc address).
    expect(cfg.criKeychain.enable).toBe(true);
    expect(resolve(cfg.criKeychain.imageServiceAddress).hostPath).toBe(containerd.grpc?.address ?? '/run/containerd/containerd.sock');

    // certs.d: the same directory containerd's CRI pulls use.
    const certs = resolve(raw.remote.mirrors_config.dir);
    expect(certs.hostPath).toBe(cri.registry.config_path);

    // nydusd: its template from the other ConfigMap, and /dev/fuse.
    const template = nydusdConfigAsV1(configMapFile(cfg.daemon.nydusdConfig), cfg.daemon.nydusdConfig) as any; // eslint-disable-line
    expect(template.device.backend.type).toBe('registry');
    expect(resolve('/dev/fuse').hostPath).toBe('/dev/fuse');
    expect(volumes.get(resolve('/dev/fuse').mount.name).hostPath.type).toBe('CharDevice');
  });
});
