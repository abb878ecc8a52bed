/** One side of a conversion (source or target): a reference plus how to reach and log in to it. */
import { Credentials } from '../registry/credentials';
import { RegistryClient } from '../registry/client';
import { ImageReference, parseReference } from '../registry/reference';

export interface ImageEndpoint {
  ref: string;
  /** Plain HTTP (upstream's --plain-http). */
  plainHttp?: boolean;
  /** Accept any TLS certificate (upstream's --source-insecure / --target-insecure). */
  skipVerify?: boolean;
  /** PEM or file paths. */
  ca?: string;
  cert?: string;
  key?: string;
  /** Explicit credentials; otherwise the docker config file is consulted. */
  credentials?: Credentials;
  timeoutMs?: number;
  retryLimit?: number;
}

export interface OpenEndpoint {
  ref: ImageReference;
  client: RegistryClient;
}

export function openEndpoint(e: ImageEndpoint): OpenEndpoint {
  const ref = parseReference(e.ref);
  const client = new RegistryClient({
    registry: ref.registry, insecure: e.plainHttp, skipVerify: e.skipVerify, ca: e.ca, cert: e.cert, key: e.key,
    credentials: e.credentials, timeoutMs: e.timeoutMs, retryLimit: e.retryLimit,
  });
  return { ref, client };
}
