//! A replica host that keeps many primaries' histories: `replica-receive --origin NAME`
//! writes each into `DIR/origins/NAME`, and the daemon serves them all — one serving store
//! and graph per origin (a new snapshot of one origin costs what arrived for it, and never
//! holds up another's queries), one query model for all. `DIR` itself may hold one more
//! origin (the single-primary layout, as before origins existed).
//!
//! Reads take the origins they cover (`OriginSelect`); a search is planned and embedded
//! once, answered by each origin's store, and merged by score; every answer says, per
//! origin, which verified head it comes from.

use super::ReplicaView;
use crate::config::Config;
use crate::embed::QueryEmbedder;
use crate::failure::{Invalid, Stale};
use crate::index::EventRow;
use crate::names::{check_origin_name, origin_object_path};
use crate::search::{Answer, Depth, Freshness, Hit, Scoring};
use crate::stream::receive::{self, ORIGINS_DIR};
use crate::vector::Filters;
use anyhow::{Result, anyhow};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The key of the view of `DIR` itself (its origin's name is in its MANIFEST).
const BASE: &str = "";

/// Which origins a read covers, and how fresh their copies must be.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OriginSelect {
    /// Host names; empty means every origin.
    pub hosts: Vec<String>,
    /// Read-your-writes: the answer must include this seq of the (one) selected origin; the
    /// daemon waits up to `wait_ms` for a snapshot that covers it.
    pub min_seq: Option<u64>,
    /// Origins whose snapshot is older than this are left out (and named in the notes).
    pub max_staleness_ms: Option<u64>,
    pub wait_ms: u64,
    /// Search each of several origins as deep as a search of one (slower; see
    /// [`Depth::merged`]).
    pub thorough: bool,
}

/// What a D-Bus object of a replica serves: every origin, or one.
#[derive(Clone)]
pub struct Scope {
    pub fleet: Arc<Fleet>,
    pub only: Option<String>,
}

pub struct Fleet {
    base: PathBuf,
    config: Config,
    queries: Arc<QueryEmbedder>,
    /// By origin directory name (`BASE` for `DIR` itself).
    views: RwLock<BTreeMap<String, Arc<ReplicaView>>>,
    /// The last error opening each origin that could not be opened (logged once each).
    failed: Mutex<HashMap<String, String>>,
    /// Reads running at once across all origins (each search reads every origin's store).
    pub slots: tokio::sync::Semaphore,
    /// Bumped whenever an origin takes in a snapshot or appears (reads waiting for a seq).
    changed: tokio::sync::watch::Sender<u64>,
    /// Reads waiting for a `min_seq` at once.
    pub waiting: tokio::sync::Semaphore,
}

/// Reads that may wait for a `min_seq` at once; more are told the replica is busy.
const MAX_WAITING: usize = 64;

/// One origin's row in `Hosts()` and the stats.
#[derive(Debug, Clone, Serialize)]
pub struct OriginReport {
    #[serde(flatten)]
    pub freshness: Freshness,
    pub object_path: String,
    pub events: u64,
    /// `healthy`, or `refusing` when its newest stream was refused (see `rejected_snapshots`).
    pub health: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_snapshots: Vec<serde_json::Value>,
}

impl Fleet {
    /// Opens the serving stores of `base` (when it holds an origin, or no `origins/` yet)
    /// and of every `base/origins/NAME`.
    pub fn open(base: &Path, config: &Config) -> Result<Self> {
        let fleet = Self {
            base: base.to_owned(),
            config: config.clone(),
            queries: Arc::new(QueryEmbedder::load(&config.embedding)?),
            views: RwLock::default(),
            failed: Mutex::default(),
            slots: tokio::sync::Semaphore::new(crate::search::CONCURRENT_SEARCHES),
            changed: tokio::sync::watch::channel(0).0,
            waiting: tokio::sync::Semaphore::new(MAX_WAITING),
        };
        let single_layout = receive::state_file(base).exists() || !base.join(ORIGINS_DIR).is_dir();
        if single_layout {
            let view = ReplicaView::open(base, config, fleet.queries.clone())?;
            fleet.views.write().expect("fleet lock").insert(BASE.to_owned(), Arc::new(view));
        }
        fleet.rescan();
        Ok(fleet)
    }

