//! The NetworkManager source against the real NetworkManager in a network namespace with
//! its own bus: devices, profiles, activation, settings diffs, networking off/on, an NM
//! restart and a daemon restart, each becoming the right events with names, not numbers.

mod common;

use common::{AgentDaemon, NmSandbox, wait_for_records, write_daemon_config};
use ovs_port_agent::event::Priority;
use ovs_port_agent::ledger::Record;

fn find<'a>(records: &'a [Record], element: &str, action: &str) -> Option<&'a Record> {
    records.iter().find(|r| r.element_id == element && r.action == action)
}

#[test]
fn networkmanager_changes_become_events_and_restarts_are_reconciled() {
    let mut nm = NmSandbox::start();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), "\n[sources]\novsdb = false\ncoalesce_ms = 100\n");
    let mut daemon = AgentDaemon::start(&nm.bus.address, &state, &config);
    let records = wait_for_records(&state, 30, "the NM baseline", |r| find(r, "nm:manager", "baseline").is_some());
    assert_eq!(find(&records, "nm:manager", "baseline").unwrap().details["after"]["networking_enabled"], true);

    // A veth pair added outside NetworkManager.
    nm.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    let records = wait_for_records(&state, 30, "veth0 added", |r| find(r, "interface:veth0", "device.added").is_some());
    let added = find(&records, "interface:veth0", "device.added").unwrap();
    assert_eq!(added.details["after"]["device_type"], "veth");
    assert_eq!(added.priority, Priority::Medium);

    // A profile: add, up, modify, down, delete.
    nm.nmcli(&[
        "con",
        "add",
        "type",
        "ethernet",
        "ifname",
        "veth0",
        "con-name",
        "lab0",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        "10.99.0.1/24",
        "ipv6.method",
        "disabled",
    ]);
    let uuid = nm.nmcli(&["-g", "connection.uuid", "con", "show", "lab0"]).trim().to_owned();
    let conn_id = format!("connection:{uuid}");
    let records = wait_for_records(&state, 30, "lab0 added", |r| find(r, &conn_id, "connection.added").is_some());
    assert_eq!(find(&records, &conn_id, "connection.added").unwrap().details["after"]["connection.id"], "lab0");

    nm.ip(&["link", "set", "veth1", "up"]);
    nm.nmcli(&["con", "up", "lab0"]);
    let records = wait_for_records(&state, 30, "lab0 activated", |r| {
        find(r, &conn_id, "connection.activated").is_some()
            && r.iter()
                .any(|e| e.element_id == "interface:veth0" && e.action == "state.changed" && e.details["after"]["state"] == "activated")
    });
    let activated = records.iter().find(|e| e.element_id == "interface:veth0" && e.details["after"]["state"] == "activated").unwrap();
    assert!(activated.details["reason"].is_string(), "reasons are names: {}", activated.details);
    assert_eq!(activated.priority, Priority::Medium);

    nm.nmcli(&["con", "modify", "lab0", "ipv4.dns", "10.99.0.53"]);
    let records = wait_for_records(&state, 30, "lab0 settings diff", |r| find(r, &conn_id, "settings.updated").is_some());
    let updated = find(&records, &conn_id, "settings.updated").unwrap();
    let changed: Vec<&str> = updated.details["changed"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    assert!(changed.contains(&"ipv4.dns"), "{changed:?}");
    assert_eq!(updated.details["after"]["ipv4.dns"], serde_json::json!(["10.99.0.53"]), "addresses as text, not u32");
    assert!(!changed.iter().any(|c| c.contains("timestamp")), "{changed:?}");
    assert_eq!(updated.priority, Priority::Medium);

    nm.nmcli(&["con", "down", "lab0"]);
    let records = wait_for_records(&state, 30, "lab0 deactivated", |r| find(r, &conn_id, "connection.deactivated").is_some());
    let down = find(&records, &conn_id, "connection.deactivated").unwrap();
    assert_eq!(down.priority, Priority::High);
    assert!(down.seq > find(&records, &conn_id, "connection.activated").unwrap().seq, "order");

    nm.nmcli(&["networking", "off"]);
    let records = wait_for_records(&state, 30, "networking off", |r| find(r, "nm:manager", "networking.disabled").is_some());
    assert_eq!(find(&records, "nm:manager", "networking.disabled").unwrap().priority, Priority::High);
    nm.nmcli(&["networking", "on"]);
    wait_for_records(&state, 30, "networking on", |r| find(r, "nm:manager", "networking.enabled").is_some());

    nm.nmcli(&["con", "delete", "lab0"]);
    wait_for_records(&state, 30, "lab0 removed", |r| find(r, &conn_id, "connection.removed").is_some());
    nm.ip(&["link", "del", "veth0"]);
    let records = wait_for_records(&state, 30, "veth0 removed", |r| find(r, "interface:veth0", "device.removed").is_some());
    assert_eq!(find(&records, "interface:veth0", "device.removed").unwrap().priority, Priority::High);
    // No raw numbers anywhere in what was recorded about states.
    for r in records.iter().filter(|r| r.action == "state.changed") {
        assert!(r.details["after"]["state"].is_string(), "{}", r.details);
    }

    // NetworkManager restarts while a device appears: reconciled when NM is back.
    nm.stop_nm();
    nm.ip(&["link", "add", "veth3", "type", "veth", "peer", "name", "veth4"]);
    nm.start_nm();
    wait_for_records(&state, 30, "veth3 after the NM restart", |r| {
        find(r, "interface:veth3", "reconciled.added").is_some() || find(r, "interface:veth3", "device.added").is_some()
    });

    // The daemon restarts while a profile is added: only the difference is recorded.
    let head = common::ledger_records(&state).last().unwrap().seq;
    daemon.stop();
    nm.nmcli(&[
        "con",
        "add",
        "type",
        "ethernet",
        "ifname",
        "veth3",
        "con-name",
        "lab3",
        "ipv4.method",
        "disabled",
        "ipv6.method",
        "disabled",
    ]);
    let uuid3 = nm.nmcli(&["-g", "connection.uuid", "con", "show", "lab3"]).trim().to_owned();
    let _daemon = AgentDaemon::start(&nm.bus.address, &state, &config);
    let records =
        wait_for_records(&state, 30, "lab3 reconciled", |r| find(r, &format!("connection:{uuid3}"), "reconciled.added").is_some());
    assert!(records.iter().filter(|r| r.seq > head).all(|r| r.action != "baseline"), "no second baseline");
    for r in &records {
        eprintln!("{:>4} {:<8} {:<48} {:<22} {}", r.seq, r.priority, r.element_id, r.action, r.summary);
    }
}

