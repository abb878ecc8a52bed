/**
 * The CRI keychain, as upstream nydus-snapshotter's `[remote.auth] enable_cri_keychain`: the
 * snapshotter's gRPC socket also serves CRI's `runtime.v1.ImageService` and forwards every call
 * to the real image service (`image_service_address`, containerd's socket by default). The kubelet
 * is pointed at it with `--image-service-endpoint=unix://<snapshotter socket>`; from each
 * `PullImageRequest` the proxy keeps `auth` in memory, keyed by the normalised image reference,
 * so that nydusd of that image, mounted later, gets the credentials the kubelet pulled it with.
 *
 * Requests and answers are forwarded as raw bytes: fields this copy of the API does not know (a
 * newer kubelet) reach containerd unchanged. Only PullImage and RemoveImage are decoded, to read
 * the image and its auth. RemoveImage forgets the image's credentials, as upstream does.
 *
 * Credentials are released only for the registry of the image they were given with: an
 * `AuthConfig.server_address` naming another host releases nothing. They are never logged.
 *
 * Clients: Node's HTTP/2 server refuses a request whose `:authority` is not a valid host, such as
 * a socket path; grpc-js clients dialling `unix:///path` send `localhost`, as Go's gRPC (the
 * kubelet, crictl) does, so both are served.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { DOCKER_HUB, formatReference, parseReference } from '../registry/reference';
import { logger } from '../util/log';
import { PROTO_DIR } from './service';

const log = logger('cri-image-proxy');

export const CRI_PROTO = 'cri-api/runtime/v1/api.proto';
/** Upstream's default `image_service_address`. */
export const DEFAULT_IMAGE_SERVICE_ADDRESS = '/run/containerd/containerd.sock';

/** `runtime.v1.AuthConfig` as proto-loader decodes it (keepCase). */
export interface CriAuthConfig {
  username?: string;
  password?: string;
  auth?: string;
  server_address?: string;
  identity_token?: string;
  registry_token?: string;
}

export type CriCredential = { username: string; password: string } | { unusable: string };

/** Loads `runtime.v1` from proto/ (both services; the test client uses RuntimeService too). */
export function loadCriPackage(): { RuntimeService: grpc.ServiceClientConstructor; ImageService: grpc.ServiceClientConstructor } {
  const def = protoLoader.loadSync(CRI_PROTO, { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true });
  return (grpc.loadPackageDefinition(def) as unknown as { runtime: { v1: ReturnType<typeof loadCriPackage> } }).runtime.v1;
}

/** The key credentials are kept under: the reference as containerd's CRI labels spell it. */
function refKey(image: string): string {
  return formatReference(parseReference(image));
}

const DOCKER_HUB_ALIASES = new Set([DOCKER_HUB, 'index.docker.io', 'registry-1.docker.io']);

/** Whether `serverAddress` (`host[:port]`, optionally with a scheme and path) names `registry`. */
function sameRegistry(serverAddress: string, registry: string): boolean {
  const host = serverAddress.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/')[0];
  return host === registry || (DOCKER_HUB_ALIASES.has(host) && DOCKER_HUB_ALIASES.has(registry));
}

/** Credentials captured from CRI pulls, per image reference (memory only). */
export class CriKeychain {
  private readonly byRef = new Map<string, CriAuthConfig>();

  remember(image: string, auth: CriAuthConfig | null | undefined): void {
    const key = refKey(image);
    if (auth) this.byRef.set(key, auth);
    else this.byRef.delete(key);
  }

  forget(image: string): void {
    this.byRef.delete(refKey(image));
  }

