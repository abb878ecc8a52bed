/**
 * The builder's one error type. Every problem with the input (a tar entry, a directory entry, a
 * bootstrap, a blob) surfaces as a BuildError whose message is one line naming what and where, so
 * the CLI can print it as is.
 */
export class BuildError extends Error {
  constructor(where: string, message: string) {
    super(`${escapeControl(where)}: ${oneLine(escapeControl(message))}`);
    this.name = 'BuildError';
  }
}

/** Collapses a message onto one line (library errors sometimes carry newlines). */
export function oneLine(message: string): string {
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** The message of anything thrown, on one line. */
export function errorMessage(err: unknown): string {
  return oneLine(err instanceof Error ? err.message : String(err));
}

/** A name as it may appear in a one-line message: control bytes escaped, very long names cut. */
export function printable(name: string): string {
  const safe = escapeControl(name);
  return safe.length > 300 ? `${safe.slice(0, 300)}...` : safe;
}

function escapeControl(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
