#!/usr/bin/env python3
"""Writes history.jsonl: a realistic three-day NetworkManager/Open vSwitch history for the
search evaluation, in two field-naming styles, with ground truth per event.

- style "agent": events as ovs-port-agent's own sources record them (element ids such as
  interface:ens3, actions such as state.changed, details with before/after/changed, a summary);
- style "import": events as a generic exporter writes them (its own field names such as
  old_state/new_state, from/to, no summary), imported with `ovs-port-agent import`.

Each line holds the event (what is imported) and, under "truth", its topic, the names it
concerns and its time; queries.json labels questions by topic, name and time window, and the
evaluation computes the relevant events from that. NOW is the moment the questions are asked.
Deterministic (seeded); run it to regenerate.
"""
import json
import random
from datetime import datetime, timedelta, timezone

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=timezone.utc)
START = NOW - timedelta(days=3)
rng = random.Random(20261120)

HOSTS_IF = ["ens3", "ens4", "eno1", "eth0", "eth1", "enp1s0"]
VETHS = [f"veth{n:x}" for n in range(0x3a0, 0x3b4)]
TAPS = [f"tap-vm{n}" for n in range(10, 30)]
BRIDGES = ["vmbr0", "br-int", "br-ex", "ovsbr1"]
CONNS = {
    "office-lan": "2f1c9e7a-5b3d-4e8f-9a10-7c6b5a493827",
    "storage-net": "8d2e4f60-1a3b-4c5d-8e9f-0a1b2c3d4e5f",
    "mgmt": "5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f70819",
    "vm-bridge": "c0ffee00-1234-4abc-8def-0123456789ab",
    "backup-link": "11112222-3333-4444-8555-666677778888",
    "guest-wifi": "9a8b7c6d-5e4f-4321-8fed-cba987654321",
}
ADDRS = ["192.168.0.1", "192.168.0.17", "10.20.30.4", "10.0.5.9", "172.16.8.2"]
DNS = ["1.1.1.1", "9.9.9.9", "10.20.30.53", "8.8.8.8"]

events = []


def when(day, hour, minute=None):
    """A time on day 0..2 (0 = three days ago) at the given hour, jittered."""
    minute = rng.randint(0, 59) if minute is None else minute
    return START.replace(hour=0, minute=0) + timedelta(days=day, hours=hour, minutes=minute, seconds=rng.randint(0, 59))


def add(t, style, topic, names, event):
    event["ts"] = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    events.append({"event": event, "truth": {"topic": topic, "names": names, "ts": event["ts"], "style": style}})


def agent(t, topic, names, element_id, action, priority, summary, details, source="nm"):
    add(t, "agent", topic, names, {"element_id": element_id, "action": action, "priority": priority, "source": source, "summary": summary, "details": details})


def generic(t, topic, names, element_id, action, details, priority="medium"):
    add(t, "import", topic, names, {"element_id": element_id, "action": action, "priority": priority, "source": "netmon", "details": details})


def change(field, old, new, **extra):
    d = {"before": {field: old}, "after": {field: new}, "changed": [field]}
    d.update(extra)
    return d


# --- routine background: DHCP renewals, ofport assignments, hw address reports, baselines ---
for day in range(3):
    for hour in range(0, 24, 2):  # DHCP renewals every two hours
        iface = rng.choice(HOSTS_IF)
        agent(when(day, hour), "routine", [iface], f"interface:{iface}", "properties.changed", "low",
              f"{iface}: addresses {ADDRS[1]}/24 → {ADDRS[1]}/24", {"before": {"addresses": [f"{ADDRS[1]}/24"]}, "after": {"addresses": [f"{ADDRS[1]}/24"]}, "changed": ["addresses"], "dhcp": "renewed"})
    for tap in rng.sample(TAPS, 4):
        agent(when(day, rng.randint(0, 23)), "routine", [tap], f"ovs-interface:{tap}", "modified", "low", f"OVS interface {tap}: ofport set",
              {"before": {"ofport": None}, "after": {"ofport": rng.randint(2, 90)}, "changed": ["ofport"]}, source="ovsdb")
    for _ in range(17):
        iface = rng.choice(VETHS)
        generic(when(day, rng.randint(0, 23)), "routine", [iface], f"interface:{iface}", "stats", {"rx_bytes": rng.randint(10**6, 10**9), "tx_bytes": rng.randint(10**6, 10**9)}, "low")