#[test]
fn a_bridge_with_a_veth_port_is_recorded() {
    let nm = NmSandbox::start();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), "\n[sources]\novsdb = false\n");
    let _daemon = AgentDaemon::start(&nm.bus.address, &state, &config);
    wait_for_records(&state, 30, "the NM baseline", |r| find(r, "nm:manager", "baseline").is_some());

    nm.ip(&["link", "add", "veth5", "type", "veth", "peer", "name", "veth6"]);
    nm.ip(&["link", "set", "veth6", "up"]);
    nm.nmcli(&[
        "con",
        "add",
        "type",
        "bridge",
        "ifname",
        "brlab",
        "con-name",
        "brlab",
        "ipv4.method",
        "manual",
        "ipv4.addresses",
        "10.98.0.1/24",
        "ipv6.method",
        "disabled",
    ]);
    nm.nmcli(&["con", "add", "type", "bridge-slave", "ifname", "veth5", "master", "brlab", "con-name", "brlab-port"]);
    nm.nmcli(&["con", "up", "brlab-port"]);
    let records = wait_for_records(&state, 40, "the bridge and its port activated", |r| {
        r.iter().any(|e| e.element_id == "interface:brlab" && e.action == "device.added")
            && r.iter()
                .any(|e| e.element_id == "interface:veth5" && e.action == "state.changed" && e.details["after"]["state"] == "activated")
    });
    let bridge = find(&records, "interface:brlab", "device.added").unwrap();
    assert_eq!(bridge.details["after"]["device_type"], "bridge");
    let port_profile = records
        .iter()
        .find(|e| e.action == "connection.added" && e.details["after"]["connection.id"] == "brlab-port")
        .expect("port profile recorded");
    assert_eq!(port_profile.details["after"]["connection.master"], "brlab");
    assert_eq!(port_profile.details["after"]["connection.slave-type"], "bridge");
}
