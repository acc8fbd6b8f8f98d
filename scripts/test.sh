#!/usr/bin/env bash
# The whole test suite: build, type-check, lint (with the layer rule), format, then every test
# under node's test runner. .ci/run calls this after installing what a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/node.sh
fd_node_path
fd_node_ok || { echo "test: Node.js $FD_NODE_MAJOR or later is needed: run bash scripts/setup.sh --deps-only" >&2; exit 1; }
npm run --silent build
npx eslint --no-error-on-unmatched-pattern src test bench web
node scripts/check-layers.mjs
npx prettier --check . >/dev/null || { npx prettier --list-different .; echo "format: run npm run format"; exit 1; }
mapfile -t files < <(find dist/src dist/test -name '*.test.js' 2>/dev/null | sort)
exec node --test --test-reporter=spec --test-concurrency="${TEST_CONCURRENCY:-2}" "${files[@]}"
