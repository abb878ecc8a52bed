#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, builds, runs Jest
# and prints one plain line "N passed, N failed" from Jest's --json output.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }
npm run build || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }
out="$(mktemp /tmp/nydus-ts-jest.XXXXXX.json)"
npx jest --runInBand --json --outputFile="$out" "$@"
rc=$?
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const failed = r.numFailedTests + (r.numRuntimeErrorTestSuites || 0);
console.log(`${r.numPassedTests} passed, ${failed} failed`);
' "$out" || { echo "0 passed, 1 failed"; rc=1; }
rm -f "$out"
exit $rc
