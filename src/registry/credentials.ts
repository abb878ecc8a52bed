/**
 * Where registry credentials come from, in this order: explicit options, the environment, then the
 * docker config file (docker-config.ts).
 */
export { dockerConfigCredentials } from './docker-config';

export type Credentials =
  | { username: string; password: string }
  | { auth: string /* base64 user:pass */ }
  | { identityToken: string };

/** Username and password, or an identity (refresh) token, resolved from any Credentials form. */
export interface ResolvedCredentials {
  username?: string;
  password?: string;
  identityToken?: string;
}

export function resolveCredentials(c: Credentials | undefined): ResolvedCredentials | undefined {
  if (!c) return undefined;
  if ('identityToken' in c) return { identityToken: c.identityToken };
  if ('auth' in c) {
    const dec = Buffer.from(c.auth, 'base64').toString('utf8');
    const i = dec.indexOf(':');
    if (i < 0) throw new Error('credentials: "auth" is not base64 of user:password');
    return { username: dec.slice(0, i), password: dec.slice(i + 1) };
  }
  return { username: c.username, password: c.password };
}

/** `user:password` (as on the nydusify command line) to credentials; one-line error if malformed. */
export function parseUserPass(s: string, what: string): Credentials {
  const i = s.indexOf(':');
  if (i <= 0) throw new Error(`${what}: expected USER:PASSWORD`);
  return { username: s.slice(0, i), password: s.slice(i + 1) };
}

/**
 * Credentials from the environment: `${prefix}_USER` as `user:password`, or `${prefix}_USERNAME`
 * with `${prefix}_PASSWORD`. The prefix lets a tool keep source and target apart.
 */
export function envCredentials(prefix: string, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  const combined = env[`${prefix}_USER`];
  if (combined) return parseUserPass(combined, `${prefix}_USER`);
  const u = env[`${prefix}_USERNAME`];
  if (u !== undefined) return { username: u, password: env[`${prefix}_PASSWORD`] ?? '' };
  return undefined;
}
