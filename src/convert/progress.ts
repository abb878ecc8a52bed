/**
 * Conversion progress: the library reports events; a reporter renders them. On a terminal one
 * cli-progress bar per layer; otherwise a log line per phase change (never per byte).
 */
import * as cliProgress from 'cli-progress';
import { logger } from '../util/log';

export type LayerPhase = 'convert' | 'push' | 'exists' | 'done';

export interface ProgressEvent {
  /** 1-based source layer number; 0 for the bootstrap / manifest steps. */
  layer: number;
  layers: number;
  /** The source layer digest (or a step name). */
  what: string;
  phase: LayerPhase;
  /** Source bytes read so far and the layer's size (for `convert`). */
  bytes?: number;
  total?: number;
}

export type ProgressFn = (e: ProgressEvent) => void;

const log = logger('nydusify');

/** Log lines on phase changes. */
export function logProgress(): ProgressFn {
  const last = new Map<number, LayerPhase>();
  return (e) => {
    if (last.get(e.layer) === e.phase) return;
    last.set(e.layer, e.phase);
    log.info({ layer: e.layer, layers: e.layers, what: e.what, phase: e.phase, total: e.total }, e.layer ? `layer ${e.layer}/${e.layers}: ${e.phase}` : `${e.what}: ${e.phase}`);
  };
}

/** One bar per layer on a TTY; `stop()` when done. */
export function barProgress(stream: NodeJS.WriteStream = process.stderr): ProgressFn & { stop(): void } {
  const multi = new cliProgress.MultiBar({
    stream, clearOnComplete: false, hideCursor: true, format: ' {name} [{bar}] {percentage}% {phase}', barsize: 30,
  }, cliProgress.Presets.shades_classic);
  const bars = new Map<number, cliProgress.SingleBar>();
  const fn = ((e: ProgressEvent) => {
    if (!e.layer) return;
    let bar = bars.get(e.layer);
    const name = `layer ${e.layer}/${e.layers} ${e.what.slice(7, 19)}`;
    if (!bar) {
      bar = multi.create(e.total ?? 1, 0, { name, phase: e.phase });
      bars.set(e.layer, bar);
    }
    if (e.total !== undefined) bar.setTotal(e.total);
    bar.update(e.phase === 'convert' ? e.bytes ?? 0 : e.total ?? bar.getTotal(), { name, phase: e.phase });
  }) as ProgressFn & { stop(): void };
  fn.stop = () => multi.stop();
  return fn;
}
