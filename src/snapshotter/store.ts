/**
 * Snapshot metadata in an embedded transactional store (SQLite through better-sqlite3, WAL,
 * synchronous=FULL): every change is one transaction, so a kill -9 leaves either the state before
 * or the state after it, never a half-written record.
 *
 * The store knows snapshots (key, parent key, kind, labels, timestamps, stored usage) and gives
 * each a numeric id that names its directory `snapshots/<id>`; the id survives Commit, which only
 * renames the key. It also keeps the daemon manager's records (daemons and rafs instances) so they
 * can be found again after a restart. It enforces the same invariants as containerd's
 * `snapshots/storage` (unique keys, committed parents, no removal of a parent).
 *
 * Labels may carry registry credentials a client set (`containerd.io/snapshot/pullsecret`), so the
 * database and its WAL and shared-memory files are mode 0600 (SQLite gives the side files the
 * database file's mode).
 */
import * as fs from 'node:fs';
import Database from 'better-sqlite3';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors';

/** The wall clock in whole microseconds: Date.now()'s millisecond, refined by the monotonic clock's
 * fraction (clamped into that millisecond, so a stepped wall clock is still followed). */
function nowUs(): number {
  const ms = Date.now();
  const fine = Math.floor((performance.timeOrigin + performance.now()) * 1000);
  return Math.min(Math.max(fine, ms * 1000), ms * 1000 + 999);
}

export type Kind = 'VIEW' | 'ACTIVE' | 'COMMITTED';

export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: Kind;
  labels: Record<string, string>;
  /** Microseconds since the epoch: containerd's clients compare these with their own nanosecond
   * clocks (its test suite checks that an Update happened after the moment it called it). */
  createdUs: number;
  updatedUs: number;
}

export interface SnapshotRecord extends SnapshotInfo {
  id: number;
  /** Usage stored at Commit (bytes, inodes); zero for active snapshots. */
  size: number;
  inodes: number;
}

