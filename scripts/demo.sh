#!/usr/bin/env bash
# Second half of setup: builds the tiny image, starts the daemon (systemd when this machine runs
# it, a background process otherwise), boots a demo VM and says how to reach everything.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${FLIGHTDECK_DATA_DIR:-/var/lib/flightdeck}
export FLIGHTDECK_DATA_DIR=$DATA_DIR
LISTEN=${FLIGHTDECK_LISTEN:-}
. scripts/node.sh
fd_node_path
FD=./bin/flightdeck

health() { [ -f "$DATA_DIR/daemon.json" ] && $FD vm list --json >/dev/null 2>&1; }

serve_args=(serve --data-dir "$DATA_DIR")
[ -n "$LISTEN" ] && serve_args+=(--listen "$LISTEN")
LOG=/var/log/flightdeck.log
# The systemd unit is the default daemon's; a daemon of another data dir runs in the background.
if [ "$DATA_DIR" != /var/lib/flightdeck ] || [ -n "$LISTEN" ]; then LOG=$DATA_DIR/daemon.log; fi

if ! health; then
  if [ -d /run/systemd/system ] && [ "$LOG" = /var/log/flightdeck.log ]; then
    install -m 0644 contrib/flightdeck.service /etc/systemd/system/flightdeck.service
    sed -i "s#@ROOT@#$PWD#g" /etc/systemd/system/flightdeck.service
    systemctl daemon-reload
    systemctl enable --now flightdeck
  else
    mkdir -p "$DATA_DIR" "$(dirname "$LOG")"
    echo "demo: starting the daemon in the background (log: $LOG)"
    nohup "$FD" "${serve_args[@]}" >>"$LOG" 2>&1 </dev/null &
  fi
  for _ in $(seq 1 300); do health && break; sleep 0.2; done
  health || { echo "demo: the daemon did not come up; see $LOG" >&2; exit 1; }
fi

echo "demo: building the tiny guest image (cached after the first time)"
$FD image build tiny
if ! $FD vm show demo --json >/dev/null 2>&1; then
  $FD vm create demo --image tiny --memory 256M
fi
state=$($FD vm show demo --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).state))')
[ "$state" = running ] || $FD vm start demo

URL=$(node -e "console.log(require('$DATA_DIR/daemon.json').url)")
cat <<MSG

flightdeck is running, with a demo VM:

  flightdeck vm list                 # the VMs and their state
  flightdeck vm console demo         # its serial console (Ctrl-] to leave)
  flightdeck vm stop demo            # power it off; "vm delete demo" removes it

  API:    $URL/api/v1   (docs: $URL/api/docs)
  token:  $(cat "$DATA_DIR/token")   (also in $DATA_DIR/token)
  e.g.:   curl -H "Authorization: Bearer \$(cat $DATA_DIR/token)" $URL/api/v1/vms
MSG
