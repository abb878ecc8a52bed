/**
 * containerd's filter language (filters/filter.go) as List uses it:
 *
 *   filter  := clause ("," clause)*          all clauses must match (AND)
 *   clause  := fieldpath [op value]          no op: the field is present
 *   op      := "==" | "!=" | "~="            "~=" is a regular expression match
 *   fieldpath := segment ("." segment)*      a segment is a bare word or a double-quoted string
 *
 * Several filter strings are ORed. Snapshot fields: `kind` (active|view|committed), `name`,
 * `parent` (always present, "" for roots) and `labels.<key>`.
 */
import { invalidArgument } from './errors';
import type { SnapshotInfo } from './store';

type Op = '==' | '!=' | '~=' | 'present';

interface Clause {
  path: string[];
  op: Op;
  value: string;
  re?: RegExp;
}

/** Reads a double-quoted string starting at s[i] === '"'; returns the text and the index after it. */
function readQuoted(s: string, i: number, where: string): [string, number] {
  let out = '';
  for (let j = i + 1; j < s.length; j++) {
    const c = s[j];
    if (c === '\\' && j + 1 < s.length) {
      out += s[++j];
    } else if (c === '"') {
      return [out, j + 1];
    } else {
      out += c;
    }
  }
  throw invalidArgument(`filter ${JSON.stringify(where)}: unterminated quoted string: invalid argument`);
}

function parseFilter(f: string): Clause[] {
  const clauses: Clause[] = [];
  let i = 0;
  const bad = (why: string): never => {
    throw invalidArgument(`filter ${JSON.stringify(f)}: ${why} at offset ${i}: invalid argument`);
  };
  while (i < f.length) {
    const path: string[] = [];
    for (;;) {
      if (f[i] === '"') {
        const [seg, next] = readQuoted(f, i, f);
        path.push(seg);
        i = next;
      } else {
        const m = /^[A-Za-z0-9_\-/]+/.exec(f.slice(i));
        if (!m) bad('expected a field name');
        path.push(m![0]);
        i += m![0].length;
      }
      if (f[i] !== '.') break;
      i++;
    }
    let op: Op = 'present';
    let value = '';
    const two = f.slice(i, i + 2);
    if (two === '==' || two === '!=' || two === '~=') {
      op = two;
      i += 2;
      if (f[i] === '"') {
        [value, i] = readQuoted(f, i, f);
      } else {
        const end = f.indexOf(',', i);
        value = f.slice(i, end < 0 ? f.length : end);
        i = end < 0 ? f.length : end;
      }
    }
    const clause: Clause = { path, op, value };
    if (op === '~=') {
      try {
        clause.re = new RegExp(value);
      } catch {
        bad(`bad regular expression ${JSON.stringify(value)}`);
      }
    }
    clauses.push(clause);
    if (i < f.length) {
      if (f[i] !== ',') bad('expected ","');
      i++;
    }
  }
  return clauses;
}

function field(info: SnapshotInfo, path: string[]): string | undefined {
  switch (path[0]) {
    case 'kind':
      return info.kind.toLowerCase();
    case 'name':
      return info.name;
    case 'parent':
      return info.parent;
    case 'labels': {
      const k = path.slice(1).join('.');
      return Object.prototype.hasOwnProperty.call(info.labels, k) ? info.labels[k] : undefined;
    }
    default:
      return undefined;
  }
}

function matchClause(info: SnapshotInfo, c: Clause): boolean {
  const v = field(info, c.path);
  switch (c.op) {
    case 'present':
      return v !== undefined;
    case '==':
      return v === c.value;
    case '!=':
      return v !== c.value;
    case '~=':
      return v !== undefined && c.re!.test(v);
  }
}

/** Compiles filter strings into a predicate; no filters match everything. */
export function compileFilters(filters: string[]): (info: SnapshotInfo) => boolean {
  const parsed = filters.filter((f) => f.length > 0).map(parseFilter);
  if (parsed.length === 0) return () => true;
  return (info) => parsed.some((clauses) => clauses.every((c) => matchClause(info, c)));
}
