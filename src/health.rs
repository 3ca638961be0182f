//! Whether each stage of the pipeline is moving, and if not since when and why. Stages
//! report here; `GetBlockchainStats`, `status` and `doctor` read it, and each change from
//! moving to stalled and back is also recorded in the ledger by the stage that saw it.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// One stage's condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageHealth {
    /// `ok`, or `stalled` when the stage cannot make progress and retries.
    pub state: &'static str,
    /// When the current state began (Unix nanoseconds).
    pub since_unix_ns: i64,
    /// Why it is stalled (empty when ok).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How many times the stage stalled since start.
    pub stalls: u64,
}

/// What a stall report changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// Nothing: it was already in that state (a stall's reason is updated).
    None,
    /// It just stalled.
    Stalled,
    /// It moves again after a stall that began at `since_unix_ns`.
    Resumed { since_unix_ns: i64, reason: String },
}

#[derive(Default)]
pub struct Health {
    stages: Mutex<BTreeMap<String, StageHealth>>,
}

impl Health {
    /// Marks `stage` stalled for `reason`.
    pub fn stalled(&self, stage: &str, reason: impl Into<String>) -> Transition {
        let mut stages = self.stages.lock().expect("health lock");
        let entry = stages.entry(stage.to_owned()).or_insert_with(|| StageHealth {
            state: "ok",
            since_unix_ns: crate::event::now_ns(),
            reason: String::new(),
            stalls: 0,
        });
        let reason = reason.into();
        if entry.state == "stalled" {
            entry.reason = reason;
            return Transition::None;
        }
        *entry = StageHealth { state: "stalled", since_unix_ns: crate::event::now_ns(), reason, stalls: entry.stalls + 1 };
        Transition::Stalled
    }

    /// Marks `stage` as moving.
    pub fn ok(&self, stage: &str) -> Transition {
        let mut stages = self.stages.lock().expect("health lock");
        match stages.get_mut(stage) {
            Some(entry) if entry.state == "stalled" => {
                let since = entry.since_unix_ns;
                let reason = std::mem::take(&mut entry.reason);
                entry.state = "ok";
                entry.since_unix_ns = crate::event::now_ns();
                Transition::Resumed { since_unix_ns: since, reason }
            }
            Some(_) => Transition::None,
            None => {
                stages.insert(
                    stage.to_owned(),
                    StageHealth { state: "ok", since_unix_ns: crate::event::now_ns(), reason: String::new(), stalls: 0 },
                );
                Transition::None
            }
        }
    }

    /// Every stage's condition, by name.
    /// A stage that no longer exists (a replica removed by a reload).
    pub fn forget(&self, stage: &str) {
        self.stages.lock().expect("health lock").remove(stage);
    }

    pub fn report(&self) -> BTreeMap<String, StageHealth> {
        self.stages.lock().expect("health lock").clone()
    }

    /// The stalled stages, by name.
    pub fn stalled_stages(&self) -> Vec<(String, StageHealth)> {
        self.report().into_iter().filter(|(_, h)| h.state == "stalled").collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_reported_once() {
        let h = Health::default();
        assert_eq!(h.ok("index"), Transition::None);
        assert_eq!(h.stalled("index", "disk full"), Transition::Stalled);
        assert_eq!(h.stalled("index", "still full"), Transition::None);
        assert_eq!(h.stalled_stages()[0].1.reason, "still full");
        assert!(matches!(h.ok("index"), Transition::Resumed { reason, .. } if reason == "still full"));
        assert_eq!(h.ok("index"), Transition::None);
        assert_eq!(h.report()["index"].stalls, 1);
    }
}
