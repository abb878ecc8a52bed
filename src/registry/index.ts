/** The OCI registry client: import from here. */
export { RegistryClient, RegistryClientOptions, Manifest, CallSpec } from './client';
export { parseReference, formatReference, referenceTarget, ImageReference, DOCKER_HUB } from './reference';
export { RegistryError } from './errors';
export { Credentials, dockerConfigCredentials, envCredentials, parseUserPass } from './credentials';
export { parseChallenge, repositoryScope } from './auth';
export { PushSource, PushOptions } from './upload';
export * from './media';
export { DEFAULT_PLATFORM, parsePlatform, formatPlatform, choosePlatform } from './platform';