# --- link down / up (carrier), both styles ---
for i in range(12):
    day, hour = rng.randint(0, 2), rng.randint(0, 23)
    iface = rng.choice(HOSTS_IF + VETHS[:6])
    t = when(day, hour)
    if i % 2 == 0:
        agent(t, "link_down", [iface], f"interface:{iface}", "link.down", "high", f"{iface}: carrier lost (link down)", change("carrier", True, False))
        agent(t + timedelta(minutes=rng.randint(1, 40)), "link_up", [iface], f"interface:{iface}", "link.up", "medium", f"{iface}: carrier detected (link up)", change("carrier", False, True))
    else:
        generic(t, "link_down", [iface], f"interface:{iface}", "oper_status", {"old_state": "up", "new_state": "down", "reason": "carrier-lost"})
        generic(t + timedelta(minutes=rng.randint(1, 40)), "link_up", [iface], f"interface:{iface}", "oper_status", {"old_state": "down", "new_state": "up"})

# OVS link state on taps
for i in range(6):
    tap, t = rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    agent(t, "link_down", [tap], f"ovs-interface:{tap}", "link.down", "high", f"OVS interface {tap}: link down", change("link_state", "up", "down"), source="ovsdb")

# --- device activation failures (DHCP / IP config) ---
for i in range(10):
    iface, t = rng.choice(HOSTS_IF), when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        d = change("state", "ip-config", "failed")
        d["reason"] = "dhcp-failed"
        agent(t, "dhcp_failure", [iface], f"interface:{iface}", "state.changed", "critical", f"{iface}: ip-config → failed (dhcp failed)", d)
    else:
        generic(t, "dhcp_failure", [iface], f"interface:{iface}", "device_state", {"old_state": "ip-config", "new_state": "failed", "reason": "ip-config-unavailable"}, "critical")

# config failures (activation failed for other reasons)
for i in range(6):
    iface, t = rng.choice(HOSTS_IF), when(rng.randint(0, 2), rng.randint(0, 23))
    d = change("state", "prepare", "failed")
    d["reason"] = rng.choice(["dependency-failed", "config-failed", "no-secrets"])
    agent(t, "activation_failure", [iface], f"interface:{iface}", "state.changed", "critical", f"{iface}: prepare → failed ({d['reason'].replace('-', ' ')})", d)

# --- OVS ports added / removed, interfaces in error ---
for i in range(14):
    br, tap, t = rng.choice(BRIDGES), rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    ports = sorted(rng.sample(TAPS, 3))
    if i % 3 == 2:
        generic(t, "port_added", [br, tap], f"bridge:{br}", "member_add", {"member": tap, "members_before": len(ports), "members_after": len(ports) + 1})
    else:
        agent(t, "port_added", [br, tap], f"bridge:{br}", "port.added", "medium", f"port {tap} added to OVS bridge {br}",
              {"port": tap, "before": {"ports": ports}, "after": {"ports": sorted(ports + [tap])}, "changed": ["ports"]}, source="ovsdb")
for i in range(10):
    br, tap, t = rng.choice(BRIDGES), rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    ports = sorted(rng.sample(TAPS, 3) + [tap])
    if i % 3 == 2:
        generic(t, "port_removed", [br, tap], f"bridge:{br}", "member_del", {"member": tap, "members_before": len(ports), "members_after": len(ports) - 1})
    else:
        agent(t, "port_removed", [br, tap], f"bridge:{br}", "port.removed", "medium", f"port {tap} removed from OVS bridge {br}",
              {"port": tap, "before": {"ports": ports}, "after": {"ports": [p for p in ports if p != tap]}, "changed": ["ports"]}, source="ovsdb")
