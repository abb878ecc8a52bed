/**
 * One logger for every tool: pino, JSON lines on stderr (stdout stays for command output).
 * Fields that may carry credentials are redacted here, once, so no caller can leak them.
 */
import pino from 'pino';

const REDACT = [
  'auth', '*.auth', 'password', '*.password', 'token', '*.token', 'authorization', '*.authorization',
  'headers.authorization', '*.headers.authorization', 'registry_auth', '*.registry_auth',
  'access_key_secret', '*.access_key_secret', 'accessKeySecret', '*.accessKeySecret',
];

let level = process.env.NYDUS_LOG_LEVEL ?? 'info';

export function setLogLevel(l: string): void {
  level = l;
  root.level = l;
}

/** Where log lines go: stderr until `setLogFile` (nydusd's --log-file) points them at a file. */
let dest: pino.DestinationStream = pino.destination(2);
const sink: pino.DestinationStream = { write: (line: string) => dest.write(line) };

const root = pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined }, sink);

/** Appends log lines to `file` (created with its directory, mode 0600) from now on. */
export function setLogFile(file: string): void {
  dest = pino.destination({ dest: file, append: true, mkdir: true, sync: true, mode: 0o600 });
}

export type Logger = pino.Logger;

export function logger(component: string): Logger {
  return root.child({ component });
}