interface Row {
  id: number;
  key: string;
  parent: string;
  kind: Kind;
  labels: string;
  created_us: number;
  updated_us: number;
  size: number;
  inodes: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS snapshots (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  key TEXT NOT NULL UNIQUE,
  parent TEXT NOT NULL DEFAULT '',
  kind TEXT NOT NULL,
  labels TEXT NOT NULL DEFAULT '{}',
  created_us INTEGER NOT NULL,
  updated_us INTEGER NOT NULL,
  size INTEGER NOT NULL DEFAULT 0,
  inodes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE TABLE IF NOT EXISTS records (
  kind TEXT NOT NULL,
  id TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (kind, id)
);
`;

function toRecord(r: Row): SnapshotRecord {
  return {
    id: r.id,
    name: r.key,
    parent: r.parent,
    kind: r.kind,
    labels: JSON.parse(r.labels) as Record<string, string>,
    createdUs: r.created_us,
    updatedUs: r.updated_us,
    size: r.size,
    inodes: r.inodes,
  };
}

export class MetaStore {
  private readonly db: Database.Database;

  constructor(file: string) {
    fs.closeSync(fs.openSync(file, 'a', 0o600));
    for (const f of [file, `${file}-wal`, `${file}-shm`]) {
      try {
        fs.chmodSync(f, 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
    }
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.migrateMillis();
    this.db.exec(SCHEMA);
  }

  /** Stores before microsecond timestamps kept milliseconds in created_ms/updated_ms. */
  private migrateMillis(): void {
    const cols = this.db.prepare("SELECT name FROM pragma_table_info('snapshots')").all() as { name: string }[];
    if (!cols.some((c) => c.name === 'created_ms')) return;
    this.tx(() => {
      this.db.exec('ALTER TABLE snapshots RENAME COLUMN created_ms TO created_us');
      this.db.exec('ALTER TABLE snapshots RENAME COLUMN updated_ms TO updated_us');
      this.db.exec('UPDATE snapshots SET created_us = created_us * 1000, updated_us = updated_us * 1000');
    });
  }

  close(): void {
    this.db.close();
  }

  /** Runs `fn` in one transaction; an exception rolls everything back. */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  get(key: string): SnapshotRecord | undefined {
    const r = this.db.prepare('SELECT * FROM snapshots WHERE key = ?').get(key) as Row | undefined;
    return r ? toRecord(r) : undefined;
  }

  mustGet(key: string): SnapshotRecord {
    const r = this.get(key);
    if (!r) throw notFound(`snapshot ${key} does not exist: not found`);
    return r;
  }

  /** The snapshot and its ancestors, nearest first. */
  chain(key: string): SnapshotRecord[] {
    const out: SnapshotRecord[] = [];
    let cur: string = key;
    // Bounded: a chain can't be longer than the table; guards against a corrupted cycle.
    const limit = (this.db.prepare('SELECT COUNT(*) AS n FROM snapshots').get() as { n: number }).n + 1;
    while (cur && out.length < limit) {
      const r = this.mustGet(cur);
      out.push(r);
      cur = r.parent;
    }
    return out;
  }

  all(): SnapshotRecord[] {
    return (this.db.prepare('SELECT * FROM snapshots ORDER BY id').all() as Row[]).map(toRecord);
  }

  /** The labels of the snapshot with numeric id `id`, or undefined. */
  labelsOfId(id: number): Record<string, string> | undefined {
    const r = this.db.prepare('SELECT labels FROM snapshots WHERE id = ?').get(id) as { labels: string } | undefined;
    return r ? (JSON.parse(r.labels) as Record<string, string>) : undefined;
  }

  hasId(id: number): boolean {
    return this.db.prepare('SELECT 1 FROM snapshots WHERE id = ?').get(id) !== undefined;
  }

  /** Creates an ACTIVE or VIEW snapshot; checks key uniqueness and that the parent is committed. */
  create(kind: 'ACTIVE' | 'VIEW', key: string, parent: string, labels: Record<string, string>): SnapshotRecord {
    if (!key) throw invalidArgument('snapshot key must not be empty: invalid argument');
    if (this.get(key)) throw alreadyExists(`snapshot ${key}: already exists`);
    if (parent) {
      const p = this.get(parent);
      if (!p) throw notFound(`missing parent ${JSON.stringify(parent)}: not found`);
      if (p.kind !== 'COMMITTED') throw invalidArgument(`parent ${JSON.stringify(parent)} is not committed snapshot: invalid argument`);
    }
    const now = nowUs();
    this.db
      .prepare('INSERT INTO snapshots (key, parent, kind, labels, created_us, updated_us) VALUES (?, ?, ?, ?, ?, ?)')
      .run(key, parent, kind, JSON.stringify(labels), now, now);
    return this.mustGet(key);
  }

  /** Turns active `key` into committed `name`, keeping its id; labels are replaced. As in
   * containerd's own metadata store, a commit makes a new snapshot: created = updated = now. */
  commit(key: string, name: string, labels: Record<string, string>, size: number, inodes: number): SnapshotRecord {
    const r = this.mustGet(key);
    if (r.kind !== 'ACTIVE') throw failedPrecondition(`snapshot ${key} is not active: failed precondition`);
    if (this.get(name)) throw alreadyExists(`snapshot ${name}: already exists`);
    const now = nowUs();
    this.db
      .prepare("UPDATE snapshots SET key = ?, kind = 'COMMITTED', labels = ?, created_us = ?, updated_us = ?, size = ?, inodes = ? WHERE id = ?")
      .run(name, JSON.stringify(labels), now, now, size, inodes, r.id);
    return this.mustGet(name);
  }

  /** Deletes a snapshot that no other snapshot uses as parent. */
  remove(key: string): SnapshotRecord {
    const r = this.mustGet(key);
    const child = this.db.prepare('SELECT key FROM snapshots WHERE parent = ? LIMIT 1').get(key) as { key: string } | undefined;
    if (child) throw failedPrecondition(`cannot remove snapshot ${key} with child ${child.key}: failed precondition`);
    this.db.prepare('DELETE FROM snapshots WHERE id = ?').run(r.id);
    return r;
  }

  setLabels(key: string, labels: Record<string, string>): SnapshotRecord {
    const r = this.mustGet(key);
    this.db.prepare('UPDATE snapshots SET labels = ?, updated_us = ? WHERE id = ?').run(JSON.stringify(labels), nowUs(), r.id);
    return this.mustGet(key);
  }

  // --- daemon manager records (daemons, rafs instances): JSON values by kind and id ---

  putRecord(kind: string, id: string, value: unknown): void {
    this.db.prepare('INSERT OR REPLACE INTO records (kind, id, value) VALUES (?, ?, ?)').run(kind, id, JSON.stringify(value));
  }

  deleteRecord(kind: string, id: string): void {
    this.db.prepare('DELETE FROM records WHERE kind = ? AND id = ?').run(kind, id);
  }

  records<T>(kind: string): T[] {
    return (this.db.prepare('SELECT value FROM records WHERE kind = ? ORDER BY id').all(kind) as { value: string }[]).map(
      (r) => JSON.parse(r.value) as T,
    );
  }
}