  /**
   * What the kubelet pulled `ref` with, as containerd's CRI plugin reads an AuthConfig:
   * `username`/`password`, else `auth` (base64 `user:password`). An identity or registry token is
   * `unusable` (nydusd takes user and password only); undefined when there is nothing for `ref`.
   */
  lookup(ref: string): CriCredential | undefined {
    let key: string;
    try {
      key = refKey(ref);
    } catch {
      return undefined;
    }
    const a = this.byRef.get(key);
    if (!a) return undefined;
    if (a.server_address && !sameRegistry(a.server_address, parseReference(key).registry)) return undefined;
    if (a.username) return { username: a.username, password: a.password ?? '' };
    if (a.identity_token) return { unusable: 'identity token' };
    if (a.auth) {
      const decoded = Buffer.from(a.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) return { unusable: 'auth is not base64 of user:password' };
      return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1).replace(/\0+$/, '') };
    }
    if (a.registry_token) return { unusable: 'registry token' };
    return undefined;
  }
}

/** Metadata that belongs to one HTTP/2 hop and must not be copied onto the next. */
const HOP_KEYS = new Set(['user-agent', 'content-type', 'te', 'host', 'authority', 'accept-encoding', 'grpc-accept-encoding', 'grpc-encoding', 'grpc-timeout']);

function forwardable(md: grpc.Metadata): grpc.Metadata {
  const out = new grpc.Metadata();
  for (const [k, v] of Object.entries(md.getMap())) if (!HOP_KEYS.has(k) && !k.startsWith(':')) out.set(k, v);
  return out;
}

const raw = (b: Buffer): Buffer => b;

export interface CriImageProxy {
  keychain: CriKeychain;
  close(): void;
}

/**
 * Adds `runtime.v1.ImageService` to `server`, forwarding to the image service at `target` (a unix
 * socket path, or any grpc-js target such as `unix:///path`). Returns the keychain it fills.
 */
export function addCriImageProxy(server: grpc.Server, target: string, keychain = new CriKeychain()): CriImageProxy {
  const typed = loadCriPackage().ImageService.service;
  const rawDef: grpc.ServiceDefinition = Object.fromEntries(
    Object.entries(typed).map(([name, m]) => [name, { ...m, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw }]),
  );
  const address = target.includes('://') ? target : `unix://${target}`;
  const upstream = new grpc.Client(address, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 16 << 20,
    'grpc.max_send_message_length': 16 << 20,
  });

  /** Reads the image (and auth) of PullImage/RemoveImage before they are forwarded. */
  const observe = (method: string, body: Buffer): void => {
    if (method !== 'PullImage' && method !== 'RemoveImage') return;
    const req = typed[method].requestDeserialize(body) as { image?: { image?: string }; auth?: CriAuthConfig | null };
    const image = req.image?.image ?? '';
    try {
      if (method === 'PullImage') keychain.remember(image, req.auth);
      else keychain.forget(image);
    } catch (err) {
      // containerd answers the bad reference itself; there is nothing to remember for it.
      log.debug({ image, err: (err as Error).message }, 'reference not understood; credentials not kept');
      return;
    }
    if (method === 'PullImage') log.info({ image, auth: req.auth ? 'given' : 'none' }, 'CRI pull seen');
  };

  const handlers: grpc.UntypedServiceImplementation = {};
  for (const [name, m] of Object.entries(rawDef)) {
    if (m.requestStream) continue; // ImageService has no client-streaming RPC
    if (m.responseStream) {
      handlers[name] = (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const up = upstream.makeServerStreamRequest(m.path, raw, raw, call.request, forwardable(call.metadata), { deadline: call.getDeadline() });
        up.on('data', (b: Buffer) => call.write(b));
        up.on('error', (e: grpc.ServiceError) => call.emit('error', e)); // grpc-js sends it as the call's status
        up.on('end', () => call.end());
        call.on('cancelled', () => up.cancel());
      };
      continue;
    }
    handlers[name] = (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      try {
        observe(name, call.request);
      } catch (err) {
        cb({ code: grpc.status.INVALID_ARGUMENT, details: `${name}: undecodable request: ${(err as Error).message}` });
        return;
      }
      upstream.makeUnaryRequest(m.path, raw, raw, call.request, forwardable(call.metadata), { deadline: call.getDeadline() }, (err, res) => cb(err, res));
    };
  }
  server.addService(rawDef, handlers);
  log.info({ target: address }, 'CRI image service proxy on the snapshotter socket');
  return { keychain, close: () => upstream.close() };
}