    pub fn base(&self) -> &Path {
        &self.base
    }

    /// Opens origins that appeared under `origins/` since; returns their names.
    pub fn rescan(&self) -> Vec<String> {
        let mut added = Vec::new();
        for name in self.origin_dirs() {
            if self.views.read().expect("fleet lock").contains_key(&name) {
                continue;
            }
            // An origin's directory exists before its first snapshot is verified.
            let dir = receive::origin_dir(&self.base, &name);
            if receive::ReplicaState::load(&dir).newest.is_none() {
                continue;
            }
            match ReplicaView::open(&dir, &self.config, self.queries.clone()) {
                Ok(view) => {
                    tracing::info!(origin = %name, "serving a new origin");
                    self.failed.lock().expect("fleet lock").remove(&name);
                    self.views.write().expect("fleet lock").insert(name.clone(), Arc::new(view));
                    self.changed.send_modify(|n| *n += 1);
                    added.push(name);
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    if self.failed.lock().expect("fleet lock").insert(name.clone(), error.clone()).as_ref() != Some(&error) {
                        tracing::warn!(origin = %name, error = %error, "cannot serve this origin yet");
                    }
                }
            }
        }
        added
    }

    /// Takes in each origin's newest verified snapshot; returns the origins that switched.
    pub fn refresh(&self) -> Vec<String> {
        let views: Vec<(String, Arc<ReplicaView>)> =
            self.views.read().expect("fleet lock").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut switched = Vec::new();
        for (key, view) in views {
            match view.refresh() {
                Ok(true) => {
                    self.changed.send_modify(|n| *n += 1);
                    switched.push(Self::label(&key, &view));
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(origin = %key, error = %format!("{e:#}"), "could not take in the newest snapshot; still serving the previous one")
                }
            }
        }
        switched
    }

