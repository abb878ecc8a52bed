#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, builds, runs Jest
# and ends with one plain line "N passed, N failed, N skipped". Above it, every skipped suite or
# test is listed with the capability it needed (test/helpers/capabilities.ts), so a run that could
# not test FUSE, the kernel or containerd says so. Extra arguments go to Jest.
set -uo pipefail
cd "$(dirname "$0")/.."
summary_fail() { echo "$1"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }
bash scripts/install-deps.sh || summary_fail "install-deps failed"
npm run build || summary_fail "build failed"
# The benchmark programs (bench/, to dist-bench/): type-checked here, and one test runs their teardown.
npm run build:bench || summary_fail "bench build failed"
out="$(mktemp /tmp/nydus-ts-jest.XXXXXX.json)"
trap 'rm -f "$out"' EXIT
npx jest --runInBand --json --outputFile="$out" "$@"
rc=$?
node scripts/jest-summary.js "$out" || { echo "0 passed, 1 failed, 0 skipped"; rc=1; }
exit $rc
