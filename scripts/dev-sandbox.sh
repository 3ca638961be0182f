#!/usr/bin/env bash
# A sandbox of real network parts for trying ovs-port-agent on a machine that runs neither
# NetworkManager nor Open vSwitch: a network namespace, a private system bus, the real
# ovsdb-server and ovs-vswitchd (userspace datapath) and the real NetworkManager inside it
# (docs: ../shared/NM-SANDBOX.md, as the tests do). Touches nothing of the host's network.
#
# Usage: scripts/dev-sandbox.sh up DIR     start it; writes DIR/env (BUS, OVSDB, NETNS)
#        scripts/dev-sandbox.sh down DIR   stop everything it started and delete the namespace
set -euo pipefail

cmd=${1:?usage: dev-sandbox.sh up|down DIR}
dir=${2:?usage: dev-sandbox.sh up|down DIR}
dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
# One namespace per sandbox directory (two checkouts never share one).
netns=opa-dev-$(printf %s "$dir" | sha256sum | cut -c1-10)

# Signals a process only if it is one of this sandbox's (its command line names the
# sandbox's directory): a pid left from an earlier boot may belong to anything now.
signal_ours() {
  local signal=$1 pid=$2
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$dir/"; then
    kill "-$signal" "$pid" 2>/dev/null || true
  fi
}

# Every process writes its pid here; `down` stops them in reverse order.
stop_all() {
  if [ -f "$dir/pids" ]; then
    tac "$dir/pids" | while read -r pid; do signal_ours TERM "$pid"; done
    sleep 0.3
    tac "$dir/pids" | while read -r pid; do signal_ours KILL "$pid"; done
    rm -f "$dir/pids"
  fi
  for pidfile in "$dir"/ovs/ovs-vswitchd.pid "$dir"/ovs/ovsdb-server.pid; do
    if [ -f "$pidfile" ]; then signal_ours TERM "$(cat "$pidfile")"; fi
  done
  ip netns del "$netns" 2>/dev/null || true
}

case "$cmd" in
down)
  stop_all
  exit 0
  ;;
up) ;;
*)
  echo "usage: dev-sandbox.sh up|down DIR" >&2
  exit 2
  ;;
esac

stop_all
# A set-up that fails half way leaves nothing running.
trap 'echo "dev-sandbox: set-up failed; stopping what was started" >&2; stop_all' ERR
# A fresh sandbox each time: no database or NetworkManager state from an earlier one.
rm -rf "$dir/ovs" "$dir/nm"
mkdir -p "$dir"/{ovs,nm/run,nm/run-ovs,nm/var-lib,nm/etc,nm/conf.d,nm/system-conf.d,nm/connections}
: >"$dir/pids"

ip netns add "$netns"
ip -n "$netns" link set lo up

# A private system bus where everyone may do everything (a sandbox, not a host).
bus_socket=$dir/bus.sock
cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
CONF
rm -f "$bus_socket"
dbus-daemon --config-file="$dir/bus.conf" --nofork --nopidfile </dev/null >"$dir/bus.log" 2>&1 &
echo $! >>"$dir/pids"
for _ in $(seq 50); do [ -S "$bus_socket" ] && break; sleep 0.1; done
[ -S "$bus_socket" ] || { echo "the private bus did not start; see $dir/bus.log" >&2; false; }
bus=unix:path=$bus_socket

# Open vSwitch first: NetworkManager's ovsdb client does not reconnect by itself.
ovs=$dir/ovs
export OVS_RUNDIR=$ovs OVS_DBDIR=$ovs OVS_LOGDIR=$ovs OVS_SYSCONFDIR=$ovs OVS_PKGDATADIR=/usr/share/openvswitch
ovsdb-tool create "$ovs/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb-server "$ovs/conf.db" --remote="punix:$ovs/db.sock" --detach --no-chdir -vconsole:off \
  --pidfile="$ovs/ovsdb-server.pid" --unixctl="$ovs/ovsdb-server.ctl" --log-file="$ovs/ovsdb-server.log"
ovs-vsctl --db="unix:$ovs/db.sock" --no-wait init
ip netns exec "$netns" ovs-vswitchd "unix:$ovs/db.sock" --detach --no-chdir -vconsole:off \
  --pidfile="$ovs/ovs-vswitchd.pid" --unixctl="$ovs/ovs-vswitchd.ctl" --log-file="$ovs/ovs-vswitchd.log"
ovs-vsctl --db="unix:$ovs/db.sock" --timeout=20 set Open_vSwitch . external_ids:sandbox=ovs-port-agent >/dev/null

# NetworkManager in the namespace, with private state, a read-only /sys (so it does not wait
# for udev, which does not run here) and its own /run.
nm=$dir/nm
: >"$nm/resolv.conf"
cat >"$nm/NetworkManager.conf" <<CONF
[main]
plugins=keyfile
dns=none
rc-manager=unmanaged
hostname-mode=none
auth-polkit=false
no-auto-default=*

[keyfile]
path=$nm/connections

[connectivity]
enabled=false

[logging]
level=WARN
CONF
# The script is fixed text; the directory is its argument ($1).
nm_script='set -e
mount --make-rprivate /
mount --bind /sys/devices /sys/devices
mount -o remount,ro /sys
mount -t tmpfs tmpfs /run
mkdir -p /run/NetworkManager /run/openvswitch
mount --bind "$1/run" /run/NetworkManager
mount --bind "$1/run-ovs" /run/openvswitch
mount --bind "$1/var-lib" /var/lib/NetworkManager
mount --bind "$1/etc" /etc/NetworkManager
mount --bind "$1/resolv.conf" /etc/resolv.conf
exec NetworkManager --no-daemon --config="$1/NetworkManager.conf" --config-dir="$1/conf.d" \
  --system-config-dir="$1/system-conf.d" --intern-config="$1/intern.conf" --state-file="$1/state" --pid-file="$1/nm.pid"'
DBUS_SYSTEM_BUS_ADDRESS=$bus ip netns exec "$netns" unshare --uts --mount sh -c "$nm_script" sh "$nm" </dev/null >"$dir/nm.log" 2>&1 &
echo $! >>"$dir/pids"
DBUS_SYSTEM_BUS_ADDRESS=$bus nm-online -s -q -t 30 || { echo "NetworkManager did not come up; see $dir/nm.log" >&2; false; }
trap - ERR

cat >"$dir/env" <<ENV
BUS=$bus
OVSDB=$ovs/db.sock
NETNS=$netns
ENV
echo "sandbox up: namespace $netns, bus $bus, OVSDB $ovs/db.sock"
