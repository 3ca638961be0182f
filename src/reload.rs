//! What a reload (`SIGHUP`, `systemctl reload`) may change in a running primary, read by
//! comparing the configuration it runs with against the file as it is now. Applied live: the
//! replica list (replicas added, removed, or changed — restarted with their new settings),
//! the snapshot trigger policy (`stream` delays and batch size) and the priority overrides
//! (`sources.priorities`). Refused, with the reason: a different data directory, role or
//! model, which would mean another history or other vectors. Anything else that differs
//! is named as needing a restart and otherwise left as it runs.

use crate::config::{Config, ReplicaConfig, StreamConfig};
use std::path::PathBuf;

/// Where the daemon's configuration came from, to read it again.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// Given with `--config` (must exist), or the default path (may be absent: defaults).
    pub required: bool,
}

impl ConfigFile {
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(&self.path, self.required)
    }
}

/// The changes a reload applies.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    pub replicas_added: Vec<ReplicaConfig>,
    pub replicas_removed: Vec<String>,
    /// Replicas whose settings changed: their workers start again with the new ones.
    pub replicas_changed: Vec<ReplicaConfig>,
    /// The new trigger policy, when it changed.
    pub trigger: Option<StreamConfig>,
    pub priorities_changed: bool,
    /// Sections that differ but take effect only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// What reloading from `running` to `new` changes, or why it is refused.
    pub fn between(running: &Config, new: &Config) -> Result<Self, String> {
        let refuse = |what: &str, from: String, to: String| Err(format!("{what} would change from {from} to {to}; that needs a restart"));
        if running.agent.data_dir != new.agent.data_dir {
            return refuse("agent.data_dir", running.agent.data_dir.display().to_string(), new.agent.data_dir.display().to_string());
        }
        if running.agent.role != new.agent.role {
            return refuse("agent.role", running.agent.role.as_str().into(), new.agent.role.as_str().into());
        }
        let (old_model, new_model) = (&running.embedding, &new.embedding);
        if old_model.model_dir != new_model.model_dir || old_model.runtime_library != new_model.runtime_library {
            return refuse(
                "the model",
                format!("{} ({})", old_model.model_dir.display(), old_model.runtime_library.display()),
                format!("{} ({})", new_model.model_dir.display(), new_model.runtime_library.display()),
            );
        }
        let mut plan = ReloadPlan::default();
        let (old, now) = (&running.stream.replicas, &new.stream.replicas);
        for replica in now {
            match old.iter().find(|r| r.name == replica.name) {
                None => plan.replicas_added.push(replica.clone()),
                Some(was) if was != replica => plan.replicas_changed.push(replica.clone()),
                Some(_) => {}
            }
        }
        plan.replicas_removed = old.iter().filter(|r| !now.iter().any(|n| n.name == r.name)).map(|r| r.name.clone()).collect();
        if trigger_policy(&running.stream) != trigger_policy(&new.stream) {
            plan.trigger = Some(new.stream.clone());
        }
        plan.priorities_changed = running.sources.priorities != new.sources.priorities;
        let mut sources = new.sources.clone();
        sources.priorities = running.sources.priorities.clone();
        let mut agent = new.agent.clone();
        agent.data_dir = running.agent.data_dir.clone();
        let sections: [(&'static str, bool); 7] = [
            ("agent", agent != running.agent),
            ("ledger", new.ledger != running.ledger),
            ("embedding", new.embedding != running.embedding),
            ("vector", new.vector != running.vector),
            ("sources", sources != running.sources),
            ("stream.enabled", new.stream.enabled != running.stream.enabled),
            ("replica", new.replica != running.replica),
        ];
        plan.needs_restart = sections.into_iter().filter(|(_, differs)| *differs).map(|(name, _)| name).collect();
        Ok(plan)
    }

    /// `running` with what this plan applies (what runs after the reload).
    pub fn applied_to(&self, running: &Config, new: &Config) -> Config {
        let mut now = running.clone();
        // The replicas and the trigger policy as the file has them; `enabled` waits for a restart.
        now.stream = StreamConfig { enabled: running.stream.enabled, ..new.stream.clone() };
        now.sources.priorities = new.sources.priorities.clone();
        now
    }

    /// What changed, for the `config.reloaded` event.
    pub fn details(&self, new: &Config) -> serde_json::Value {
        let names = |rs: &[ReplicaConfig]| rs.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        let mut d = serde_json::json!({
            "replicas_added": names(&self.replicas_added),
            "replicas_removed": self.replicas_removed,
            "replicas_changed": names(&self.replicas_changed),
        });
        if let Some(p) = &self.trigger {
            d["trigger_delays_ms"] = serde_json::json!({"critical": p.critical_delay_ms, "high": p.high_delay_ms, "medium": p.medium_delay_ms, "low": p.low_delay_ms});
            d["batch_events"] = p.batch_events.into();
        }
        if self.priorities_changed {
            d["priorities"] = serde_json::to_value(&new.sources.priorities).unwrap_or_default();
        }
        if !self.needs_restart.is_empty() {
            d["needs_restart"] = serde_json::json!(self.needs_restart);
        }
        d
    }

    /// True when the reload changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.replicas_added.is_empty()
            && self.replicas_removed.is_empty()
            && self.replicas_changed.is_empty()
            && self.trigger.is_none()
            && !self.priorities_changed
    }
}

