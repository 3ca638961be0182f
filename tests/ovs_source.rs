//! The OVS source against real ovsdb-server and ovs-vswitchd (userspace datapath) in a
//! network namespace: changes made with ovs-vsctl become the right events, in order, and
//! restarts of ovsdb-server and of the daemon are reconciled.

mod common;

use common::{AgentDaemon, OvsSandbox, PrivateBus, wait_for_records, write_daemon_config};
use ovs_port_agent::event::Priority;
use ovs_port_agent::ledger::Record;

fn find<'a>(records: &'a [Record], element: &str, action: &str) -> Option<&'a Record> {
    records.iter().find(|r| r.element_id == element && r.action == action)
}

fn has(element: &'static str, action: &'static str) -> impl Fn(&[Record]) -> bool {
    move |r: &[Record]| find(r, element, action).is_some()
}

#[test]
fn ovs_changes_become_events_and_restarts_are_reconciled() {
    let ovs = OvsSandbox::start();
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), &ovs.sources_toml());
    let mut daemon = AgentDaemon::start(&bus.address, &state, &config);

    // First start: a baseline of what exists.
    let records = wait_for_records(&state, 30, "the OVS baseline", has("ovs:system", "baseline"));
    assert_eq!(find(&records, "ovs:system", "baseline").unwrap().priority, Priority::Low);

    ovs.vsctl(&["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev"]);
    let records = wait_for_records(&state, 30, "br0 added", has("bridge:br0", "bridge.added"));
    let added = find(&records, "bridge:br0", "bridge.added").unwrap();
    assert_eq!(added.priority, Priority::Medium);
    assert_eq!(added.details["after"]["datapath_type"], "netdev");
    assert!(added.summary.contains("br0"), "{}", added.summary);

    ovs.vsctl(&["add-port", "br0", "p1", "--", "set", "Interface", "p1", "type=internal"]);
    let records = wait_for_records(&state, 30, "p1 added", |r| {
        r.iter().any(|e| e.element_id == "bridge:br0" && e.action == "port.added" && e.details["port"] == "p1")
            && find(r, "ovs-port:p1", "port.added").is_some()
    });
    let port = find(&records, "ovs-port:p1", "port.added").unwrap();
    assert_eq!(port.details["after"]["bridge"], "br0");
    assert_eq!(port.details["after"]["interfaces"], serde_json::json!(["p1"]));

    ovs.vsctl(&["set", "Interface", "p1", "external_ids:role=uplink"]);
    let records = wait_for_records(&state, 30, "p1 external_ids", |r| {
        r.iter().any(|e| {
            e.element_id == "ovs-interface:p1" && e.action == "modified" && e.details["changed"] == serde_json::json!(["external_ids"])
        })
    });
    let m = records
        .iter()
        .rev()
        .find(|e| e.element_id == "ovs-interface:p1" && e.details["changed"] == serde_json::json!(["external_ids"]))
        .unwrap();
    assert_eq!(m.details["after"]["external_ids"]["role"], "uplink");
    assert_eq!(m.details["before"]["external_ids"], serde_json::json!({}));

    // A port whose device does not exist: the interface reports an error (critical).
    ovs.vsctl(&["add-port", "br0", "ghost0"]);
    let records = wait_for_records(&state, 30, "ghost0 error", has("ovs-interface:ghost0", "error"));
    let err = find(&records, "ovs-interface:ghost0", "error").unwrap();
    assert_eq!(err.priority, Priority::Critical);
    assert!(err.summary.contains("could not open network device ghost0"), "{}", err.summary);

    ovs.vsctl(&["del-port", "br0", "p1"]);
    let records = wait_for_records(&state, 30, "p1 removed", has("ovs-port:p1", "port.removed"));
    let detached = records.iter().find(|e| e.element_id == "bridge:br0" && e.action == "port.removed" && e.details["port"] == "p1");
    assert!(detached.is_some(), "the bridge records that p1 left");
    // Order: p1 was added before it was removed, and the element chain links them.
    let added_seq = find(&records, "ovs-port:p1", "port.added").unwrap().seq;
    let removed = find(&records, "ovs-port:p1", "port.removed").unwrap();
    assert!(removed.seq > added_seq);
    assert_eq!(removed.element_prev, find(&records, "ovs-port:p1", "port.added").unwrap().hash);

    // ovsdb-server restarts; a change made right after is recorded either live or by
    // reconciliation once the source has reconnected by itself.
    ovs.stop_ovsdb();
    ovs.start_ovsdb();
    ovs.vsctl(&["add-br", "br1", "--", "set", "bridge", "br1", "datapath_type=netdev"]);
    let records = wait_for_records(&state, 30, "br1 after the ovsdb restart", |r| {
        find(r, "bridge:br1", "bridge.added").is_some() || find(r, "bridge:br1", "reconciled.added").is_some()
    });
    assert!(records.iter().filter(|r| r.action == "baseline").all(|r| r.seq < added_seq), "no second baseline after a reconnect");

    // The daemon restarts while changes are made: only the differences are recorded.
    let head_before = records.last().unwrap().seq;
    daemon.stop();
    ovs.vsctl(&["add-br", "br2", "--", "set", "bridge", "br2", "datapath_type=netdev"]);
    ovs.vsctl(&["del-port", "br0", "ghost0"]);
    let _daemon = AgentDaemon::start(&bus.address, &state, &config);
    let records = wait_for_records(&state, 30, "reconciliation after the daemon restart", |r| {
        find(r, "bridge:br2", "reconciled.added").is_some() && find(r, "ovs-port:ghost0", "reconciled.removed").is_some()
    });
    let after_restart: Vec<&Record> = records.iter().filter(|r| r.seq > head_before).collect();
    assert!(after_restart.iter().all(|r| r.action != "baseline"), "no baseline after a restart");
    // What changed while the daemon was down arrives as reconciliation, not as live events
    // (the switch may still be settling other rows, which are recorded live as usual).
    assert!(
        find(&records, "bridge:br2", "bridge.added").is_none(),
        "br2 was added while the daemon was down: {:?}",
        after_restart.iter().map(|r| (&r.element_id, &r.action)).collect::<Vec<_>>()
    );
    assert!(find(&records, "ovs-port:ghost0", "port.removed").is_none());
    let reconciled_bridge = find(&records, "bridge:br0", "reconciled").expect("br0 lost ghost0 while the daemon was down");
    assert!(reconciled_bridge.details["changed"].as_array().unwrap().contains(&serde_json::json!("ports")));
}
