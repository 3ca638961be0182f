//! The `dev.ovs.PortAgent1` object: checks arguments, calls the engine, maps errors.
//! Heavy work (embedding, search, verification) runs off the executor inside the engine.

use super::args;
use super::backend::{Backend, Reporting, VerifyGate};
use super::error::AgentError;
use super::fairness::Admitted;
use crate::analytics;
use crate::config::Role;
use crate::event::{NewEvent, element_type_of};
use crate::metrics::LatencyRing;
use crate::replica::OriginSelect;
use crate::stream::streamer::StreamHandle;
use crate::vector::Filters;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use zbus::message::Header;
use zbus::names::UniqueName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::OwnedValue;
use zbus::{Connection, interface};

pub const BUS_NAME: &str = "dev.ovs.PortAgent1";

pub const OBJECT_PATH: &str = "/dev/ovs/PortAgent1";

pub struct PortAgent {
    backend: Backend,
    stream: Option<Arc<StreamHandle>>,
    reporting: Reporting,
    role: Role,
    verify: VerifyGate,
    search_latency: LatencyRing,
    record_latency: LatencyRing,
}

impl PortAgent {
    pub fn new(backend: Backend, stream: Option<Arc<StreamHandle>>, reporting: Reporting) -> Self {
        let role = match backend {
            Backend::Primary(_) => Role::Primary,
            Backend::Replica(_) => Role::Replica,
        };
        Self {
            backend,
            stream,
            reporting,
            role,
            verify: VerifyGate::default(),
            search_latency: LatencyRing::new(4096),
            record_latency: LatencyRing::new(4096),
        }
    }

    /// Runs an analysis and returns its answer as JSON.
    async fn analyze<T: serde::Serialize + Send + 'static>(
        &self,
        header: &Header<'_>,
        f: impl FnOnce(&crate::index::Index, &crate::search::SearchState, &dyn Fn(&str) -> anyhow::Result<Arc<[f32]>>) -> anyhow::Result<T>
        + Send
        + 'static,
    ) -> Result<String, AgentError> {
        let admitted = self.admit(header).await?;
        let answer = self.backend.analyze(admitted.urgency(), f).await?;
        serde_json::to_string(&answer).map_err(AgentError::internal)
    }

    /// One more read that takes a search slot (a search, an analysis, history, stats) for
    /// the caller, within its share (`fairness`).
    async fn admit(&self, header: &Header<'_>) -> Result<Admitted, AgentError> {
        self.reporting.callers.admit(caller(header)?.as_str()).await
    }

    /// One more call for the caller, at its pace (`pacing`); every read member's first step.
    async fn pace(&self, header: &Header<'_>) -> Result<(), AgentError> {
        self.reporting.pacer.pace(caller(header)?.as_str()).await
    }

    async fn run_search(
        &self,
        header: &Header<'_>,
        query: &str,
        limit: usize,
        filters: Filters,
        select: OriginSelect,
    ) -> Result<String, AgentError> {
        self.check_primary_select(&select)?;
        self.backend.wait_until_fresh(&select).await?;
        let admitted = self.admit(header).await?;
        let started = Instant::now();
        let hits = self.backend.search(query, limit, filters, select, admitted.urgency()).await?;
        self.search_latency.record(started.elapsed());
        serde_json::to_string(&hits).map_err(AgentError::internal)
    }
}

/// Privileged members are root-only by bus policy; the daemon checks again, so that a
/// permissive bus configuration does not open them up.
impl PortAgent {
    /// A primary holds one host, its own, always at its head: a `hosts` option must name it.
    fn check_primary_select(&self, select: &OriginSelect) -> Result<(), AgentError> {
        if !matches!(self.backend, Backend::Primary(_)) {
            return Ok(());
        }
        let host = &self.reporting.host;
        if !select.hosts.is_empty() && !select.hosts.contains(host) {
            return Err(AgentError::invalid(format!("this daemon is the primary of host {host:?} and holds no other host")));
        }
        let head = self.backend.head().0;
        match select.min_seq {
            Some(seq) if seq > head => Err(AgentError::Stale(format!("seq {seq} is beyond this primary's head {head}"))),
            _ => Ok(()),
        }
    }
}

