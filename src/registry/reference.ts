/**
 * Image references as docker and containerd spell them:
 *   busybox                      -> docker.io/library/busybox:latest
 *   127.0.0.1:5000/team/app:v1   -> registry 127.0.0.1:5000, repository team/app, tag v1
 *   host/app@sha256:<64 hex>     -> digest reference (a tag may precede the digest; both are kept)
 */

export interface ImageReference {
  /** Host[:port] as written, with docker.io for Docker Hub. */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export const DOCKER_HUB = 'docker.io';

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

/** Parses `ref`; throws a one-line Error naming the reference and what is wrong. */
export function parseReference(ref: string): ImageReference {
  const bad = (why: string) => new Error(`invalid image reference "${ref}": ${why}`);
  if (!ref || /\s/.test(ref)) throw bad('empty or contains whitespace');
  let rest = ref.replace(/^docker:\/\//, '');
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw bad(`malformed digest "${digest}"`);
    if (digest.startsWith('sha256:') && !/^sha256:[a-f0-9]{64}$/.test(digest)) throw bad('sha256 digest must be 64 lowercase hex characters');
  }
  let tag: string | undefined;
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw bad(`malformed tag "${tag}"`);
  }
  let registry = DOCKER_HUB;
  const first = rest.split('/')[0];
  // The first component is a registry when it looks like a host: has a dot or port, or is localhost.
  if (rest.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    registry = first;
    rest = rest.slice(first.length + 1);
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && !rest.includes('/')) rest = `library/${rest}`;
  if (!rest) throw bad('missing repository');
  for (const c of rest.split('/')) if (!REPO_COMPONENT.test(c)) throw bad(`invalid repository component "${c}"`);
  if (!tag && !digest) tag = 'latest';
  return { registry, repository: rest, tag, digest };
}

/** The canonical string of a reference (registry/repository[:tag][@digest]). */
export function formatReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag ? `:${r.tag}` : ''}${r.digest ? `@${r.digest}` : ''}`;
}

/** What to ask the registry for: the digest when pinned, else the tag. */
export function referenceTarget(r: ImageReference): string {
  return r.digest ?? r.tag ?? 'latest';
}

/** The host the API lives on (Docker Hub's API is not on docker.io itself). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? 'registry-1.docker.io' : registry;
}
