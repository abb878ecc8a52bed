/**
 * A nydusd run by a supervisor that keeps its FUSE connection (upstream's `--supervisor`; here the
 * snapshotter's daemon manager, docs/nydusd.md "Failover"). The supervisor opened /dev/fuse,
 * mounted it at the daemon's --mountpoint and spawned nydusd with the descriptor as fd 3; it keeps
 * its own copy, so the connection outlives this process.
 *
 * What a successor needs besides the descriptor is written to the state file (the `--supervisor`
 * path) whenever it changes: the INIT parameters the kernel and the first daemon agreed on (the
 * kernel sends INIT once per connection) and the index of each instance (its node ids,
 * src/daemon/fuse-root.ts). No config and no credential is in it: the supervisor mounts the
 * instances again through the API, with their configs, before the successor starts serving.
 *
 * Contract: `start()` serves a fresh connection (answers its INIT); after `takeover()`, `start()`
 * serves the connection a previous daemon served, without INIT, and applies the failover policy to
 * the requests it left unanswered. `indexFor` gives an instance the index it had, or a new one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { FailoverPolicy, FuseSession, Negotiated } from '../fuse/session';
import { logger } from '../util/log';
import { FuseRoot, MAX_INDEX } from './fuse-root';
import { daemonSession } from './fuse';

const log = logger('supervised');

export interface SupervisedOptions {
  /** The /dev/fuse descriptor the supervisor gave (3). */
  fd: number;
  /** The state file (`--supervisor`). */
  statePath: string;
  /** Started to take over from a previous daemon (`--upgrade`, or a failover). */
  upgrade: boolean;
  policy: FailoverPolicy;
}

interface StateFile {
  version: 1;
  /** INIT as negotiated; bigints as decimal strings. */
  negotiated?: { major: number; minor: number; offered: string; accepted: string; maxPages: number; maxReadahead: number };
  /** Instance name (the API mountpoint without its slash) -> index. */
  instances: Record<string, number>;
  nextIndex: number;
}

export class SupervisedConnection {
  readonly root = new FuseRoot();
  private readonly session: FuseSession;
  private state: StateFile = { version: 1, instances: {}, nextIndex: 1 };
  private takenOver?: Negotiated;
  private serving = false;

  constructor(
    readonly opts: SupervisedOptions,
    readonly mountpoint: string,
    onActivity: () => void,
  ) {
    this.session = daemonSession(this.root, mountpoint, onActivity);
  }

  /** Reads what the previous daemon left (upstream: `PUT /api/v1/daemon/fuse/takeover`). */
  takeover(): void {
    let s: StateFile;
    try {
      s = JSON.parse(fs.readFileSync(this.opts.statePath, 'utf8')) as StateFile;
    } catch (e) {
      throw new Error(`takeover: state file ${this.opts.statePath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    if (s.version !== 1 || !s.negotiated || typeof s.instances !== 'object') throw new Error(`takeover: state file ${this.opts.statePath}: not a state this nydusd wrote (no INIT recorded)`);
    const n = s.negotiated;
    this.takenOver = { major: n.major, minor: n.minor, offered: BigInt(n.offered), accepted: BigInt(n.accepted), maxPages: n.maxPages, maxReadahead: n.maxReadahead };
    this.state = s;
    log.info({ instances: Object.keys(s.instances).length }, 'took over the FUSE connection state of the previous nydusd');
  }

  /** Starts reading the connection; resolves once INIT is answered (fresh) or at once (takeover). */
  async start(): Promise<void> {
    if (this.serving) return;
    this.serving = true;
    const n = this.takenOver ? await this.session.adopt(this.opts.fd, { negotiated: this.takenOver, policy: this.opts.policy }) : await this.session.adopt(this.opts.fd);
    this.state.negotiated = { major: n.major, minor: n.minor, offered: n.offered.toString(), accepted: n.accepted.toString(), maxPages: n.maxPages, maxReadahead: n.maxReadahead };
    this.save();
  }

  get fuseSession(): FuseSession {
    return this.session;
  }

  /** The index of instance `name`: the one it had on this connection, else the next unused one. */
  indexFor(name: string): number {
    const had = this.state.instances[name];
    if (had !== undefined) return had;
    if (this.state.nextIndex > MAX_INDEX) throw new Error(`${name}: this daemon has mounted ${MAX_INDEX} instances on its FUSE connection (node id space used up); restart it`);
    return this.state.nextIndex;
  }

  attached(name: string, index: number): void {
    this.state.instances[name] = index;
    this.state.nextIndex = Math.max(this.state.nextIndex, index + 1);
    this.save();
  }

  detached(name: string): void {
    delete this.state.instances[name];
    this.save();
  }

  /** Writes the state file (upstream: `PUT /api/v1/daemon/fuse/sendfd` sends it to the supervisor). */
  save(): void {
    const tmp = `${this.opts.statePath}.tmp`;
    fs.mkdirSync(path.dirname(this.opts.statePath), { recursive: true, mode: 0o700 });
    fs.writeFileSync(tmp, JSON.stringify(this.state), { mode: 0o600 });
    fs.renameSync(tmp, this.opts.statePath);
  }

  /** Detaches the daemon's FUSE mount (a stop that is not a handover). */
  unmount(): Promise<void> {
    return this.session.unmount();
  }
}