for i in range(8):
    tap, t = rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    err = f"could not open network device {tap} (No such device)"
    agent(t, "ovs_iface_error", [tap], f"ovs-interface:{tap}", "error", "critical", f"OVS interface {tap} reports an error: {err}",
          {"before": {"error": None}, "after": {"error": err}, "changed": ["error"]}, source="ovsdb")

# --- bridges created / deleted ---
for i, br in enumerate(["br-int", "br-ex", "ovsbr1", "vmbr0", "br-test", "br-lab"]):
    t = when(i % 3, rng.randint(0, 23))
    if i % 2 == 0:
        agent(t, "bridge_created", [br], f"bridge:{br}", "bridge.added", "medium", f"OVS bridge {br} added",
              {"after": {"name": br, "datapath_type": "netdev", "ports": [br], "fail_mode": None}}, source="ovsdb")
    else:
        generic(t, "bridge_created", [br], f"bridge:{br}", "create", {"kind": "ovs-bridge", "name": br})
for br in ["br-test", "br-lab", "br-old"]:
    t = when(rng.randint(1, 2), rng.randint(0, 23))
    agent(t, "bridge_deleted", [br], f"bridge:{br}", "bridge.removed", "medium", f"OVS bridge {br} removed",
          {"before": {"name": br, "datapath_type": "netdev", "ports": [br]}}, source="ovsdb")

# --- MTU changes ---
for i in range(10):
    t = when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        iface = rng.choice(HOSTS_IF)
        new = rng.choice([9000, 1450, 1400])
        agent(t, "mtu_change", [iface, str(new)], f"interface:{iface}", "properties.changed", "medium", f"{iface}: mtu 1500 → {new}", change("mtu", 1500, new))
    else:
        name = rng.choice(list(CONNS))
        new = rng.choice([9000, 1450])
        generic(t, "mtu_change", [name, str(new)], f"connection:{CONNS[name]}", "config_update", {"setting": "ethernet.mtu", "from": 1500, "to": new, "profile": name})

# --- IP addresses / DNS / gateway on connections ---
for i in range(10):
    name, addr, t = rng.choice(list(CONNS)), rng.choice(ADDRS), when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        agent(t, "ip_address", [name, addr], f"connection:{CONNS[name]}", "settings.updated", "medium", f"connection {name}: ipv4.addresses none → {addr}/24",
              {"before": {"ipv4.addresses": None, "ipv4.method": "auto"}, "after": {"ipv4.addresses": f"{addr}/24", "ipv4.method": "manual"}, "changed": ["ipv4.addresses", "ipv4.method"]})
    else:
        generic(t, "ip_address", [name, addr], f"connection:{CONNS[name]}", "config_update", {"setting": "ipv4.address", "from": None, "to": f"{addr}/24", "profile": name})
for i in range(8):
    name, t = rng.choice(list(CONNS)), when(rng.randint(0, 2), rng.randint(0, 23))
    old, new = rng.sample(DNS, 2)
    if i % 2 == 0:
        agent(t, "dns_change", [name, new], f"connection:{CONNS[name]}", "settings.updated", "medium", f"connection {name}: ipv4.dns {old} → {new}", change("ipv4.dns", [old], [new]))
    else:
        generic(t, "dns_change", [name, new], f"connection:{CONNS[name]}", "config_update", {"setting": "ipv4.dns", "from": old, "to": new, "profile": name})
for i in range(4):
    name, t = rng.choice(list(CONNS)), when(rng.randint(0, 2), rng.randint(0, 23))
    agent(t, "gateway_change", [name], f"connection:{CONNS[name]}", "settings.updated", "medium", f"connection {name}: ipv4.gateway 10.20.30.1 → 10.20.30.254",
          change("ipv4.gateway", "10.20.30.1", "10.20.30.254"))

# --- connections activated / deactivated / created / deleted ---
for i in range(12):
    name, t = rng.choice(list(CONNS)), when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 3 == 0:
        generic(t, "conn_activated", [name], f"connection:{CONNS[name]}", "session", {"profile": name, "old_state": "activating", "new_state": "activated"})
    else:
        d = change("activation", "activating", "activated")
        d["reason"] = "none"
        agent(t, "conn_activated", [name], f"connection:{CONNS[name]}", "connection.activated", "medium", f"connection {name}: activated (none)", d)
