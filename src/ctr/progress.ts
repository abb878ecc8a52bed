/**
 * ctr-remote's output, in the shape of `ctr images pull` without a terminal: one line per
 * content item as it completes (`layer-sha256:<hex>: done`), the unpack line, then the elapsed
 * time, bytes downloaded and the image digest. Lines go to the given writer (stdout).
 */
export class Progress {
  private downloaded = 0;

  constructor(private readonly write: (s: string) => void) {}

  line(s: string): void {
    this.write(`${s}\n`);
  }

  item(kind: 'index' | 'manifest' | 'config' | 'layer', digest: string, status: string): void {
    this.line(`${kind}-${digest}: ${status}`);
  }

  bytes(n: number): void {
    this.downloaded += n;
  }

  done(digest: string, ms: number): void {
    const s = ms / 1000;
    const mib = this.downloaded / 1048576;
    this.line(`elapsed: ${s.toFixed(1)} s\ttotal: ${mib.toFixed(1)} MiB (${(mib / Math.max(s, 0.001)).toFixed(1)} MiB/s)`);
    this.line(`done: ${digest}`);
  }
}
