/**
 * The API discovery part of a Kubernetes API server, on 127.0.0.1, for `kubectl create
 * --dry-run=client`: kubectl maps each manifest's kind to a resource through the server's
 * discovery documents even when it sends nothing. No API server runs here, so this answers the
 * legacy discovery endpoints (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`, as the real
 * server does for clients that do not ask for aggregated discovery) for the kinds deploy/ uses.
 * Any other request, and any write, gets 404/405 and is recorded, so a test can assert that
 * kubectl only read discovery.
 *
 *   const api = await startKubeDiscovery();
 *   // kubectl --kubeconfig api.kubeconfig create --dry-run=client --validate=false -o json -f deploy/kubernetes/
 *   api.requests()   // [{ method: 'GET', path: '/api' }, ...]
 *   await api.stop();
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

interface Resource {
  name: string;
  singularName: string;
  namespaced: boolean;
  kind: string;
}

/** group/version ('' group = core) → resources served. */
const RESOURCES: Record<string, Resource[]> = {
  v1: [
    { name: 'namespaces', singularName: 'namespace', namespaced: false, kind: 'Namespace' },
    { name: 'configmaps', singularName: 'configmap', namespaced: true, kind: 'ConfigMap' },
    { name: 'serviceaccounts', singularName: 'serviceaccount', namespaced: true, kind: 'ServiceAccount' },
    { name: 'secrets', singularName: 'secret', namespaced: true, kind: 'Secret' },
  ],
  'apps/v1': [{ name: 'daemonsets', singularName: 'daemonset', namespaced: true, kind: 'DaemonSet' }],
  'rbac.authorization.k8s.io/v1': [
    { name: 'clusterroles', singularName: 'clusterrole', namespaced: false, kind: 'ClusterRole' },
    { name: 'clusterrolebindings', singularName: 'clusterrolebinding', namespaced: false, kind: 'ClusterRoleBinding' },
    { name: 'roles', singularName: 'role', namespaced: true, kind: 'Role' },
    { name: 'rolebindings', singularName: 'rolebinding', namespaced: true, kind: 'RoleBinding' },
  ],
};

const VERBS = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];

export interface KubeDiscovery {
  url: string;
  /** A kubeconfig file naming this server (no credentials). */
  kubeconfig: string;
  requests(): { method: string; path: string; status: number }[];
  stop(): Promise<void>;
}

function documents(host: string): Map<string, unknown> {
  const docs = new Map<string, unknown>();
  docs.set('/api', { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: host }] });
  const groups = Object.keys(RESOURCES)
    .filter((gv) => gv.includes('/'))
    .map((gv) => {
      const [name, version] = gv.split('/');
      return { name, versions: [{ groupVersion: gv, version }], preferredVersion: { groupVersion: gv, version } };
    });
  docs.set('/apis', { kind: 'APIGroupList', apiVersion: 'v1', groups });
  for (const [gv, resources] of Object.entries(RESOURCES)) {
    docs.set(gv.includes('/') ? `/apis/${gv}` : `/api/${gv}`, {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: gv,
      resources: resources.map((r) => ({ ...r, verbs: VERBS })),
    });
  }
  return docs;
}

export async function startKubeDiscovery(): Promise<KubeDiscovery> {
  const log: { method: string; path: string; status: number }[] = [];
  let docs = new Map<string, unknown>();
  const server = http.createServer((req, res) => {
    const p = (req.url ?? '/').split('?')[0];
    const doc = req.method === 'GET' ? docs.get(p) : undefined;
    const status = doc ? 200 : req.method === 'GET' ? 404 : 405;
    log.push({ method: req.method ?? '', path: p, status });
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(doc ?? { kind: 'Status', apiVersion: 'v1', status: 'Failure', code: status, reason: status === 404 ? 'NotFound' : 'MethodNotAllowed' }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  docs = documents(host);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kubeconfig-'));
  const kubeconfig = path.join(dir, 'config');
  fs.writeFileSync(
    kubeconfig,
    `apiVersion: v1
kind: Config
clusters:
- name: discovery
  cluster:
    server: http://${host}
contexts:
- name: discovery
  context:
    cluster: discovery
    user: nobody
current-context: discovery
users:
- name: nobody
  user: {}
`,
    { mode: 0o600 },
  );
  return {
    url: `http://${host}`,
    kubeconfig,
    requests: () => [...log],
    stop: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