for i in range(10):
    name, t = rng.choice(list(CONNS)), when(rng.randint(0, 2), rng.randint(0, 23))
    reason = rng.choice(["user-disconnected", "device-disconnected", "connection-removed"])
    if i % 3 == 0:
        generic(t, "conn_deactivated", [name], f"connection:{CONNS[name]}", "session", {"profile": name, "old_state": "activated", "new_state": "deactivated", "reason": reason})
    else:
        d = change("activation", "activated", "deactivated")
        d["reason"] = reason
        agent(t, "conn_deactivated", [name], f"connection:{CONNS[name]}", "connection.deactivated", "high", f"connection {name}: deactivated ({reason.replace('-', ' ')})", d)
for name in CONNS:
    t = when(0, rng.randint(0, 23))
    agent(t, "conn_created", [name], f"connection:{CONNS[name]}", "connection.added", "medium", f"connection profile {name} (802-3-ethernet) added",
          {"after": {"connection.id": name, "connection.type": "802-3-ethernet", "connection.uuid": CONNS[name], "activation": "deactivated"}})
for name in ["guest-wifi", "backup-link"]:
    t = when(2, rng.randint(0, 8))
    agent(t, "conn_deleted", [name], f"connection:{CONNS[name]}", "connection.removed", "medium", f"connection profile {name} removed",
          {"before": {"connection.id": name, "connection.type": "802-3-ethernet"}})
generic(when(1, 14), "conn_deleted", ["temp-lab"], "connection:0badc0de-0000-4000-8000-000000000001", "profile_delete", {"profile": "temp-lab"})

# --- manager connectivity and networking ---
for i in range(8):
    t = when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        agent(t, "connectivity_lost", [], "nm:manager", "connectivity.changed", "critical", "connectivity full → none", change("connectivity", "full", "none"))
        agent(t + timedelta(minutes=rng.randint(2, 30)), "connectivity_restored", [], "nm:manager", "connectivity.changed", "medium", "connectivity none → full", change("connectivity", "none", "full"))
    else:
        generic(t, "connectivity_lost", [], "nm:manager", "connectivity", {"connectivity": "limited", "previous": "full"}, "critical")
        generic(t + timedelta(minutes=rng.randint(2, 30)), "connectivity_restored", [], "nm:manager", "connectivity", {"connectivity": "full", "previous": "limited"})
for i in range(3):
    t = when(i, rng.randint(0, 23))
    agent(t, "networking_off", [], "nm:manager", "networking.disabled", "high", "networking disabled", change("networking_enabled", True, False))
    agent(t + timedelta(minutes=5), "networking_on", [], "nm:manager", "networking.enabled", "medium", "networking enabled", change("networking_enabled", False, True))

# --- devices appearing / disappearing ---
for i in range(10):
    dev, t = rng.choice(VETHS), when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        agent(t, "device_added", [dev], f"interface:{dev}", "device.added", "medium", f"veth device {dev} added",
              {"after": {"interface": dev, "device_type": "veth", "state": "unmanaged", "managed": False}})
        agent(t + timedelta(hours=rng.randint(1, 5)), "device_removed", [dev], f"interface:{dev}", "device.removed", "high", f"device {dev} removed",
              {"before": {"interface": dev, "device_type": "veth", "state": "unmanaged"}})
    else:
        generic(t, "device_added", [dev], f"interface:{dev}", "iface_create", {"ifname": dev, "kind": "veth"})
        generic(t + timedelta(hours=rng.randint(1, 5)), "device_removed", [dev], f"interface:{dev}", "iface_delete", {"ifname": dev, "kind": "veth"})

# --- VLAN tags, admin state, controller (enslaved) ---
for i in range(8):
    tap, t = rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    old, new = rng.choice([(None, 100), (100, 200), (10, 20), (200, 300)])
    if i % 2 == 0:
        agent(t, "vlan_change", [tap, str(new)], f"ovs-port:{tap}", "modified", "medium", f"OVS port {tap}: tag {old if old is not None else 'none'} → {new}", change("tag", old, new), source="ovsdb")
    else:
        generic(t, "vlan_change", [tap, str(new)], f"ovs-port:{tap}", "port_update", {"field": "vlan", "from": old, "to": new})
