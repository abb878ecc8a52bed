/**
 * Registry failures as one-line messages that name the registry, the repository, what was asked and
 * the HTTP status, so a user sees where it went wrong. Never built from headers or credentials.
 */

export class RegistryError extends Error {
  constructor(
    public readonly registry: string,
    public readonly repository: string | undefined,
    public readonly operation: string,
    /** HTTP status, or 0 for a network failure. */
    public readonly status: number,
    detail: string,
    /** Network error code (ECONNRESET, UND_ERR_...) when status is 0. */
    public readonly code?: string,
  ) {
    super(`registry ${registry}${repository ? `, repository ${repository}` : ''}: ${operation}: ${status ? `HTTP ${status}` : 'network error'}${detail ? `: ${detail}` : ''}`);
    this.name = 'RegistryError';
  }
}

/** Pulls the first message out of an OCI distribution error body ({"errors":[{code,message}]}). */
export function describeErrorBody(body: string): string {
  try {
    const j = JSON.parse(body) as { errors?: { code?: string; message?: string }[]; error?: string; details?: string };
    const e = j.errors?.[0];
    if (e) return [e.code, e.message].filter(Boolean).join(' ');
    if (j.error) return j.error;
  } catch { /* not JSON */ }
  return body.replace(/\s+/g, ' ').trim().slice(0, 160);
}