    /// Wakes when an origin took in a snapshot or appeared.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The receive directories watched for new snapshots.
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.views.read().expect("fleet lock").values().map(|v| v.dir().to_owned()).collect()
    }

    /// An origin's name: its directory's, or for `DIR` itself the host in its MANIFEST.
    fn label(key: &str, view: &ReplicaView) -> String {
        if key != BASE {
            return key.to_owned();
        }
        view.current().map(|c| c.manifest.host.clone()).unwrap_or_default()
    }

    /// Every origin with a verified snapshot, by name. `DIR`'s own copy is named by its
    /// MANIFEST, which no key pins: an origin of that name under `origins/` (pinned by its
    /// key) wins, and a name that is not a valid origin name is not served.
    fn served(&self) -> BTreeMap<String, Arc<ReplicaView>> {
        let views = self.views.read().expect("fleet lock");
        let mut served: BTreeMap<String, Arc<ReplicaView>> =
            views.iter().filter(|(k, v)| k.as_str() != BASE && v.current().is_ok()).map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(base) = views.get(BASE).filter(|v| v.current().is_ok()) {
            let name = Self::label(BASE, base);
            if check_origin_name(&name).is_ok() && !served.contains_key(&name) {
                served.insert(name, base.clone());
            }
        }
        served
    }

    /// The names of the origins served now.
    pub fn names(&self) -> Vec<String> {
        self.served().into_keys().collect()
    }

    /// The origins a read covers: `only` (a per-origin object), else the selected hosts, else
    /// all. Unknown names are an error naming the known ones.
    pub fn select(&self, only: Option<&str>, hosts: &[String]) -> Result<Vec<(String, Arc<ReplicaView>)>> {
        let served = self.served();
        if served.is_empty() {
            return Err(anyhow!("no verified snapshot has arrived in {} yet", self.base.display()));
        }
        let wanted: Vec<&str> = match only {
            Some(name) if hosts.iter().any(|h| h != name) => {
                return Err(Invalid(format!("this object serves host {name} only; ask /dev/ovs/PortAgent1 for others")).into());
            }
            Some(name) => vec![name],
            None if hosts.is_empty() => return Ok(served.into_iter().collect()),
            None => hosts.iter().map(String::as_str).collect(),
        };
        let mut out = Vec::new();
        for name in wanted {
            match served.get(name) {
                Some(view) => out.push((name.to_owned(), view.clone())),
                None => {
                    return Err(Invalid(format!(
                        "this replica holds no host {name:?} (it holds: {})",
                        served.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                    .into());
                }
            }
        }
        Ok(out)
    }

    /// The one origin an analysis runs on: `only`, or the only origin served.
    pub fn single(&self, only: Option<&str>) -> Result<Arc<ReplicaView>> {
        let selected = self.select(only, &[])?;
        if selected.len() > 1 {
            let paths: Vec<String> = selected.iter().map(|(name, _)| origin_object_path(name)).collect();
            return Err(Invalid(format!(
                "this replica holds {} hosts; ask one host's object for this: {}",
                selected.len(),
                paths.join(", ")
            ))
            .into());
        }
        Ok(selected.into_iter().next().expect("select never answers empty").1)
    }

    /// How fresh an origin's copy is now.
    pub fn freshness(name: &str, view: &ReplicaView) -> Option<Freshness> {
        let current = view.current().ok()?;
        let m = &current.manifest;
        let snapshot_unix_ms = m.created_unix_ns / 1_000_000;
        Some(Freshness {
            host: name.to_owned(),
            host_id: m.checkpoint_key.clone().unwrap_or_default(),
            head_seq: m.head_seq,
            head_hash: m.head_hash.clone(),
            vectorized_seq: view.vectorized_seq(),
            snapshot: current.name.clone(),
            snapshot_unix_ms,
            age_ms: (crate::event::now_ns() / 1_000_000 - snapshot_unix_ms).max(0),
        })
    }

    /// Whether the selected origins satisfy `min_seq` now (the caller waits and asks again).
    pub fn covers(&self, only: Option<&str>, select: &OriginSelect) -> Result<bool> {
        covered(&self.select(only, &select.hosts)?, select.min_seq)
    }

    /// The origins of a read, with the freshness required checked: a `min_seq` not covered
    /// is an error; origins older than `max_staleness_ms` are left out with a note (an error
    /// when that leaves none).
    fn fresh_enough(&self, only: Option<&str>, select: &OriginSelect, notes: &mut Vec<String>) -> Result<Vec<(String, Arc<ReplicaView>)>> {
        let selected = self.select(only, &select.hosts)?;
        if !covered(&selected, select.min_seq)? {
            let (name, view) = &selected[0];
            let head = view.current().map(|c| c.manifest.head_seq).unwrap_or(0);
            return Err(Stale(format!(
                "host {name}: seq {} is not on this replica yet (its verified head is {head}; waited {} ms)",
                select.min_seq.unwrap_or(0),
                select.wait_ms
            ))
            .into());
        }
        let Some(bound) = select.max_staleness_ms else { return Ok(selected) };
        let mut fresh = Vec::new();
        for (name, view) in selected {
            match Self::freshness(&name, &view).map(|f| f.age_ms) {
                Some(age) if age as u64 <= bound => fresh.push((name, view)),
                age => notes.push(format!(
                    "host {name} left out: its newest snapshot is {} ms old, more than max_staleness_ms {bound}",
                    age.unwrap_or(0)
                )),
            }
        }
        if fresh.is_empty() {
            return Err(Stale(format!("no host's copy is fresher than {bound} ms: {}", notes.join("; "))).into());
        }
        Ok(fresh)
    }

    /// A search over the selected origins, merged by score.
    pub fn search(&self, only: Option<&str>, query: &str, limit: usize, filters: &Filters, select: &OriginSelect) -> Result<Answer> {
        let mut left_out = Vec::new();
        let selected = self.fresh_enough(only, select, &mut left_out)?;
        let plan = crate::search::plan(query, crate::event::now_ns(), crate::search::local_utc_offset())?;
        let vector = if plan.semantic.is_empty() { None } else { Some(self.queries.embed(&plan.semantic)?) };
        let several = selected.len() > 1;
        let depth = if several && !select.thorough { Depth::merged(limit) } else { Depth::full(limit) };
        let answers = answer_each(&selected, |view| view.answer(&plan, vector.as_deref(), limit, filters, depth));
        let mut merged = Answer::default();
        let mut hits: Vec<Hit> = Vec::new();
        for (i, ((name, view), answer)) in selected.iter().zip(answers).enumerate() {
            let mut answer = answer?;
            let (found, notes) = (std::mem::take(&mut answer.hits), std::mem::take(&mut answer.notes));
            let not_vectorized = answer.not_vectorized;
            if i == 0 {
                // What the query was taken to mean is the same for every origin.
                merged = Answer { not_vectorized: 0, ..answer };
            }
            merged.not_vectorized += not_vectorized;
            for note in notes {
                let note = if several && !plan.notes.contains(&note) { format!("host {name}: {note}") } else { note };
                if !merged.notes.contains(&note) {
                    merged.notes.push(note);
                }
            }
            hits.extend(found.into_iter().map(|h| Hit { host: Some(name.clone()), ..h }));
            merged.origins.extend(Self::freshness(name, view));
        }
        hits.sort_by(Hit::merged_order);
        if let Some(vector) = vector.as_deref().filter(|_| depth.scoring != Scoring::Stored) {
            // Equal rank scores (each origin's first hit, say) are ordered by similarity:
            // every hit that can still make the answer gets its exact one before the cut.
            let boundary = hits.get(limit.saturating_sub(1)).map_or(f32::MIN, |h| h.score);
            let contenders = hits.iter().take_while(|h| h.score >= boundary).count();
            exact_semantic_scores(&selected, vector, &mut hits[..contenders])?;
            hits.sort_by(Hit::merged_order);
        }
        hits.truncate(limit);
        merged.hits = hits;
        merged.notes.extend(left_out);
        Ok(merged)
    }

    /// An element's newest events across the selected origins, newest first.
    pub fn history(&self, only: Option<&str>, element_id: &str, limit: usize, select: &OriginSelect) -> Result<Vec<FromHost<EventRow>>> {
        let mut notes = Vec::new();
        let mut rows = Vec::new();
        for (name, view) in self.fresh_enough(only, select, &mut notes)? {
            rows.extend(view.history(element_id, limit)?.into_iter().map(|row| FromHost { host: name.clone(), item: row }));
        }
        rows.sort_by(|a, b| b.item.ts.cmp(&a.item.ts).then_with(|| a.host.cmp(&b.host)));
        rows.truncate(limit);
        Ok(rows)
    }

    /// Each origin served (or `only`), for `Hosts()` and the stats; with every origin, also
    /// those whose directory holds no verified snapshot yet (refused streams, say why).
    pub fn report(&self, only: Option<&str>) -> Result<Vec<OriginReport>> {
        let mut out = Vec::new();
        if only.is_none() {
            out.extend(self.waiting_origins());
        }
        let selected = match self.select(only, &[]) {
            Ok(selected) => selected,
            Err(_) if only.is_none() && !out.is_empty() => Vec::new(),
            Err(e) => return Err(e),
        };
        for (name, view) in selected {
            let Some(freshness) = Self::freshness(&name, &view) else { continue };
            let rejected = view.rejections();
            // A refusal after the last verified snapshot (both by this host's clock): the
            // origin is not advancing.
            let verified_ns = std::fs::metadata(receive::state_file(view.dir()))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64);
            let refusing = rejected.last().and_then(|r| r["unix_ns"].as_i64()).is_some_and(|ns| ns > verified_ns);
            out.push(OriginReport {
                object_path: origin_object_path(&name),
                events: view.counts()?.0,
                health: if refusing { "refusing" } else { "healthy" }.into(),
                rejected_snapshots: rejected,
                freshness,
            });
        }
        Ok(out)
    }
}

