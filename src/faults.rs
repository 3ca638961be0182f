//! Fault injection for the fault tests: named points that fire once when the environment
//! variable `OVS_PORT_AGENT_FAULTS` lists them (comma-separated). Without the variable
//! nothing fires; the cost is one look at an empty list.

use std::sync::{Mutex, OnceLock};

/// The environment variable naming the points to fire.
pub const FAULTS_ENV: &str = "OVS_PORT_AGENT_FAULTS";

fn armed() -> &'static Mutex<Vec<String>> {
    static ARMED: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let list = std::env::var(FAULTS_ENV).unwrap_or_default();
        Mutex::new(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
    })
}

/// True the first time `point` is reached when it is armed; false otherwise.
pub fn fire(point: &str) -> bool {
    let mut armed = armed().lock().expect("faults lock");
    match armed.iter().position(|p| p == point) {
        Some(i) => {
            armed.remove(i);
            tracing::warn!(point, "injected fault fires");
            true
        }
        None => false,
    }
}
