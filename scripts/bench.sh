#!/usr/bin/env bash
# Runs every benchmark in bench/ (compiled by tsconfig.bench.json to dist-bench/bench/) and assembles docs/benchmarks.md from
# the markdown sections they write to bench-out/. Each benchmark measures our tool and its baseline in
# the same run and reports ratios. Usage: npm run bench [-- NAME...]; `--assemble` only rebuilds
# docs/benchmarks.md from the sections already in bench-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench-out
if [ "${1:-}" != "--assemble" ]; then
  bash scripts/install-deps.sh
  npm run build >/dev/null
  npm run build:bench >/dev/null
  names=("$@")
  if [ ${#names[@]} -eq 0 ]; then
    for f in dist-bench/bench/*.js; do names+=("$(basename "$f" .js)"); done
  fi
  for n in "${names[@]}"; do
    echo "== bench $n" >&2
    node "dist-bench/bench/$n.js" || echo "bench $n failed (exit $?)" >&2
  done
fi
{
  echo "# Benchmarks"
  echo
  echo "Made by \`npm run bench\` on $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r), $(date -u +%Y-%m-%d)."
  echo "Every figure is a ratio against a baseline measured in the same run; absolute times are for context."
  echo
  for f in bench-out/*.md; do [ -f "$f" ] && { cat "$f"; echo; }; done
} > docs/benchmarks.md
echo "wrote docs/benchmarks.md" >&2
