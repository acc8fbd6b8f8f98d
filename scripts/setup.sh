#!/usr/bin/env bash
# Sets up flightdeck on a fresh Debian 12 machine (as root) and, unless --deps-only, starts the
# daemon and boots a demo VM. Everything comes from Debian's packages and the npm registry.
#   --deps-only        install and build only
#   --node-only        install only what Node.js needs, and Node.js itself when missing or old
#   --data-dir DIR     the demo daemon's data dir (default /var/lib/flightdeck)
#   --listen HOST:PORT the demo daemon's API address (default 127.0.0.1:8420)
#   --no-link          leave /usr/local/bin/flightdeck alone (a second checkout on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEPS_ONLY=0
NODE_ONLY=0
LINK=${FLIGHTDECK_LINK:-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --deps-only) DEPS_ONLY=1 ;;
    --node-only) NODE_ONLY=1 ;;
    --no-link) LINK=0 ;;
    --data-dir) export FLIGHTDECK_DATA_DIR=${2:?--data-dir needs a directory}; shift ;;
    --listen) export FLIGHTDECK_LISTEN=${2:?--listen needs HOST:PORT}; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

PKGS=(qemu-system-x86 qemu-utils qemu-system-common qemu-block-extra ovmf etcd-server etcd-client
  libvhdi-utils libxml2-utils dnsmasq-base nftables e2fsprogs iproute2 cpio xorriso genisoimage
  fuse3 zstd chromium vncsnapshot util-linux kmod procps gcc libc6-dev xz-utils isolinux syslinux-common openssl
  curl ca-certificates tar gzip clamav ntfs-3g xfsprogs lvm2 dosfstools fusefat mtools gdisk fdisk libnbd-bin)
[ "$NODE_ONLY" = 1 ] && PKGS=(curl ca-certificates openssl tar gzip)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian starts etcd as a system service on install; flightdeck runs its own, so the system one
# must not hold port 2379.
if systemctl is-active --quiet etcd 2>/dev/null; then systemctl disable --now etcd || true; fi
# clamav-freshclam's service would try to reach ClamAV's mirrors; flightdeck scans with the
# signature directory the user points it at and never updates it itself.
if systemctl is-active --quiet clamav-freshclam 2>/dev/null; then systemctl disable --now clamav-freshclam || true; fi

# Node.js: the machine's when it is a supported LTS, else ours under /opt/flightdeck/node.
. scripts/node.sh
fd_node_ensure
echo "setup: Node.js $(node --version) ($(command -v node))"
[ "$NODE_ONLY" = 1 ] && exit 0

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
echo "setup: building"
npm run --silent build

[ "$LINK" = 1 ] && ln -sf "$ROOT/bin/flightdeck" /usr/local/bin/flightdeck

[ "$DEPS_ONLY" = 1 ] && exit 0

if [ -f scripts/demo.sh ]; then exec bash scripts/demo.sh; fi
