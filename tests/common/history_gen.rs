//! A generator of weeks of realistic NetworkManager/OVS history for the analytics tests:
//! daily routines (DHCP renewals every two hours, a nightly backup link, the uplink's
//! occasional carrier blip, VMs starting and stopping with their OVS ports and tags), with
//! anomalies planted on known days in the last week, and one week before it left clean.
//! Deterministic (a fixed seed); the truth is kept by event index.

use ovs_port_agent::event::{NewEvent, Priority};
use serde_json::{Value, json};

pub const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// The history starts here (2026-10-05T00:00:00Z, a Monday).
pub const START_NS: i64 = 1_791_158_400 * 1_000_000_000;
/// Weeks 1–4 are for learning, week 5 is clean and scored, week 6 is scored with plants.
pub const WEEKS: i64 = 6;

/// One planted anomaly: what it is and the indexes (0-based) of its events.
pub struct Planted {
    pub name: &'static str,
    pub events: Vec<usize>,
}

pub struct Generated {
    pub events: Vec<NewEvent>,
    pub planted: Vec<Planted>,
    /// Index of the week-6 bond degradation, whose earlier likes are at `bond_history`.
    pub bond_probe: usize,
    pub bond_history: Vec<usize>,
    /// Index of the planted bridge fail-mode change (a drift).
    pub drift_event: usize,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Builder {
    events: Vec<(i64, NewEvent)>,
}

impl Builder {
    fn push(&mut self, ts: i64, element: &str, kind: &str, action: &str, priority: Priority, details: Value, summary: String) -> usize {
        let mut e = NewEvent::new(if kind == "ovs-port" || kind == "bridge" { "ovsdb" } else { "nm" }, element, action, priority, details);
        e.element_type = kind.to_owned();
        e.summary = summary;
        e.ts = Some(ts);
        self.events.push((ts, e));
        self.events.len() - 1
    }
}

fn change(field: &str, before: Value, after: Value) -> Value {
    json!({"before": {field: before}, "after": {field: after}, "changed": [field]})
}

pub fn generate() -> Generated {
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut b = Builder { events: Vec::new() };
    let min = 60 * 1_000_000_000i64;
    let mut vm = 0u32;
    let mut bond_history = Vec::new();
    for day in 0..WEEKS * 7 {
        let d0 = START_NS + day * DAY_NS;
        // DHCP renewals on eth0 every two hours (the lease address stays).
        for h in (0..24).step_by(2) {
            let ts = d0 + h * 60 * min + rng.below(5) as i64 * min;
            let addr = json!(["192.168.10.17/24"]);
            b.push(
                ts,
                "interface:eth0",
                "interface",
                "properties.changed",
                Priority::Low,
                json!({"before": {"addresses": addr}, "after": {"addresses": addr}, "changed": ["addresses"], "dhcp": "renewed"}),
                "eth0: DHCP lease renewed".into(),
            );
        }
        // The nightly backup link comes up at 02:00 and goes down at 03:00.
        for (h, state, old) in [(2, "activated", "deactivated"), (3, "deactivated", "activated")] {
            let ts = d0 + h * 60 * min + rng.below(3) as i64 * min;
            b.push(
                ts,
                "connection:backup-link",
                "connection",
                "state.changed",
                Priority::Medium,
                json!({"old_state": old, "new_state": state, "reason": if state == "activated" { "user-requested" } else { "none" }}),
                format!("connection backup-link: {state}"),
            );
        }
        // The uplink eth1 (MTU 9000) blips every few days: carrier lost and back within a minute.
        if day % 3 == 1 {
            let ts = d0 + (8 + rng.below(10) as i64) * 60 * min;
            b.push(
                ts,
                "interface:eth1",
                "interface",
                "state.changed",
                Priority::Medium,
                json!({"old_state": "activated", "new_state": "unavailable", "reason": "carrier-changed", "mtu": 9000}),
                "eth1: activated → unavailable (carrier changed)".into(),
            );
            b.push(
                ts + min,
                "interface:eth1",
                "interface",
                "state.changed",
                Priority::Medium,
                json!({"old_state": "unavailable", "new_state": "activated", "reason": "carrier-changed", "mtu": 9000}),
                "eth1: unavailable → activated (carrier changed)".into(),
            );
        }
        // eth2 and eth3 report their settings once a day (MTU 1500).
        for nic in ["eth2", "eth3"] {
            let ts = d0 + (5 * 60 + rng.below(60) as i64) * min;
            b.push(
                ts,
                &format!("interface:{nic}"),
                "interface",
                "state.changed",
                Priority::Low,
                json!({"old_state": "activated", "new_state": "activated", "reason": "none", "mtu": 1500}),
                format!("{nic}: settings confirmed"),
            );
        }
        // VMs: 14 to 18 a day start on br-int with a tag from the usual three, run for hours, stop.
        for _ in 0..(14 + rng.below(5)) {
            vm += 1;
            let name = format!("vnet{vm}");
            let tag = [10, 20, 30][rng.below(3) as usize];
            let start = d0 + (6 * 60 + rng.below(14 * 60) as i64) * min;
            let stop = start + (30 + rng.below(180) as i64) * min;
            vm_cycle(&mut b, &name, tag, start, stop);
        }
        // On Mondays and Thursdays of weeks 3 and 4: bond0 loses a member, then goes down
        // (critical), then recovers.
        if (14..28).contains(&day) && (day % 7 == 0 || day % 7 == 3) {
            let ts = d0 + 11 * 60 * min + rng.below(30) as i64 * min;
            bond_history.push(bond_failure(&mut b, ts, true));
        }
    }
    // The plants, in week 6.
    let w6 = START_NS + 35 * DAY_NS;
    let mut planted = Vec::new();
    // A never-seen error state on eth2.
    let ts = w6 + DAY_NS / 2;
    let i = b.push(
        ts,
        "interface:eth2",
        "interface",
        "state.changed",
        Priority::High,
        json!({"old_state": "activated", "new_state": "failed", "reason": "supplicant-timeout", "mtu": 1500}),
        "eth2: activated → failed (supplicant timeout)".into(),
    );
    planted.push(Planted { name: "never-seen error state", events: vec![i] });
    // A flapping link: eth1 down and up 8 times in 16 minutes.
    let ts = w6 + DAY_NS + DAY_NS / 3;
    let mut flap = Vec::new();
    for k in 0..8 {
        let t = ts + k * 2 * min;
        flap.push(b.push(
            t,
            "interface:eth1",
            "interface",
            "state.changed",
            Priority::Medium,
            json!({"old_state": "activated", "new_state": "unavailable", "reason": "carrier-changed", "mtu": 9000}),
            "eth1: activated → unavailable (carrier changed)".into(),
        ));
        flap.push(b.push(
            t + min,
            "interface:eth1",
            "interface",
            "state.changed",
            Priority::Medium,
            json!({"old_state": "unavailable", "new_state": "activated", "reason": "carrier-changed", "mtu": 9000}),
            "eth1: unavailable → activated (carrier changed)".into(),
        ));
    }
    planted.push(Planted { name: "flapping link", events: flap });
    // A burst on one VM port: 25 changes of its external ids in five minutes.
    let ts = w6 + 2 * DAY_NS + DAY_NS / 2;
    vm += 1;
    let name = format!("vnet{vm}");
    vm_cycle(&mut b, &name, 20, ts - 30 * min, ts + 60 * min);
    let mut burst = Vec::new();
    for k in 0..25 {
        burst.push(b.push(
            ts + k * 12 * 1_000_000_000,
            &format!("port:{name}"),
            "ovs-port",
            "row.modified",
            Priority::Low,
            change("external_ids", json!({"iface-status": "active"}), json!({"iface-status": "active", "attempt": k.to_string()})),
            format!("port {name}: external_ids changed"),
        ));
    }
    planted.push(Planted { name: "burst on one port", events: burst });
    // An odd MTU on eth3.
    let ts = w6 + 3 * DAY_NS + DAY_NS / 2;
    let i = b.push(
        ts,
        "interface:eth3",
        "interface",
        "state.changed",
        Priority::Low,
        json!({"old_state": "activated", "new_state": "activated", "reason": "none", "mtu": 1450}),
        "eth3: settings confirmed".into(),
    );
    planted.push(Planted { name: "odd MTU", events: vec![i] });
    // A new VLAN tag on a VM port.
    let ts = w6 + 4 * DAY_NS + DAY_NS / 2;
    vm += 1;
    let name = format!("vnet{vm}");
    let cycle = vm_cycle(&mut b, &name, 99, ts, ts + 90 * min);
    planted.push(Planted { name: "new VLAN tag", events: cycle });
    // bond0 degrades again (a precursor of its failures), and a bridge's fail mode drifts.
    let ts = w6 + 5 * DAY_NS + DAY_NS / 2;
    let bond_probe = bond_failure(&mut b, ts, false);
    planted.push(Planted { name: "precursor", events: vec![bond_probe] });
    let drift_ts = w6 + 6 * DAY_NS + DAY_NS / 2;
    let drift_event = b.push(
        drift_ts,
        "bridge:br-int",
        "bridge",
        "row.modified",
        Priority::Medium,
        change("fail_mode", json!("standalone"), json!("secure")),
        "bridge br-int: fail_mode standalone → secure".into(),
    );
    // Three long-lived ports configured alike but for one, for similar-configuration questions.
    // (The trunk port's vlan_mode was never seen before: that is planted too.)
    let end = START_NS + WEEKS * 7 * DAY_NS - 10 * min;
    for (k, (name, tag, mode)) in
        [("vnet-db1", 10, "access"), ("vnet-db2", 10, "access"), ("vnet-web", 30, "trunk")].into_iter().enumerate()
    {
        let i = b.push(
            end + k as i64 * min,
            &format!("port:{name}"),
            "ovs-port",
            "row.added",
            Priority::Low,
            json!({"after": {"name": name, "bridge": "br-int", "interfaces": [name], "tag": tag, "vlan_mode": mode}}),
            format!("port {name} added"),
        );
        if mode == "trunk" {
            planted.push(Planted { name: "new VLAN mode", events: vec![i] });
        }
    }
    // Ledger order is time order.
    let mut order: Vec<usize> = (0..b.events.len()).collect();
    order.sort_by_key(|i| (b.events[*i].0, *i));
    let mut position = vec![0; order.len()];
    for (new, old) in order.iter().enumerate() {
        position[*old] = new;
    }
    let events = order.iter().map(|i| b.events[*i].1.clone()).collect();
    for p in &mut planted {
        p.events = p.events.iter().map(|i| position[*i]).collect();
    }
    Generated {
        events,
        planted,
        bond_probe: position[bond_probe],
        bond_history: bond_history.iter().map(|i| position[*i]).collect(),
        drift_event: position[drift_event],
    }
}

/// A VM's port life: added to br-int with its tag, its interface up; later down and removed.
/// Returns the indexes of its events.
fn vm_cycle(b: &mut Builder, name: &str, tag: u32, start: i64, stop: i64) -> Vec<usize> {
    let s = 1_000_000_000i64;
    let port = format!("port:{name}");
    let iface = format!("interface:{name}");
    vec![
        b.push(
            start,
            "bridge:br-int",
            "bridge",
            "port.added",
            Priority::Low,
            json!({"port": name}),
            format!("port {name} added to OVS bridge br-int"),
        ),
        b.push(
            start + s,
            &port,
            "ovs-port",
            "row.added",
            Priority::Low,
            json!({"after": {"name": name, "bridge": "br-int", "interfaces": [name], "tag": tag, "vlan_mode": "access"}}),
            format!("OVS port {name} added on bridge br-int (tag {tag})"),
        ),
        b.push(
            start + 2 * s,
            &iface,
            "interface",
            "link.up",
            Priority::Low,
            json!({"before": {"link_state": "down"}, "after": {"link_state": "up"}, "changed": ["link_state"]}),
            format!("{name}: link up"),
        ),
        b.push(
            stop,
            &iface,
            "interface",
            "link.down",
            Priority::Low,
            json!({"before": {"link_state": "up"}, "after": {"link_state": "down"}, "changed": ["link_state"]}),
            format!("{name}: link down"),
        ),
        b.push(
            stop + s,
            &port,
            "ovs-port",
            "row.removed",
            Priority::Low,
            json!({"before": {"name": name, "bridge": "br-int", "interfaces": [name], "tag": tag, "vlan_mode": "access"}}),
            format!("OVS port {name} removed from bridge br-int"),
        ),
        b.push(
            stop + 2 * s,
            "bridge:br-int",
            "bridge",
            "port.removed",
            Priority::Low,
            json!({"port": name}),
            format!("port {name} removed from OVS bridge br-int"),
        ),
    ]
}

/// bond0 loses a member; when `fails`, it goes down (critical) two minutes later and is back
/// after ten. Returns the index of the degradation event.
fn bond_failure(b: &mut Builder, ts: i64, fails: bool) -> usize {
    let min = 60 * 1_000_000_000i64;
    let degraded = b.push(
        ts,
        "interface:bond0",
        "interface",
        "bond.degraded",
        Priority::Medium,
        change("active_members", json!(["eth4", "eth5"]), json!(["eth5"])),
        "bond0 lost member eth4".into(),
    );
    if fails {
        b.push(
            ts + 2 * min,
            "interface:bond0",
            "interface",
            "state.changed",
            Priority::Critical,
            json!({"old_state": "activated", "new_state": "failed", "reason": "dependency-failed"}),
            "bond0: activated → failed".into(),
        );
        b.push(
            ts + 12 * min,
            "interface:bond0",
            "interface",
            "state.changed",
            Priority::Medium,
            json!({"old_state": "failed", "new_state": "activated", "reason": "none"}),
            "bond0: failed → activated".into(),
        );
    }
    degraded
}
