//! Queries across daemons (`search --hosts a,b` / `--fleet NAME`): each daemon is asked over
//! D-Bus (over ssh, as `busctl --host` does), all within one deadline.
//!
//! 1. every daemon is asked which origins it holds (`Hosts()`: head seq and hash, age,
//!    health), concurrently, within half the deadline (one that stays silent costs that
//!    half, and the others still have the rest to search);
//! 2. each origin is given to the daemon holding the healthiest, least-lagging copy (the
//!    faster answer on a tie): that balances the load across replicas of one origin; two
//!    copies at the same seq with different hashes are a fork, reported;
//! 3. each daemon is asked to search only the origins given to it; when one fails, its
//!    origins go to their next copy (fail-over), while the deadline allows;
//! 4. the hits are merged by score; the answer says, per daemon, whether it answered, and
//!    per origin which copy answered, how fresh it is and how far behind the freshest copy
//!    seen.

mod link;

pub use crate::fleet::{FleetConfig, FleetHost, FleetTransport, MAX_DEADLINE_MS};
pub use link::Failure;

use crate::search::{Answer, Hit};
use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use link::Link;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zbus::zvariant::{OwnedValue, Value};

/// One copy of an origin, as a daemon's `Hosts()` lists it.
#[derive(Debug, Clone, Deserialize)]
struct Copy {
    host: String,
    head_seq: u64,
    head_hash: String,
    #[serde(default)]
    age_ms: i64,
    #[serde(default)]
    health: String,
}

/// What happened with one daemon.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DaemonReport {
    pub name: String,
    /// `answered`, `unreachable`, `refused`, `failed`, `timed out`, or `not needed` (its
    /// origins had fresher copies elsewhere).
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The origins it was asked to search.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub searched: Vec<String>,
}

/// How fresh one origin's part of the answer is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OriginReport {
    pub host: String,
    /// The daemon whose copy answered (none: no copy answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    pub head_seq: u64,
    pub head_hash: String,
    pub age_ms: i64,
    /// Events the answering copy lacks that the freshest copy seen holds.
    pub behind_events: u64,
    /// Daemons holding a copy.
    pub copies: usize,
    /// Two copies at one seq with different hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fork: Option<String>,
}

/// A hit, with the daemon that found it.
#[derive(Debug, Clone, Serialize)]
pub struct FleetHit {
    #[serde(flatten)]
    pub hit: Hit,
    pub via: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetAnswer {
    pub hits: Vec<FleetHit>,
    pub daemons: Vec<DaemonReport>,
    pub origins: Vec<OriginReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Whether every origin of every daemon asked is in the answer.
    pub complete: bool,
}

/// D-Bus connections kept from one query to the next (a daemon's `FleetSearch`), by fleet
/// host name: a query then costs its calls, not a session. A connection that fails is
/// dropped and made again by the next query.
#[derive(Default)]
pub struct LinkPool {
    links: std::sync::Mutex<HashMap<String, Arc<Link>>>,
}

impl LinkPool {
    fn get(&self, name: &str) -> Option<Arc<Link>> {
        self.links.lock().expect("link pool lock").get(name).cloned()
    }

    fn put(&self, name: &str, link: Arc<Link>) {
        self.links.lock().expect("link pool lock").insert(name.to_owned(), link);
    }

    fn remove(&self, name: &str) {
        self.links.lock().expect("link pool lock").remove(name);
    }
}

/// A daemon's state during one query.
struct Daemon<'a> {
    host: &'a FleetHost,
    link: Option<Arc<Link>>,
    report: DaemonReport,
}

fn status_of(failure: &Failure) -> &'static str {
    match failure {
        Failure::Unreachable(_) => "unreachable",
        Failure::Refused(_) => "refused",
        Failure::Failed(_) => "failed",
    }
}

