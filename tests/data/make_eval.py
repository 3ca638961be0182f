#!/usr/bin/env python3
"""Writes the labelled evaluation set used by tests/search_quality.rs:

  eval-events.jsonl   NetworkManager / OVS events as the daemon records them, each with the
                      topics it belongs to (the "topics" key is stripped before recording)
  eval-queries.json   natural-language queries, each with the topics whose events are relevant

The set is deterministic (seeded) so the committed files can be regenerated and reviewed.
"""
import json
import random

rng = random.Random(20261124)

IFACES = ["eth0", "eth1", "ens3", "ens4", "enp1s0", "enp2s0f1", "veth-web1", "veth-db2", "veth7", "wlan0"]
BRIDGES = ["ovsbr0", "br-int", "br-ext", "br-tun", "br-storage", "br-mgmt"]
PORTS = ["vnet0", "vnet1", "vnet4", "tap-vm17", "tap-vm22", "patch-int", "patch-tun", "bond0", "vxlan-a1", "dpdk0"]
CONNS = [("office-lan", "3b6f0d8e-1c2a-4f5e-9a7b-0c1d2e3f4a5b"), ("uplink", "9f8e7d6c-5b4a-4392-8170-a1b2c3d4e5f6"),
         ("storage-net", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"), ("vm-bridge", "7c6b5a49-3827-4165-9a4b-3c2d1e0f9a8b"),
         ("backup-link", "5e4d3c2b-1a09-4f8e-8d7c-6b5a49382716"), ("wifi-guest", "2d3c4b5a-6978-4a6b-9c5d-4e3f2a1b0c9d")]
ADDRS = ["10.0.0.12/24", "192.168.10.5/24", "172.16.4.20/16", "10.20.30.40/24", "192.168.122.1/24"]

events = []


def add(topics, element_id, action, priority, summary, details, source):
    events.append({"element_id": element_id, "action": action, "priority": priority, "source": source,
                   "summary": summary, "details": details, "topics": topics})


def pick(xs):
    return rng.choice(xs)


def gen_link_down():
    i = pick(IFACES)
    v = rng.randrange(4)
    if v == 0:
        add(["link_down"], f"interface:{i}", "state.changed", "high", f"{i}: activated → unavailable (carrier changed)",
            {"before": {"state": "activated"}, "after": {"state": "unavailable", "carrier": False}, "changed": ["state", "carrier"], "reason": "carrier-changed"}, "nm")
    elif v == 1:
        add(["link_down"], f"ovs-interface:{i}", "link.down", "high", f"OVS reports link_state down on {i}",
            {"before": {"link_state": "up"}, "after": {"link_state": "down"}, "changed": ["link_state"]}, "ovsdb")
    elif v == 2:
        add(["link_down"], f"interface:{i}", "carrier.lost", "high", f"no carrier on {i}: the cable may be unplugged",
            {"before": {"carrier": True}, "after": {"carrier": False}, "changed": ["carrier"]}, "nm")
    else:
        add(["link_down"], f"interface:{i}", "properties.changed", "high", f"{i} lost its physical link",
            {"before": {"carrier": True, "speed": 1000}, "after": {"carrier": False, "speed": 0}, "changed": ["carrier", "speed"]}, "nm")


def gen_link_up():
    i = pick(IFACES)
    v = rng.randrange(3)
    if v == 0:
        add(["link_up"], f"interface:{i}", "carrier.restored", "low", f"carrier detected again on {i}",
            {"before": {"carrier": False}, "after": {"carrier": True}, "changed": ["carrier"]}, "nm")
    elif v == 1:
        add(["link_up"], f"ovs-interface:{i}", "link.up", "low", f"OVS link_state of {i} is up",
            {"before": {"link_state": "down"}, "after": {"link_state": "up"}, "changed": ["link_state"]}, "ovsdb")
    else:
        add(["link_up"], f"interface:{i}", "properties.changed", "low", f"{i} link is back, negotiated 10 Gb/s",
            {"before": {"carrier": False, "speed": 0}, "after": {"carrier": True, "speed": 10000}, "changed": ["carrier", "speed"]}, "nm")


def gen_port_added():
    b, p = pick(BRIDGES), pick(PORTS)
    v = rng.randrange(3)
    if v == 0:
        add(["port_added"], f"bridge:{b}", "port.added", "medium", f"port {p} added to OVS bridge {b}",
            {"after": {"ports": [p]}, "changed": ["ports"]}, "ovsdb")
    elif v == 1:
        add(["port_added"], f"ovs-port:{p}", "inserted", "medium", f"new OVS port {p} on {b}",
            {"after": {"name": p, "bridge": b}, "changed": ["name", "bridge"]}, "ovsdb")
    else:
        add(["port_added"], f"bridge:{b}", "port.added", "medium", f"{p} attached to {b} by ovs-vsctl add-port",
            {"after": {"ports": [p, "patch-int"]}, "changed": ["ports"]}, "ovsdb")


def gen_port_removed():
    b, p = pick(BRIDGES), pick(PORTS)
    v = rng.randrange(2)
    if v == 0:
        add(["port_removed"], f"bridge:{b}", "port.removed", "high", f"port {p} removed from bridge {b}",
            {"before": {"ports": [p]}, "after": {"ports": []}, "changed": ["ports"]}, "ovsdb")
    else:
        add(["port_removed"], f"ovs-port:{p}", "deleted", "high", f"OVS port {p} deleted (was on {b})",
            {"before": {"name": p, "bridge": b}, "changed": ["name"]}, "ovsdb")


def gen_bridge_created():
    b = pick(BRIDGES)
    add(["bridge_created"], f"bridge:{b}", "inserted", "medium", pick([f"OVS bridge {b} created", f"new bridge {b} (datapath netdev)", f"ovs-vsctl add-br {b}: bridge appeared"]),
        {"after": {"name": b, "datapath_type": "netdev", "fail_mode": pick(["secure", "standalone"])}, "changed": ["name"]}, "ovsdb")


def gen_bridge_deleted():
    b = pick(BRIDGES)
    add(["bridge_deleted"], f"bridge:{b}", "deleted", "high", pick([f"OVS bridge {b} deleted", f"bridge {b} removed with all its ports", f"{b} no longer exists in OVSDB"]),
        {"before": {"name": b, "ports": [pick(PORTS), pick(PORTS)]}, "changed": ["name"]}, "ovsdb")


def gen_ovs_error():
    p = pick(PORTS)
    msg = pick([f"could not open network device {p} (No such device)", f"{p}: could not add network device {p} to ofproto (File exists)",
                f"error setting MTU on {p}: Invalid argument", f"{p}: dpdk port not found"])
    add(["ovs_iface_error"], f"ovs-interface:{p}", "error", "critical", f"OVS interface {p} reports an error: {msg}",
        {"before": {"error": None, "ofport": 5}, "after": {"error": msg, "ofport": -1}, "changed": ["error", "ofport"]}, "ovsdb")


def gen_mtu():
    name, uuid = pick(CONNS)
    old, new = pick([(1500, 9000), (9000, 1500), (1500, 1400), (1500, 1450)])
    v = rng.randrange(2)
    if v == 0:
        add(["mtu_change"], f"connection:{uuid}", "settings.updated", "medium", f"connection {name}: MTU {old} → {new}",
            {"before": {"ethernet.mtu": old}, "after": {"ethernet.mtu": new}, "changed": ["ethernet.mtu"]}, "nm")
    else:
        i = pick(IFACES)
        add(["mtu_change"], f"interface:{i}", "properties.changed", "medium", f"{i} MTU changed from {old} to {new}",
            {"before": {"mtu": old}, "after": {"mtu": new}, "changed": ["mtu"]}, "nm")


def gen_address():
    i, a = pick(IFACES), pick(ADDRS)
    v = rng.randrange(2)
    if v == 0:
        add(["ip_address"], f"interface:{i}", "properties.changed", "low", f"{i} got IPv4 address {a}",
            {"before": {"addresses": []}, "after": {"addresses": [a]}, "changed": ["addresses"]}, "nm")
    else:
        name, uuid = pick(CONNS)
        add(["ip_address"], f"connection:{uuid}", "settings.updated", "medium", f"connection {name}: static address set to {a}",
            {"before": {"ipv4.method": "auto"}, "after": {"ipv4.method": "manual", "ipv4.addresses": [a]}, "changed": ["ipv4.method", "ipv4.addresses"]}, "nm")


def gen_dhcp_fail():
    i = pick(IFACES)
    reason = pick(["dhcp-start-failed", "ip-config-unavailable", "dhcp-failed"])
    add(["dhcp_failure"], f"interface:{i}", "state.changed", "critical",
        pick([f"{i}: ip-config → failed ({reason.replace('-', ' ')})", f"{i} could not get an address from DHCP", f"activation of {i} failed: no IPv4 lease"]),
        {"before": {"state": "ip-config"}, "after": {"state": "failed"}, "changed": ["state"], "reason": reason}, "nm")


def gen_activated():
    name, uuid = pick(CONNS)
    add(["conn_activated"], f"connection:{uuid}", "active.state.changed", "low", pick([f"connection {name} activated", f"{name} is up and running", f"profile {name} now active on {pick(IFACES)}"]),
        {"before": {"state": "activating"}, "after": {"state": "activated"}, "changed": ["state"]}, "nm")


def gen_deactivated():
    name, uuid = pick(CONNS)
    add(["conn_deactivated"], f"connection:{uuid}", "active.state.changed", "high", pick([f"connection {name} deactivated", f"{name} went down (user request)", f"profile {name} disconnected"]),
        {"before": {"state": "activated"}, "after": {"state": "deactivated"}, "changed": ["state"], "reason": pick(["user-disconnected", "device-disconnected"])}, "nm")


def gen_conn_created():
    name, uuid = pick(CONNS)
    add(["conn_created"], f"connection:{uuid}", "added", "medium", pick([f"new connection profile {name}", f"nmcli con add created {name}", f"profile {name} ({pick(['ethernet', 'bridge', 'wifi'])}) added"]),
        {"after": {"id": name, "type": pick(["802-3-ethernet", "bridge", "802-11-wireless"])}, "changed": ["id"]}, "nm")


def gen_conn_deleted():
    name, uuid = pick(CONNS)
    add(["conn_deleted"], f"connection:{uuid}", "removed", "medium", pick([f"connection profile {name} deleted", f"{name} removed with nmcli con delete", f"profile {name} no longer exists"]),
        {"before": {"id": name}, "changed": ["id"]}, "nm")


def gen_conn_lost():
    before, after = pick([("full", "none"), ("full", "limited"), ("limited", "none"), ("full", "portal")])
    add(["connectivity_lost"], "nm:manager", "connectivity.changed", "critical",
        pick([f"connectivity went from {before} to {after}", f"host lost internet access ({after})", f"NetworkManager reports connectivity {after}"]),
        {"before": {"connectivity": before}, "after": {"connectivity": after}, "changed": ["connectivity"]}, "nm")


def gen_conn_back():
    before = pick(["none", "limited", "portal"])
    add(["connectivity_restored"], "nm:manager", "connectivity.changed", "low", pick([f"connectivity restored: {before} → full", "internet reachable again", "full connectivity is back"]),
        {"before": {"connectivity": before}, "after": {"connectivity": "full"}, "changed": ["connectivity"]}, "nm")


def gen_networking_off():
    add(["networking_off"], "nm:manager", "state.changed", "critical", pick(["networking disabled (nmcli networking off)", "NetworkManager went to sleep: all devices down", "manager state asleep"]),
        {"before": {"state": "connected-global", "networking_enabled": True}, "after": {"state": "asleep", "networking_enabled": False}, "changed": ["state", "networking_enabled"]}, "nm")


def gen_device_added():
    i = pick(IFACES)
    add(["device_added"], f"interface:{i}", "device.added", "medium", pick([f"new network device {i} appeared", f"device {i} ({pick(['veth', 'ethernet', 'tun'])}) added", f"NetworkManager now sees {i}"]),
        {"after": {"interface": i, "device_type": pick(["veth", "ethernet", "tun"]), "state": "unmanaged"}, "changed": ["interface"]}, "nm")


def gen_device_removed():
    i = pick(IFACES)
    add(["device_removed"], f"interface:{i}", "device.removed", "high", pick([f"network device {i} disappeared", f"device {i} removed", f"{i} unplugged from the system"]),
        {"before": {"interface": i, "state": "activated"}, "changed": ["interface"]}, "nm")


def gen_vlan():
    p = pick(PORTS)
    old, new = rng.choice([(None, 100), (100, 200), (10, 20), (200, None)])
    add(["vlan_change"], f"ovs-port:{p}", "modified", "medium", pick([f"VLAN tag of {p} changed from {old} to {new}", f"{p} moved to VLAN {new}", f"access VLAN on port {p} set to {new}"]),
        {"before": {"tag": old}, "after": {"tag": new}, "changed": ["tag"]}, "ovsdb")


def gen_admin_down():
    p = pick(PORTS)
    add(["admin_down"], f"ovs-interface:{p}", "modified", "high", pick([f"{p} administratively down", f"admin_state of {p} is down", f"port {p} disabled by the administrator"]),
        {"before": {"admin_state": "up"}, "after": {"admin_state": "down"}, "changed": ["admin_state"]}, "ovsdb")


def gen_dns():
    name, uuid = pick(CONNS)
    add(["dns_change"], f"connection:{uuid}", "settings.updated", "medium", pick([f"{name}: DNS servers changed", f"name servers of {name} set to 1.1.1.1 and 9.9.9.9", f"connection {name} now uses resolver 10.0.0.53"]),
        {"before": {"ipv4.dns": ["10.0.0.1"]}, "after": {"ipv4.dns": ["1.1.1.1", "9.9.9.9"]}, "changed": ["ipv4.dns"]}, "nm")


def gen_enslaved():
    i, b = pick(IFACES), pick(BRIDGES)
    add(["enslaved"], f"interface:{i}", "properties.changed", "medium", pick([f"{i} attached to bridge {b} as a port", f"controller of {i} set to {b}", f"{i} enslaved to {b}"]),
        {"before": {"controller": None}, "after": {"controller": b}, "changed": ["controller"]}, "nm")


GENERATORS = [gen_link_down, gen_link_up, gen_port_added, gen_port_removed, gen_bridge_created, gen_bridge_deleted, gen_ovs_error,
              gen_mtu, gen_address, gen_dhcp_fail, gen_activated, gen_deactivated, gen_conn_created, gen_conn_deleted, gen_conn_lost,
              gen_conn_back, gen_networking_off, gen_device_added, gen_device_removed, gen_vlan, gen_admin_down, gen_dns, gen_enslaved]

for g in GENERATORS:
    for _ in range(14):
        g()
rng.shuffle(events)

QUERIES = [
    ("cable unplugged", ["link_down"]),
    ("which interfaces lost carrier", ["link_down"]),
    ("physical link went down", ["link_down"]),
    ("link came back up", ["link_up"]),
    ("carrier restored on a nic", ["link_up"]),
    ("ports attached to an ovs bridge", ["port_added"]),
    ("new port on the integration bridge", ["port_added"]),
    ("port removed from a bridge", ["port_removed"]),
    ("ovs port deleted", ["port_removed"]),
    ("new OVS bridge created", ["bridge_created"]),
    ("bridge was deleted", ["bridge_deleted"]),
    ("ovs interface errors", ["ovs_iface_error"]),
    ("could not open network device", ["ovs_iface_error"]),
    ("bridge configuration problems", ["ovs_iface_error", "bridge_deleted", "port_removed"]),
    ("MTU changes", ["mtu_change"]),
    ("jumbo frames enabled", ["mtu_change"]),
    ("IP address assigned", ["ip_address"]),
    ("static address configured on a connection", ["ip_address"]),
    ("DHCP failed", ["dhcp_failure"]),
    ("device failed to get an IP lease", ["dhcp_failure"]),
    ("connection activated", ["conn_activated"]),
    ("profile came up", ["conn_activated"]),
    ("connection deactivated", ["conn_deactivated"]),
    ("profile disconnected by user", ["conn_deactivated"]),
    ("new connection profile created", ["conn_created"]),
    ("nmcli con add", ["conn_created"]),
    ("connection profile deleted", ["conn_deleted"]),
    ("internet connectivity lost", ["connectivity_lost"]),
    ("host went offline", ["connectivity_lost", "networking_off"]),
    ("connectivity restored", ["connectivity_restored"]),
    ("networking turned off", ["networking_off"]),
    ("network manager asleep", ["networking_off"]),
    ("new network device appeared", ["device_added"]),
    ("veth interface added", ["device_added"]),
    ("network device disappeared", ["device_removed"]),
    ("device removed from the system", ["device_removed"]),
    ("VLAN tag changed on a port", ["vlan_change"]),
    ("port moved to another vlan", ["vlan_change"]),
    ("port administratively disabled", ["admin_down"]),
    ("admin state down", ["admin_down"]),
    ("DNS server changes", ["dns_change"]),
    ("resolver configuration modified", ["dns_change"]),
    ("interface enslaved to a bridge", ["enslaved"]),
    ("which interfaces joined a bridge as ports", ["enslaved", "port_added"]),
    ("connection settings changed", ["mtu_change", "ip_address", "dns_change"]),
]

with open("eval-events.jsonl", "w") as f:
    for e in events:
        f.write(json.dumps(e, ensure_ascii=False) + "\n")
with open("eval-queries.json", "w") as f:
    json.dump([{"query": q, "relevant_topics": t} for q, t in QUERIES], f, indent=1, ensure_ascii=False)
print(len(events), "events,", len(QUERIES), "queries")
