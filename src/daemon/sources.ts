/**
 * Builds the ordered source list of one rafs instance from its config. Today: the origin registry
 * (or the localfs blob directory). The mirror and peer modules extend this function: peers first,
 * then mirrors, then the dfdaemon proxy wrapping the origin, then the origin itself — the order the
 * pipeline asks them in.
 */
import type { ChunkSource } from '../fetch/source';
import { FetchMetrics } from '../fetch/metrics';
import { LocalFsSource } from '../fetch/localfs';
import { OriginSource, BlobRangeReader } from '../fetch/origin';
import { RegistryClient } from '../registry/client';
import type { NydusdConfig, RegistryBackendConfig } from './config';

export interface SourceDeps {
  metrics: FetchMetrics;
  /** Makes the registry client for the origin; tests and the daemon may share one. */
  registryClient?: (cfg: RegistryBackendConfig) => BlobRangeReader;
}

export function defaultRegistryClient(cfg: RegistryBackendConfig): RegistryClient {
  const auth = process.env.IMAGE_PULL_AUTH || cfg.auth;
  return new RegistryClient({
    registry: cfg.host,
    insecure: cfg.scheme === 'http',
    skipVerify: cfg.skipVerify,
    timeoutMs: Math.max(cfg.timeout, cfg.connectTimeout, 1) * 1000,
    retryLimit: cfg.retryLimit,
    credentials: auth ? { auth } : undefined,
    noDockerConfig: true,
  });
}

export function buildSources(config: NydusdConfig, deps: SourceDeps): ChunkSource[] {
  const b = config.backend;
  if (b.type === 'localfs') return [new LocalFsSource({ dir: b.config.dir, altDirs: b.config.altDirs, blobFile: b.config.blobFile })];
  const client = (deps.registryClient ?? defaultRegistryClient)(b.config);
  return [new OriginSource(client, b.config.repo)];
}