for i in range(6):
    tap, t = rng.choice(TAPS), when(rng.randint(0, 2), rng.randint(0, 23))
    agent(t, "admin_down", [tap], f"ovs-interface:{tap}", "admin.down", "high", f"OVS interface {tap}: admin state down", change("admin_state", "up", "down"), source="ovsdb")
for i in range(6):
    iface, br, t = rng.choice(VETHS), rng.choice(BRIDGES), when(rng.randint(0, 2), rng.randint(0, 23))
    if i % 2 == 0:
        agent(t, "enslaved", [iface, br], f"interface:{iface}", "properties.changed", "medium", f"{iface}: controller none → {br}", change("controller", None, br))
    else:
        generic(t, "enslaved", [iface, br], f"interface:{iface}", "master_change", {"old_master": None, "new_master": br})

# --- this morning (day 3, before NOW) and a few specific happenings operators ask about ---
today = lambda hour, minute: START.replace(hour=0, minute=0) + timedelta(days=3, hours=hour, minutes=minute)
d = change("state", "ip-config", "failed")
d["reason"] = "dhcp-failed"
agent(today(2, 14), "dhcp_failure", ["ens4"], "interface:ens4", "state.changed", "critical", "ens4: ip-config → failed (dhcp failed)", d)
agent(today(3, 2), "ovs_iface_error", ["tap-vm21"], "ovs-interface:tap-vm21", "error", "critical",
      "OVS interface tap-vm21 reports an error: could not open network device tap-vm21 (No such device)",
      {"before": {"error": None}, "after": {"error": "could not open network device tap-vm21 (No such device)"}, "changed": ["error"]}, source="ovsdb")
agent(today(8, 5), "link_down", ["eno1"], "interface:eno1", "link.down", "high", "eno1: carrier lost (link down)", change("carrier", True, False))
generic(today(8, 41), "ovs_iface_error", ["tap-vm14"], "ovs-interface:tap-vm14", "iface_error", {"error": "could not add network device tap-vm14 to ofproto (No such device)"}, "critical")
generic(today(9, 2), "connectivity_lost", [], "nm:manager", "connectivity", {"connectivity": "none", "previous": "full"}, "critical")
agent(when(1, 16), "port_removed", ["vmbr0", "tap-vm12"], "bridge:vmbr0", "port.removed", "medium", "port tap-vm12 removed from OVS bridge vmbr0",
      {"port": "tap-vm12", "before": {"ports": ["tap-vm12", "tap-vm17", "vmbr0"]}, "after": {"ports": ["tap-vm17", "vmbr0"]}, "changed": ["ports"]}, source="ovsdb")
d = change("activation", "activating", "activated")
d["reason"] = "none"
agent(when(2, 7), "conn_activated", ["mgmt"], f"connection:{CONNS['mgmt']}", "connection.activated", "medium", "connection mgmt: activated (none)", d)
generic(when(2, 11), "dns_change", ["office-lan", "9.9.9.9"], f"connection:{CONNS['office-lan']}", "config_update", {"setting": "ipv4.dns", "from": "1.1.1.1", "to": "9.9.9.9", "profile": "office-lan"})
for tap, hour in [("tap-vm22", 10), ("tap-vm23", 15)]:
    agent(when(2, hour), "port_added", ["br-int", tap], "bridge:br-int", "port.added", "medium", f"port {tap} added to OVS bridge br-int",
          {"port": tap, "before": {"ports": ["br-int", "tap-vm11"]}, "after": {"ports": ["br-int", tap, "tap-vm11"]}, "changed": ["ports"]}, source="ovsdb")

events.sort(key=lambda e: e["truth"]["ts"])
with open(__file__.replace("make_history.py", "history.jsonl"), "w") as f:
    for e in events:
        f.write(json.dumps(e, sort_keys=True) + "\n")
print(len(events), "events;", sum(e["truth"]["style"] == "import" for e in events), "in the import style; now =", NOW.isoformat())
