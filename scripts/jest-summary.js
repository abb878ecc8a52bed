#!/usr/bin/env node
// Reads Jest's --json output (argv[2]) and prints, for scripts/test.sh, every skipped suite or test
// with the capability it needed, then one line "N passed, N failed, N skipped". A suite that could
// not run at all (a syntax error, a failing beforeAll outside tests) counts as failed.
'use strict';
const fs = require('fs');
const path = require('path');

const r = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const failed = r.numFailedTests + (r.numRuntimeErrorTestSuites || 0);
// One line per skipped group: the outermost title that carries the reason, else the test itself.
const groups = new Map();
for (const file of r.testResults) {
  for (const a of file.assertionResults) {
    if (a.status !== 'pending' && a.status !== 'skipped' && a.status !== 'todo') continue;
    const titles = [...a.ancestorTitles, a.title];
    const i = titles.findIndex((t) => /\[skipped: needs [^\]]+\]/.test(t));
    const key = `${path.relative(process.cwd(), file.name)} › ${(i >= 0 ? titles.slice(0, i + 1) : titles).join(' › ')}`;
    groups.set(key, (groups.get(key) || 0) + 1);
  }
}
if (groups.size) {
  console.log('skipped:');
  for (const [k, n] of groups) console.log(`  ${k}${/\[skipped:/.test(k) ? '' : ' [skipped in the test file]'} (${n} test${n > 1 ? 's' : ''})`);
}
console.log(`${r.numPassedTests} passed, ${failed} failed, ${r.numPendingTests + (r.numTodoTests || 0)} skipped`);
