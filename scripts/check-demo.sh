#!/usr/bin/env bash
# After the test suite in CI: the demo daemon setup left running still answers and its demo VM
# still runs (the suite must live beside a newcomer's daemon). Quiet when all is well.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/node.sh
fd_node_path
DATA_DIR=${1:-/var/lib/flightdeck}
state=$(./bin/flightdeck vm show demo --json --data-dir "$DATA_DIR" 2>&1 |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{console.log(JSON.parse(s).state)}catch{console.log(s)}})')
if [ "$state" != running ]; then
  echo "check-demo: the demo VM of $DATA_DIR is not running after the tests: $state" >&2
  exit 1
fi
