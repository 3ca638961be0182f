//! The fault suite (issue 15): ovsdb-server crashed (SIGKILL), and NetworkManager stopped and
//! then crashed, each restarted in the middle of a burst of changes (ports added with ovs-vsctl; veth devices appearing). What
//! happens while they are down cannot be seen live; once the source reconnects by itself it
//! reconciles, so every port and device of the burst is in the ledger (live or reconciled)
//! and none is missed.

mod common;

use common::{AgentDaemon, OvsSandbox, PrivateBus, wait_for_records, write_daemon_config};
use ovs_port_agent::ledger::Record;
use std::collections::HashSet;
use std::time::Duration;

const PORTS: usize = 200;

/// The ports the ledger knows were added to br0, live or by reconciliation.
fn ports_recorded(records: &[Record]) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.element_id.starts_with("ovs-port:burst") && matches!(r.action.as_str(), "port.added" | "reconciled.added"))
        .map(|r| r.element_id.clone())
        .collect()
}

#[test]
fn ovsdb_server_killed_mid_burst_misses_nothing() {
    let ovs = OvsSandbox::start();
    // Only the database takes changes: the switch would add devices at its own pace.
    ovs.stop_vswitchd();
    ovs.vsctl_no_wait(&["add-br", "br0"]);
    let bus = PrivateBus::open();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), &ovs.sources_toml());
    let _daemon = AgentDaemon::start(&bus.address, &state, &config);
    wait_for_records(&state, 30, "the OVS baseline", |r| r.iter().any(|e| e.action == "baseline"));

    let mut restarted = false;
    for i in 0..PORTS {
        if i == PORTS / 3 {
            ovs.kill_ovsdb(); // SIGKILLed mid-burst: a crash, its socket file left behind
        }
        if i == PORTS / 3 + 20 {
            ovs.start_ovsdb();
            restarted = true;
        }
        if restarted || i < PORTS / 3 {
            ovs.vsctl_no_wait(&["add-port", "br0", &format!("burst{i}")]);
        } else {
            std::thread::sleep(Duration::from_millis(20)); // the burst's client waits out the outage
        }
    }
    // The changes the client could not make during the outage are made once it is back.
    for i in PORTS / 3..PORTS / 3 + 20 {
        ovs.vsctl_no_wait(&["add-port", "br0", &format!("burst{i}")]);
    }
    let records = wait_for_records(&state, 60, "every port of the burst", |r| ports_recorded(r).len() == PORTS);
    let reconciled = records.iter().filter(|r| r.action == "reconciled.added" && r.element_id.starts_with("ovs-port:burst")).count();
    eprintln!(
        "{PORTS} ports added around an ovsdb-server crash (SIGKILL) and restart: all {PORTS} recorded, {reconciled} of them by reconciliation"
    );
}

/// The interfaces the ledger knows appeared, live or by reconciliation.
fn devices_recorded(records: &[Record], prefix: &str) -> HashSet<String> {
    records
        .iter()
        .filter(|r| r.element_id.starts_with(prefix) && matches!(r.action.as_str(), "device.added" | "reconciled.added"))
        .map(|r| r.element_id.clone())
        .collect()
}

#[test]
fn networkmanager_killed_mid_burst_misses_nothing() {
    const DEVICES: usize = 60;
    let mut nm = common::NmSandbox::start();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let config = write_daemon_config(tmp.path(), "\n[sources]\novsdb = false\n");
    let _daemon = AgentDaemon::start(&nm.bus.address, &state, &config);
    wait_for_records(&state, 30, "the NetworkManager baseline", |r| r.iter().any(|e| e.action == "baseline"));
    let netns = nm.netns.name.clone();
    let add = |i: usize| {
        common::run_ok(std::process::Command::new("ip").args([
            "-n",
            &netns,
            "link",
            "add",
            &format!("vb{i}"),
            "type",
            "veth",
            "peer",
            "name",
            &format!("vp{i}"),
        ]));
    };
    (0..DEVICES / 3).for_each(add);
    // The first third is seen live before NetworkManager goes away.
    let live = |r: &[Record]| r.iter().filter(|e| e.element_id.starts_with("interface:vb") && e.action == "device.added").count();
    wait_for_records(&state, 30, "the first devices, live", |r| live(r) == DEVICES / 3);
    // Two outages while devices keep appearing: NetworkManager stopped (SIGTERM), then
    // crashed (SIGKILL), each time started again.
    nm.stop_nm();
    (DEVICES / 3..DEVICES / 2).for_each(add);
    nm.start_nm();
    (DEVICES / 2..2 * DEVICES / 3).for_each(add);
    nm.kill_nm();
    (2 * DEVICES / 3..5 * DEVICES / 6).for_each(add);
    nm.start_nm();
    (5 * DEVICES / 6..DEVICES).for_each(add);
    let records = wait_for_records(&state, 60, "every device of the burst", |r| devices_recorded(r, "interface:vb").len() == DEVICES);
    // NetworkManager, stopping, withdraws every device (DeviceRemoved): that is not a removal,
    // and its announcing them again on return is not an addition.
    let burst: Vec<&Record> = records.iter().filter(|r| r.element_id.starts_with("interface:vb")).collect();
    assert!(burst.iter().all(|r| r.action != "device.removed"), "no device of the burst was removed");
    let additions = burst.iter().filter(|r| matches!(r.action.as_str(), "device.added" | "reconciled.added")).count();
    assert_eq!(additions, DEVICES, "each device added once, live or reconciled");
    let reconciled = records.iter().filter(|r| r.action == "reconciled.added" && r.element_id.starts_with("interface:vb")).count();
    eprintln!("{DEVICES} veth devices around a NetworkManager stop and a crash: all recorded, {reconciled} by reconciliation");
}