/// The parts of the stream settings that decide when a snapshot is taken.
fn trigger_policy(s: &StreamConfig) -> [u64; 5] {
    [s.critical_delay_ms, s.high_delay_ms, s.medium_delay_ms, s.low_delay_ms, s.batch_events]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Role, Transport};

    fn replica(name: &str, dir: &str) -> ReplicaConfig {
        let text = format!("[[stream.replicas]]\nname = \"{name}\"\ntransport = \"local\"\nremote_dir = \"{dir}\"\n");
        let config: Config = toml::from_str(&text).unwrap();
        let r = config.stream.replicas[0].clone();
        assert_eq!(r.transport, Transport::Local);
        r
    }

    fn with_replicas(replicas: Vec<ReplicaConfig>) -> Config {
        let mut c = Config::default();
        c.stream.replicas = replicas;
        c
    }

    #[test]
    fn replicas_are_added_removed_and_changed_by_name() {
        let running = with_replicas(vec![replica("a", "/r/a"), replica("b", "/r/b"), replica("c", "/r/c")]);
        let new = with_replicas(vec![replica("a", "/r/a"), replica("b", "/r/b2"), replica("d", "/r/d")]);
        let plan = ReloadPlan::between(&running, &new).unwrap();
        assert_eq!(plan.replicas_added, vec![replica("d", "/r/d")]);
        assert_eq!(plan.replicas_removed, vec!["c".to_owned()]);
        assert_eq!(plan.replicas_changed, vec![replica("b", "/r/b2")]);
        assert!(plan.trigger.is_none() && !plan.priorities_changed && plan.needs_restart.is_empty());
        assert!(ReloadPlan::between(&running, &running).unwrap().is_empty());
    }

    #[test]
    fn trigger_policy_and_priorities_apply_live_other_sections_wait_for_a_restart() {
        let running = Config::default();
        let mut new = Config::default();
        new.stream.medium_delay_ms = 50;
        new.sources.priorities.insert("link.down".into(), crate::event::Priority::Critical);
        new.ledger.max_batch += 1;
        let plan = ReloadPlan::between(&running, &new).unwrap();
        assert_eq!(plan.trigger.unwrap().medium_delay_ms, 50);
        assert!(plan.priorities_changed);
        assert_eq!(plan.needs_restart, vec!["ledger"], "priorities are not a restart of `sources`");
    }

    #[test]
    fn another_data_dir_role_or_model_is_refused() {
        let running = Config::default();
        let mut new = Config::default();
        new.agent.data_dir = "/elsewhere".into();
        assert!(ReloadPlan::between(&running, &new).unwrap_err().contains("agent.data_dir"));
        let mut new = Config::default();
        new.agent.role = Role::Replica;
        assert!(ReloadPlan::between(&running, &new).unwrap_err().contains("agent.role"));
        let mut new = Config::default();
        new.embedding.model_dir = "/other/model".into();
        assert!(ReloadPlan::between(&running, &new).unwrap_err().contains("the model"));
    }
}
