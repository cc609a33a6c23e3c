#!/usr/bin/env bash
# Fail if nbdev-clean or nbdev-export would change a tracked file, or README.md is stale.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
fail=0
"$BIN/nbdev-clean"
if [ -n "$(git status --porcelain -- nbs)" ]; then
  echo "GATE FAILED: nbdev-clean changed notebooks (run nbdev-clean and commit):"; git status --porcelain -- nbs; fail=1
fi
"$BIN/nbdev-export"
if [ -n "$(git status --porcelain -- segthor_nb nbs/llms.txt)" ]; then
  echo "GATE FAILED: nbdev-export changed the package (the notebooks are the source of truth):"; git status --porcelain -- segthor_nb nbs/llms.txt; git diff --stat -- segthor_nb nbs/llms.txt; fail=1
fi
"$BIN/python" tools/readme.py --check || fail=1
if ! "$BIN/ruff" check --quiet --select F401,F811,F841 segthor_nb/ tools/ runs/ bench/ tests/; then
  echo "GATE FAILED: unused or redefined imports/variables (ruff F401/F811/F841)"; fail=1
fi
[ $fail = 0 ] && echo "gates passed: notebooks clean, package and README in sync, no unused imports"
exit $fail