/// The caller's unique bus name.
fn caller<'h, 'm>(header: &'h Header<'m>) -> Result<&'h UniqueName<'m>, AgentError> {
    header.sender().ok_or_else(|| AgentError::AccessDenied("caller has no bus name".into()))
}

async fn require_root(conn: &Connection, header: &Header<'_>) -> Result<(), AgentError> {
    let sender = caller(header)?;
    let dbus = zbus::fdo::DBusProxy::new(conn).await.map_err(AgentError::internal)?;
    let uid = dbus.get_connection_unix_user(sender.clone().into()).await.map_err(AgentError::internal)?;
    if uid != 0 {
        return Err(AgentError::AccessDenied(format!("only root may call this member (caller uid {uid})")));
    }
    Ok(())
}

#[interface(name = "dev.ovs.PortAgent1")]
impl PortAgent {
    /// Liveness: answers "pong".
    async fn ping(&self, #[zbus(header)] header: Header<'_>) -> Result<String, AgentError> {
        self.pace(&header).await?;
        Ok("pong".into())
    }

    /// Natural-language search over all events; a JSON array of hits, best first.
    async fn semantic_search(&self, #[zbus(header)] header: Header<'_>, query: &str, limit: u32) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let query = args::query(query)?;
        let limit = args::limit(limit)?;
        self.run_search(&header, query, limit, Filters::default(), OriginSelect::default()).await
    }

    /// Search with filters: limit (u), element_id, element_type, action, source,
    /// min_priority (s), since_unix_ms, until_unix_ms (x); on a replica holding several
    /// hosts: hosts (as), and freshness: min_seq (t, with one host; waits up to wait_ms, u),
    /// max_staleness_ms (t); thorough (b): each of several hosts searched as deep as one.
    async fn search(
        &self,
        #[zbus(header)] header: Header<'_>,
        query: &str,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let query = args::query(query)?;
        let (filters, limit, select) = args::search_options(&options)?;
        self.run_search(&header, query, limit, filters, select).await
    }

    /// One element's events, newest first, with their details (before/after, changed).
    async fn get_element_history(&self, #[zbus(header)] header: Header<'_>, element_id: &str, limit: u32) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let element_id = args::element_id(element_id)?.to_owned();
        let limit = args::limit(limit)?;
        let _admitted = self.admit(&header).await?;
        let events = self.backend.history(element_id, limit, OriginSelect::default()).await?;
        serde_json::to_string(&events).map_err(AgentError::internal)
    }

    /// The hosts whose histories this daemon holds, each with its verified head (seq, hash),
    /// snapshot time and age, health and the object serving it alone.
    async fn hosts(&self, #[zbus(header)] header: Header<'_>) -> Result<String, AgentError> {
        // Paced, not admitted: it reads manifests, and a fleet search asks it on a connection
        // its concurrent searches share (it must not wait behind one of them).
        self.pace(&header).await?;
        let hosts = match &self.backend {
            Backend::Primary(_) => {
                let (head_seq, head_hash) = self.backend.head();
                json!([{
                    "host": self.reporting.host,
                    "head_seq": head_seq,
                    "head_hash": head_hash,
                    "vectorized_seq": self.backend.vectorized_seq(),
                    "age_ms": 0,
                    "object_path": OBJECT_PATH,
                    "health": if self.reporting.health.stalled_stages().is_empty() { "healthy" } else { "degraded" },
                }])
            }
            Backend::Replica(scope) => {
                let _slot = scope.fleet.slots.acquire().await.map_err(AgentError::internal)?;
                let scope = scope.clone();
                let report = tokio::task::spawn_blocking(move || scope.fleet.report(scope.only.as_deref()))
                    .await
                    .map_err(AgentError::internal)??;
                serde_json::to_value(report).map_err(AgentError::internal)?
            }
        };
        Ok(hosts.to_string())
    }

