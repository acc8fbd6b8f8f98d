#!/usr/bin/env bash
# Builds (or finds in the cache) the tiny test/demo guest image; see guest/README.md.
# Options: --force (rebuild), --cache-dir DIR, --json. Needs `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/src/host/images/build-cli.js ] || npm run --silent build
exec node dist/src/host/images/build-cli.js "$@"
