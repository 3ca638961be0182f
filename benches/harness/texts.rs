//! Realistic event sentences for benchmarks: varied, 35–65 tokens, unique when asked.

use rand::{Rng, SeedableRng, rngs::StdRng};

const KINDS: [&str; 6] = ["interface", "bridge", "ovs-port", "ovs-interface", "connection", "nm"];
const ACTIONS: [&str; 10] = [
    "link down",
    "link up",
    "state changed",
    "port added",
    "port removed",
    "settings updated",
    "error",
    "carrier lost",
    "mtu changed",
    "address added",
];
const STATES: [&str; 8] = ["activated", "disconnected", "unavailable", "failed", "prepare", "config", "ip config", "deactivating"];

/// Event sentence number `i`; with `unique` each one differs, otherwise they repeat often.
pub fn event_text(i: usize, unique: bool) -> String {
    let mut rng = StdRng::seed_from_u64(if unique { i as u64 } else { (i % 40) as u64 });
    let kind = KINDS[rng.gen_range(0..KINDS.len())];
    let name = format!("{}{}", ["eth", "veth", "br", "vnet", "tap"][rng.gen_range(0..5)], rng.gen_range(0..64));
    let action = ACTIONS[rng.gen_range(0..ACTIONS.len())];
    let (from, to) = (STATES[rng.gen_range(0..8)], STATES[rng.gen_range(0..8)]);
    let suffix = if unique { format!(" event {i}") } else { String::new() };
    format!(
        "{kind} {name}: {action}. {name} went from {from} to {to} after the {} was changed by the operator{suffix}. state: state {to}, mtu {}, carrier {}. recent: {}, {}",
        ["cable", "profile", "bridge", "port", "address"][rng.gen_range(0..5)],
        [1500, 9000, 1400][rng.gen_range(0..3)],
        rng.gen_bool(0.5),
        ACTIONS[rng.gen_range(0..ACTIONS.len())],
        ACTIONS[rng.gen_range(0..ACTIONS.len())],
    )
}

pub const QUERIES: [&str; 12] = [
    "interface lost its link",
    "bridge configuration problems",
    "port added to an OVS bridge",
    "connection MTU changed",
    "device failed to activate",
    "carrier lost on ethernet",
    "ovs interface reports an error",
    "network connectivity went down",
    "address assigned to interface",
    "port removed from bridge",
    "profile settings modified by operator",
    "link flapping up and down",
];
