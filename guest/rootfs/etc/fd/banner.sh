#!/bin/sh
# The login banner (/etc/issue): what this guest is, its addresses, and what to try.
echo
echo "flightdeck's tiny guest (hostname $(hostname)): busybox on Debian's cloud kernel"
for dev in /sys/class/net/*; do
  ifname=${dev##*/}
  [ "$ifname" = lo ] && continue
  addr=$(ip -4 -o addr show dev "$ifname" 2>/dev/null | awk '{ print $4; exit }')
  echo "  $ifname: ${addr:-no address yet} ($(cat "$dev/address"))"
done
echo
echo "  Log in as root (no password). Try: ip addr, ping -c 3 <gateway>, free -m, poweroff."
echo "  On the host: flightdeck vm show NAME, vm logs NAME, vm shutdown NAME; Ctrl-] leaves this console."
echo
