/**
 * One logger for every tool: pino, JSON lines on stderr (stdout stays for command output).
 * Fields that may carry credentials are redacted here, once, so no caller can leak them.
 *
 * pino (about 30 modules) is loaded by the first line logged, not by importing this module: a
 * command-line tool that logs nothing on its way (ctr-remote's rpull, --help) does not pay for it.
 * A component's logger takes the level in force when it first logs.
 */
import type * as Pino from 'pino';

type PinoModule = typeof Pino.default;

const REDACT = [
  'auth', '*.auth', 'password', '*.password', 'token', '*.token', 'authorization', '*.authorization',
  'headers.authorization', '*.headers.authorization', 'registry_auth', '*.registry_auth',
  'access_key_secret', '*.access_key_secret', 'accessKeySecret', '*.accessKeySecret',
];

let level = process.env.NYDUS_LOG_LEVEL ?? 'info';
/** Set by `setLogFile` before or after the first line. */
let logFile: string | undefined;
let root: Pino.Logger | undefined;
let dest: Pino.DestinationStream | undefined;

function pino(): PinoModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require('pino') as PinoModule;
}

function destination(): Pino.DestinationStream {
  return logFile === undefined ? pino().destination(2) : pino().destination({ dest: logFile, append: true, mkdir: true, sync: true, mode: 0o600 });
}

function rootLogger(): Pino.Logger {
  if (!root) {
    dest = destination();
    // Lines go through `sink` so that setLogFile can switch the destination of every logger at once.
    const sink: Pino.DestinationStream = { write: (line: string) => dest!.write(line) };
    root = pino()({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined }, sink);
  }
  return root;
}

export function setLogLevel(l: string): void {
  level = l;
  if (root) root.level = l;
}

/** Appends log lines to `file` (created with its directory, mode 0600) from now on. */
export function setLogFile(file: string): void {
  logFile = file;
  if (root) dest = destination();
}

type Method = 'debug' | 'info' | 'warn' | 'error';
export type Logger = Pick<Pino.Logger, Method>;

export function logger(component: string): Logger {
  let child: Pino.Logger | undefined;
  const forward = (m: Method): Pino.LogFn => ((...args: unknown[]) => {
    child ??= rootLogger().child({ component });
    (child[m] as (...a: unknown[]) => void)(...args);
  }) as Pino.LogFn;
  return { debug: forward('debug'), info: forward('info'), warn: forward('warn'), error: forward('error') };
}