impl Fleet {
    /// The names of the origin directories under `origins/`, sorted (valid names only).
    fn origin_dirs(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.base.join(ORIGINS_DIR)) else { return Vec::new() };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| check_origin_name(n).is_ok())
            .collect();
        names.sort();
        names
    }

    /// Origins whose directory exists but which serve nothing yet (no verified snapshot).
    fn waiting_origins(&self) -> Vec<OriginReport> {
        let served = self.served();
        self.origin_dirs()
            .into_iter()
            .filter(|n| !served.contains_key(n))
            .map(|name| {
                let rejected = receive::recent_rejections(&receive::origin_dir(&self.base, &name), 5);
                OriginReport {
                    freshness: Freshness { host: name, ..Default::default() },
                    object_path: String::new(),
                    events: 0,
                    health: if rejected.is_empty() { "no verified snapshot yet" } else { "refusing" }.into(),
                    rejected_snapshots: rejected,
                }
            })
            .collect()
    }
}

/// Whether the selected origins hold `min_seq` (one origin's seq: exactly one must be
/// selected); no `min_seq` is always covered.
fn covered(selected: &[(String, Arc<ReplicaView>)], min_seq: Option<u64>) -> Result<bool> {
    let Some(min_seq) = min_seq else { return Ok(true) };
    if selected.len() != 1 {
        return Err(Invalid(format!("min_seq is one origin's seq: name one host (this replica holds {})", selected.len())).into());
    }
    Ok(selected[0].1.current().is_ok_and(|c| c.manifest.head_seq >= min_seq))
}

