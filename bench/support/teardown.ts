/**
 * Undo for long runs (the demo, the benchmarks): every process, mount, namespace or directory a run
 * starts is registered here the moment it exists, and undone in reverse order when the run ends,
 * fails, or is interrupted (SIGINT, SIGTERM). A step that fails to undo is reported and the rest
 * still run; each step runs at most once.
 *
 *   const td = new Teardown(say);
 *   td.onSignals();                                   // Ctrl-C undoes everything, then exits
 *   const ctd = await startContainerd(...); td.add('containerd', () => ctd.stop());
 *   const run = td.scope('nydus run');                // a nested group, undone on its own
 *   try { ... } finally { await run.run(); }
 *   await td.run();
 */
type Step = { name: string; undo: () => unknown };

export class Teardown {
  private steps: Step[] = [];
  private running?: Promise<void>;

  constructor(private readonly report: (msg: string) => void) {}

  /** Registers an undo step; the returned function drops it (when the thing was undone by hand). */
  add(name: string, undo: () => unknown): () => void {
    const step = { name, undo };
    this.steps.push(step);
    return () => {
      this.steps = this.steps.filter((s) => s !== step);
    };
  }

  /** A group of steps undone together by its own run(), or with this one if still pending. */
  scope(name: string): Teardown {
    const child = new Teardown(this.report);
    const drop = this.add(name, () => child.run());
    const run = child.run.bind(child);
    child.run = async () => {
      drop();
      await run();
    };
    return child;
  }

  /** Undoes every registered step, newest first. */
  run(): Promise<void> {
    this.running ??= (async () => {
      while (this.steps.length) {
        const s = this.steps.pop()!;
        try {
          await s.undo();
        } catch (e) {
          this.report(`cleanup: ${s.name}: ${(e as Error).message}`);
        }
      }
      this.running = undefined;
    })();
    return this.running;
  }

  /** On SIGINT or SIGTERM: undo everything, then exit 130 or 143. */
  onSignals(): void {
    for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(sig, () => {
        this.report(`${sig}: stopping what this run started`);
        void this.run().finally(() => process.exit(code));
      });
    }
  }
}