    /// Counts, head, vectorized seq, model, queue depths, latencies, uptime.
    async fn get_blockchain_stats(&self, #[zbus(header)] header: Header<'_>) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let mut stats = {
            let _admitted = self.admit(&header).await?;
            self.backend.stats().await?
        };
        let (head_seq, head_hash) = self.backend.head();
        let extra = json!({
            "role": self.role.as_str(),
            "head_seq": head_seq,
            "head_hash": head_hash,
            "vectorized_seq": self.backend.vectorized_seq(),
            "search_latency": self.search_latency.percentiles(),
            "record_latency": self.record_latency.percentiles(),
            "replicas": self.stream.as_ref().map(|s| s.report()).unwrap_or_default(),
            "health": self.reporting.health.report(),
            "tasks": self.reporting.tasks.lock().expect("task status lock").clone(),
            "anomalies": &*self.reporting.anomalies,
            "sources": self.reporting.sources.as_ref().map(|r| r.report()),
        });
        if let (Some(map), serde_json::Value::Object(more)) = (stats.as_object_mut(), extra) {
            map.extend(more);
        }
        Ok(stats.to_string())
    }

    /// Verifies the whole ledger: (intact, JSON report).
    #[zbus(out_args("intact", "report"))]
    async fn verify_chain(&self, #[zbus(header)] header: Header<'_>) -> Result<(bool, String), AgentError> {
        self.pace(&header).await?;
        let outcome = self.verify.verify(self.backend.ledger_dir()?).await?;
        // On a primary, an intact chain is also checked against the heads replicas cosigned
        // (a few records read, newest cosigned head first).
        let anchor = match (&self.backend, outcome.damage.is_none()) {
            (Backend::Primary(engine), true) => {
                let (root, data, ledger) = (engine.layout().root.clone(), engine.layout().data.clone(), engine.layout().ledger_dir());
                let held = outcome.state.head_seq;
                let judged = tokio::task::spawn_blocking(move || {
                    let witnesses = crate::anchor::audit::pinned_witnesses(&root)?;
                    crate::anchor::audit::judge(&ledger, held, &data.join(crate::anchor::checkpoint::DIR), &witnesses, true)
                })
                .await;
                match judged {
                    Ok(Ok(report)) => json!({"says": report.describe(), "report": report}),
                    Ok(Err(e)) => json!({"error": format!("{e:#}")}),
                    Err(e) => json!({"error": e.to_string()}),
                }
            }
            _ => serde_json::Value::Null,
        };
        let rewritten = !anchor["report"]["rewritten"].is_null();
        let report = json!({
            "intact": outcome.damage.is_none() && !rewritten,
            "head_seq": outcome.state.head_seq,
            "head_hash": hex::encode(outcome.state.head_hash),
            "segments": outcome.segments,
            "damage": &outcome.damage,
            "anchor": anchor,
        });
        // A partial last line under the running writer is a write in flight, not damage.
        Ok((outcome.damage.is_none() && !rewritten, report.to_string()))
    }

    /// Records a manual event (root only); returns its hash once it is durable.
    async fn record_event(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        element_id: &str,
        action: &str,
        details_json: &str,
        priority: &str,
    ) -> Result<String, AgentError> {
        let Backend::Primary(engine) = &self.backend else {
            return Err(AgentError::ReadOnly("this daemon is a replica; record events on the primary".into()));
        };
        let element_id = args::element_id(element_id)?;
        let priority = args::priority(priority)?;
        let details = args::details(details_json)?;
        require_root(conn, &header).await?;
        let summary = details.get("summary").and_then(|s| s.as_str()).map(str::to_owned);
        let mut event = NewEvent::new("dbus", element_id, action, priority, details);
        event.element_type = element_type_of(element_id).to_owned();
        if let Some(summary) = summary {
            event.summary = summary.chars().take(crate::event::MAX_SUMMARY_BYTES / 4).collect();
        }
        event.validate().map_err(|e| AgentError::invalid(e.0))?;
        let started = Instant::now();
        let records = engine.record(vec![event]).await?;
        self.record_latency.record(started.elapsed());
        Ok(records[0].hash_hex())
    }

    /// Search across the fleet's daemons ([fleet] in this daemon's config), over D-Bus over
    /// ssh: options as for Search, plus daemons (as) or fleet (s, a group), and deadline_ms
    /// (u). The answer merges the hits and says per daemon whether it answered, and per
    /// host which copy answered and how fresh it is.
    async fn fleet_search(
        &self,
        #[zbus(header)] header: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        query: &str,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let query = args::query(query)?;
        let (fleet, rest) = args::fleet_options(options)?;
        let (_, limit, select) = args::search_options(&rest)?;
        if select.min_seq.is_some() && select.hosts.len() != 1 {
            return Err(AgentError::invalid("min_seq is one host's seq: name exactly one in hosts"));
        }
        // The daemon's own keys reach the fleet: root only, whatever the bus's policy.
        require_root(conn, &header).await?;
        let access = &self.reporting.fleet;
        let hosts = access.config.resolve(&fleet.daemons, fleet.group.as_deref()).map_err(|e| AgentError::invalid(format!("{e:#}")))?;
        let deadline = std::time::Duration::from_millis(fleet.deadline_ms.unwrap_or(access.config.deadline_ms));
        let _slot =
            access.queries.try_acquire().map_err(|_| AgentError::Busy("fleet searches are running; try again when one ends".into()))?;
        let answer =
            crate::fanout::search(&hosts, query, &rest, limit, deadline, access.config.keep_connections_s, Some(&access.links)).await;
        serde_json::to_string(&answer).map_err(AgentError::internal)
    }

    /// Per replica: state (healthy, lagging, unreachable), acknowledged snapshot and seq,
    /// lag in events and seconds, last error, bytes sent. A JSON array.
    async fn get_replica_status(&self, #[zbus(header)] header: Header<'_>) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let report = self.stream.as_ref().map(|s| s.report()).unwrap_or_default();
        serde_json::to_string(&report).map_err(AgentError::internal)
    }

    /// Takes a snapshot now and sends it to every replica (root only).
    async fn sync_now(&self, #[zbus(header)] header: Header<'_>, #[zbus(connection)] conn: &Connection) -> Result<(), AgentError> {
        if self.role == Role::Replica {
            return Err(AgentError::ReadOnly("this daemon is a replica; SyncNow runs on the primary".into()));
        }
        require_root(conn, &header).await?;
        let stream = self.stream.as_ref().ok_or_else(|| {
            AgentError::Internal("streaming is off (the data directory is not on Btrfs, or stream.enabled = false)".into())
        })?;
        stream.sync_now.notify_waiters();
        Ok(())
    }

    /// The timeline of `window_ms` centred on `center_unix_ms`: events in order, grouped by
    /// element, the first critical one marked, what changed on each element. Options:
    /// element_id (s: that element and those related to it), limit (u, events).
    async fn get_timeline(
        &self,
        #[zbus(header)] header: Header<'_>,
        center_unix_ms: i64,
        window_ms: u64,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let options = args::timeline_options(&options)?;
        self.analyze(&header, move |index, search, _| {
            let catalog = search.catalog.read().expect("catalog lock");
            analytics::timeline::timeline(index, &catalog, center_unix_ms, window_ms, &options)
        })
        .await
    }

    /// The element's exact state at `at_unix_ms`, each field with the event that set it.
    async fn get_element_state(&self, #[zbus(header)] header: Header<'_>, element_id: &str, at_unix_ms: i64) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let element_id = args::element_id(element_id)?.to_owned();
        let at = args::ms_to_ns("at_unix_ms", at_unix_ms)?;
        self.analyze(&header, move |index, _, _| analytics::state::element_state(index, &element_id, at)).await
    }

    /// How the element changed since `since_unix_ms`: fields then → now with the event that
    /// set each (blame), and the fields that flapped, with counts.
    async fn analyze_configuration_drift(
        &self,
        #[zbus(header)] header: Header<'_>,
        element_id: &str,
        since_unix_ms: i64,
    ) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let element_id = args::element_id(element_id)?.to_owned();
        let since = args::ms_to_ns("since_unix_ms", since_unix_ms)?;
        let now = crate::event::now_ns();
        if since > now {
            return Err(AgentError::invalid("since_unix_ms is in the future"));
        }
        self.analyze(&header, move |index, _, _| analytics::state::drift(index, &element_id, since, now)).await
    }

    /// The present elements of the same type whose configuration is nearest this one's, with
    /// the fields shared and differing and each one's track record; the healthiest variant.
    async fn find_similar_configs(&self, #[zbus(header)] header: Header<'_>, element_id: &str, limit: u32) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let element_id = args::element_id(element_id)?.to_owned();
        let limit = args::limit(limit)?;
        let now = crate::event::now_ns();
        self.analyze(&header, move |index, _, embed| analytics::similar::similar_configs(index, &element_id, limit, now, embed)).await
    }

    /// The earlier events most like event `seq`, each with what followed on its element and
    /// how it ended (recovered, repeated, escalated).
    async fn find_similar_incidents(&self, #[zbus(header)] header: Header<'_>, seq: u64, limit: u32) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let limit = args::limit(limit)?;
        if seq == 0 {
            return Err(AgentError::invalid("seq starts at 1"));
        }
        self.analyze(&header, move |index, search, _| analytics::similar::similar_incidents(index, search, seq, limit)).await
    }

    /// What is unusual in the `window_ms` before now (or until_unix_ms): findings by rule
    /// (first_seen, burst, novelty, precursor), each with its score, threshold and evidence.
    /// Options: until_unix_ms (x), element_type (s), baseline_days (u), limit (u), rules (as).
    async fn detect_anomalies(
        &self,
        #[zbus(header)] header: Header<'_>,
        window_ms: u64,
        options: HashMap<String, OwnedValue>,
    ) -> Result<String, AgentError> {
        self.pace(&header).await?;
        let options = args::anomaly_options(&options, crate::event::now_ns())?;
        self.analyze(&header, move |index, search, _| analytics::anomaly::detect(index, search, window_ms, &options)).await
    }

    /// An event the live scorer found unusual (a finding as `DetectAnomalies` lists them);
    /// at most a few a second, the rest counted in `GetBlockchainStats`.
    #[zbus(signal)]
    pub async fn anomaly_detected(emitter: &SignalEmitter<'_>, json: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn replica_synced(emitter: &SignalEmitter<'_>, replica: &str, seq: u64) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn replica_failed(emitter: &SignalEmitter<'_>, replica: &str, error: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn event_recorded(emitter: &SignalEmitter<'_>, seq: u64, element_id: &str, action: &str, hash: &str) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn batch_vectorized(emitter: &SignalEmitter<'_>, through_seq: u64) -> zbus::Result<()>;

    #[zbus(property)]
    async fn head_seq(&self) -> u64 {
        self.backend.head().0
    }

    #[zbus(property)]
    async fn head_hash(&self) -> String {
        self.backend.head().1
    }

    #[zbus(property)]
    async fn vectorized_seq(&self) -> u64 {
        self.backend.vectorized_seq()
    }

    #[zbus(property)]
    async fn role(&self) -> String {
        self.role.as_str().to_owned()
    }
}