/// Replaces the semantic similarities of hits found from the graph's 8-bit copies
/// ([`Scoring::Codes`]) with the exact ones, read from each hit's origin: the similarity an
/// answer shows for an event is the same whichever way it was searched.
fn exact_semantic_scores(selected: &[(String, Arc<ReplicaView>)], vector: &[f32], hits: &mut [Hit]) -> Result<()> {
    for (name, view) in selected {
        let seqs: Vec<u64> = hits.iter().filter(|h| h.host.as_ref() == Some(name) && h.why.semantic.is_some()).map(|h| h.seq).collect();
        if seqs.is_empty() {
            continue;
        }
        let exact: HashMap<u64, f32> = view.exact_similarities(vector, &seqs)?.into_iter().collect();
        for hit in hits.iter_mut().filter(|h| h.host.as_ref() == Some(name)) {
            if let (Some(score), Some(_)) = (exact.get(&hit.seq), hit.why.semantic) {
                hit.why.semantic = Some(*score);
            }
        }
    }
    Ok(())
}

/// Runs `f` on each origin's view, spread over the cores (each origin's store and graph are
/// its own, so they answer side by side); the answers in the order of `views`.
fn answer_each<T: Send>(views: &[(String, Arc<ReplicaView>)], f: impl Fn(&ReplicaView) -> Result<T> + Sync) -> Vec<Result<T>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(views.len());
    if workers <= 1 {
        return views.iter().map(|(_, v)| f(v)).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = views
            .chunks(views.len().div_ceil(workers))
            .map(|chunk| scope.spawn(move || chunk.iter().map(|(_, v)| f(v)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// A row of one origin's, with the origin's name.
#[derive(Debug, Clone, Serialize)]
pub struct FromHost<T> {
    pub host: String,
    #[serde(flatten)]
    pub item: T,
}
