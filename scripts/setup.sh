#!/usr/bin/env bash
# Sets up flightdeck on a fresh Debian 12 machine (as root) and, unless --deps-only, starts the
# daemon and boots a demo VM. Everything comes from Debian's packages and the npm registry.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DEPS_ONLY=0
for a in "$@"; do
  case "$a" in
    --deps-only) DEPS_ONLY=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done

PKGS=(qemu-system-x86 qemu-utils qemu-system-common qemu-block-extra ovmf etcd-server etcd-client
  libvhdi-utils libxml2-utils dnsmasq-base nftables e2fsprogs iproute2 cpio xorriso genisoimage
  fuse3 zstd chromium util-linux kmod procps gcc libc6-dev xz-utils isolinux syslinux-common openssl
  libnbd-bin)
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

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
echo "setup: building"
npm run --silent build

ln -sf "$ROOT/bin/flightdeck" /usr/local/bin/flightdeck

[ "$DEPS_ONLY" = 1 ] && exit 0

if [ -f scripts/demo.sh ]; then exec bash scripts/demo.sh; fi
