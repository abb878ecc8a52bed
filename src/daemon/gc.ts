/**
 * A full garbage collection on demand. Loading an image decoded whole leaves megabytes of garbage
 * (the bootstrap buffer, the decoder's per-chunk objects that the rafs instance replaced with a
 * compact table; an image opened on demand leaves little); collecting it right after a mount has
 * answered, a rare event, keeps a shared daemon's RSS near its live data instead of waiting for
 * V8's idle-time memory reducer.
 */
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

v8.setFlagsFromString('--expose-gc');
/** A fresh context created after the flag has `gc` as a global. */
const gc = vm.runInNewContext('typeof gc === "function" ? gc : undefined') as (() => void) | undefined;

export function collectGarbage(): void {
  gc?.();
}
