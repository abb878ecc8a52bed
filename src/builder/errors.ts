/**
 * The builder's one error type. Every problem with the input (a tar entry, a directory entry, a
 * bootstrap, a blob) surfaces as a BuildError whose message is one line naming what and where, so
 * the CLI can print it as is.
 */
export class BuildError extends Error {
  constructor(where: string, message: string) {
    super(`${where}: ${oneLine(message)}`);
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