/// Searches the origins held by `hosts`, within `deadline` in all. `options` are `Search`
/// options (limit, filters, freshness) passed to every daemon; a `hosts` option there
/// limits the origins searched; `limit` bounds the merged answer. Over ssh, connections are
/// kept `keep_connections_s` for the next queries (0: not kept).
pub async fn search(
    hosts: &[FleetHost],
    query: &str,
    options: &HashMap<String, OwnedValue>,
    limit: usize,
    deadline: Duration,
    keep_connections_s: u64,
    pool: Option<&LinkPool>,
) -> FleetAnswer {
    let reuse = (keep_connections_s > 0).then_some(keep_connections_s);
    let until = Instant::now() + deadline;
    let wanted_origins: Option<Vec<String>> = options.get("hosts").and_then(|v| Vec::<String>::try_from(v.try_clone().ok()?).ok());
    let mut daemons: Vec<Daemon> = hosts
        .iter()
        .map(|host| Daemon {
            host,
            link: None,
            report: DaemonReport { name: host.name.clone(), status: "timed out".into(), ms: None, error: None, searched: Vec::new() },
        })
        .collect();

    // 1. Which origins each daemon holds: within half the deadline, so that a daemon that
    // never answers leaves the others time to search.
    let listing_until = Instant::now() + deadline / 2;
    let listed = join_all(daemons.iter().map(|d| {
        tokio::time::timeout_at(listing_until, async move {
            let started = Instant::now();
            // A kept connection first; one that no longer answers is replaced once.
            let kept = match pool {
                Some(pool) => pool.get(&d.host.name),
                None => None,
            };
            let kept = match kept {
                Some(link) => link.call("Hosts", &()).await.ok().map(|text| (link, text)),
                None => None,
            };
            let (link, text) = match kept {
                Some(found) => found,
                None => {
                    let link = Arc::new(Link::open(d.host, reuse).await?);
                    let text = link.call("Hosts", &()).await?;
                    if let Some(pool) = pool {
                        pool.put(&d.host.name, link.clone());
                    }
                    (link, text)
                }
            };
            let copies: Vec<Copy> =
                serde_json::from_str(&text).map_err(|e| Failure::Failed(format!("Hosts() answered something else: {e}")))?;
            Ok::<_, Failure>((link, copies, started.elapsed()))
        })
    }))
    .await;
    let mut copies: BTreeMap<String, Vec<(usize, Copy, Duration)>> = BTreeMap::new();
    for (i, result) in listed.into_iter().enumerate() {
        let report = &mut daemons[i].report;
        // A kept connection to a daemon that did not list is not kept for the next query.
        if let (Some(pool), false) = (pool, matches!(result, Ok(Ok(_)))) {
            pool.remove(&report.name);
        }
        match result {
            Err(_) => {
                report.error = Some(format!("did not say what it holds within {} ms (half the deadline)", (deadline / 2).as_millis()))
            }
            Ok(Err(failure)) => {
                report.status = status_of(&failure).into();
                report.error = Some(failure.to_string());
            }
            Ok(Ok((link, held, took))) => {
                report.status = "not needed".into();
                daemons[i].link = Some(link);
                // A copy can be searched once verified, under a name the `hosts` option takes.
                let searchable = |c: &Copy| c.head_seq > 0 && crate::names::check_origin_name(&c.host).is_ok();
                for copy in held.into_iter().filter(|c| searchable(c) && wanted_origins.as_ref().is_none_or(|w| w.contains(&c.host))) {
                    copies.entry(copy.host.clone()).or_default().push((i, copy, took));
                }
            }
        }
    }

    // 2. The best copy of each origin first: healthy, least lag, fastest.
    let mut notes = Vec::new();
    for missing in wanted_origins.iter().flatten().filter(|o| !copies.contains_key(*o)) {
        notes.push(format!("no daemon that answered holds host {missing}"));
    }
    let mut origins: BTreeMap<String, OriginReport> = BTreeMap::new();
    for (origin, list) in &mut copies {
        list.sort_by(|(_, a, ta), (_, b, tb)| {
            (a.health != "healthy").cmp(&(b.health != "healthy")).then(b.head_seq.cmp(&a.head_seq)).then(ta.cmp(tb))
        });
        let fork = fork_in(list.iter().map(|(i, c, _)| (daemons[*i].host.name.as_str(), c)));
        if let Some(f) = &fork {
            notes.push(format!("host {origin}: {f}"));
        }
        let best = &list[0].1;
        origins.insert(
            origin.clone(),
            OriginReport {
                host: origin.clone(),
                via: None,
                head_seq: best.head_seq,
                head_hash: best.head_hash.clone(),
                age_ms: best.age_ms,
                behind_events: 0,
                copies: list.len(),
                fork,
            },
        );
    }
    let freshest: HashMap<String, u64> = copies.iter().map(|(o, list)| (o.clone(), list[0].1.head_seq)).collect();

    // 3. Ask each daemon for its origins. As soon as one fails, its origins go to their next
    // copy, while the others are still answering.
    let mut next: HashMap<String, usize> = copies.keys().map(|o| (o.clone(), 0)).collect();
    let mut failed: HashSet<usize> = HashSet::new();
    let mut hits: Vec<FleetHit> = Vec::new();
    let mut answered_origins: HashSet<String> = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut pending: Vec<String> = copies.keys().cloned().collect();
    loop {
        // Give each pending origin to its best copy not known to have failed.
        let mut plan: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for origin in pending.drain(..) {
            let list = &copies[&origin];
            let at = next.get_mut(&origin).expect("every origin has a cursor");
            while *at < list.len() && failed.contains(&list[*at].0) {
                *at += 1;
            }
            if let Some((daemon, _, _)) = list.get(*at) {
                plan.entry(*daemon).or_default().push(origin);
            }
        }
        for (i, wanted) in plan {
            let link = daemons[i].link.clone().expect("only daemons that listed their origins are planned");
            let mut opts: HashMap<&str, Value<'_>> =
                options.iter().filter_map(|(k, v)| Some((k.as_str(), Value::try_from(v).ok()?))).collect();
            opts.insert("hosts", Value::from(wanted.clone()));
            in_flight.push(async move {
                let started = Instant::now();
                let result = tokio::time::timeout_at(until, link.call("Search", &(query, opts))).await;
                (i, wanted, result, started.elapsed())
            });
        }
        let Some((i, wanted, result, took)) = in_flight.next().await else { break };
        let report = &mut daemons[i].report;
        report.ms = Some(report.ms.unwrap_or(0).max(took.as_millis() as u64));
        let answer = match result {
            Err(_) => Err(("timed out", format!("no answer within the deadline of {} ms", deadline.as_millis()))),
            Ok(Err(f)) => Err((status_of(&f), f.to_string())),
            Ok(Ok(text)) => serde_json::from_str::<Answer>(&text).map_err(|e| ("failed", format!("Search answered something else: {e}"))),
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err((status, error)) => {
                report.status = status.into();
                report.error = Some(error);
                failed.insert(i);
                if let Some(pool) = pool {
                    pool.remove(&report.name);
                }
                if Instant::now() < until {
                    pending.extend(wanted);
                }
                continue;
            }
        };
        if report.error.is_none() {
            report.status = "answered".into();
        }
        // A replica says which origins it answered for (it leaves out those staler than
        // asked); a primary holds one, the one asked.
        let covered: Vec<String> =
            if answer.origins.is_empty() { wanted.clone() } else { answer.origins.iter().map(|f| f.host.clone()).collect() };
        for origin in wanted.iter().filter(|o| covered.contains(o)) {
            answered_origins.insert(origin.clone());
            report.searched.push(origin.clone());
            if let Some(o) = origins.get_mut(origin) {
                o.via = Some(report.name.clone());
                if let Some(f) = answer.origins.iter().find(|f| &f.host == origin) {
                    (o.head_seq, o.head_hash, o.age_ms) = (f.head_seq, f.head_hash.clone(), f.age_ms);
                } else if let Some((_, c, _)) = copies[origin].iter().find(|(d, _, _)| *d == i) {
                    (o.head_seq, o.head_hash, o.age_ms) = (c.head_seq, c.head_hash.clone(), c.age_ms);
                }
                o.behind_events = freshest[origin].saturating_sub(o.head_seq);
            }
        }
        for note in answer.notes {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        let only = (wanted.len() == 1).then(|| wanted[0].clone());
        hits.extend(answer.hits.into_iter().map(|mut hit| {
            if hit.host.is_none() {
                hit.host = only.clone();
            }
            FleetHit { hit, via: report.name.clone() }
        }));
    }
    hits.sort_by(|a, b| Hit::merged_order(&a.hit, &b.hit));
    hits.truncate(limit);
    let unanswered: Vec<String> = copies.keys().filter(|o| !answered_origins.contains(*o)).cloned().collect();
    if !unanswered.is_empty() {
        notes.push(format!("no copy of {} answered in time; the answer leaves them out", unanswered.join(", ")));
    }
    let every_daemon_listed = daemons.iter().all(|d| d.link.is_some());
    FleetAnswer {
        hits,
        complete: unanswered.is_empty() && every_daemon_listed && wanted_origins.iter().flatten().all(|o| copies.contains_key(o)),
        daemons: daemons.into_iter().map(|d| d.report).collect(),
        origins: origins.into_values().collect(),
        notes,
    }
}

/// The first 12 characters of a hash, for people (whatever a remote daemon sent).
pub fn short_hash(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Two copies of one origin at the same seq with different heads: the histories forked.
fn fork_in<'a>(copies: impl Iterator<Item = (&'a str, &'a Copy)>) -> Option<String> {
    let mut at_seq: HashMap<u64, (&str, &str)> = HashMap::new();
    for (daemon, copy) in copies {
        match at_seq.get(&copy.head_seq) {
            Some((other, hash)) if *hash != copy.head_hash => {
                return Some(format!(
                    "forked: {other} and {daemon} hold different histories at seq {} ({}… and {}…)",
                    copy.head_seq,
                    short_hash(hash),
                    short_hash(&copy.head_hash)
                ));
            }
            Some(_) => {}
            None => {
                at_seq.insert(copy.head_seq, (daemon, copy.head_hash.as_str()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(seq: u64, hash: &str) -> Copy {
        Copy { host: "hv1".into(), head_seq: seq, head_hash: hash.into(), age_ms: 0, health: "healthy".into() }
    }

    #[test]
    fn copies_at_one_seq_with_different_heads_are_a_fork() {
        let (a, b, c) = (copy(5, "aaaa"), copy(5, "aaaa"), copy(7, "cccc"));
        assert_eq!(fork_in([("r1", &a), ("r2", &b), ("r3", &c)].into_iter()), None);
        let d = copy(5, "dddd");
        let fork = fork_in([("r1", &a), ("r2", &d)].into_iter()).unwrap();
        assert!(fork.contains("r1 and r2") && fork.contains("seq 5"), "{fork}");
    }
}
