/**
 * One logger for every tool: pino, JSON lines on stderr (stdout stays for command output).
 * Fields that may carry credentials are redacted here, once, so no caller can leak them.
 */
import pino from 'pino';

const REDACT = [
  'auth', '*.auth', 'password', '*.password', 'token', '*.token', 'authorization', '*.authorization',
  'headers.authorization', '*.headers.authorization', 'registry_auth', '*.registry_auth',
];

let level = process.env.NYDUS_LOG_LEVEL ?? 'info';

export function setLogLevel(l: string): void {
  level = l;
  root.level = l;
}

const root = pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined }, pino.destination(2));

export type Logger = pino.Logger;

export function logger(component: string): Logger {
  return root.child({ component });
}
