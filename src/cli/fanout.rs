//! `search --hosts/--fleet`: one query across the fleet's daemons (`crate::fanout`), printed
//! as one answer with each daemon's outcome and each history's freshness.

use super::client::runtime;
use super::output::print_answer;
use crate::fanout::{FleetAnswer, FleetHost};
use crate::search::Answer;
use anyhow::Result;
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;
use zbus::zvariant::{OwnedValue, Value};

/// Exit code when some daemons or histories are missing from the answer (it is printed).
const PARTIAL: u8 = 7;

pub fn search(
    fleet: &crate::fanout::FleetConfig,
    hosts: &[FleetHost],
    query: &str,
    options: HashMap<&'static str, Value<'static>>,
    limit: u32,
    deadline: Duration,
    json: bool,
) -> Result<ExitCode> {
    let options: HashMap<String, OwnedValue> =
        options.into_iter().map(|(k, v)| Ok((k.to_owned(), OwnedValue::try_from(v)?))).collect::<Result<_>>()?;
    let answer =
        runtime()?.block_on(crate::fanout::search(hosts, query, &options, limit as usize, deadline, fleet.keep_connections_s, None));
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        print(&answer)?;
    }
    Ok(if answer.complete { ExitCode::SUCCESS } else { ExitCode::from(PARTIAL) })
}

fn print(answer: &FleetAnswer) -> Result<()> {
    for d in &answer.daemons {
        let ms = d.ms.map(|ms| format!(" in {ms} ms")).unwrap_or_default();
        let what = if d.searched.is_empty() { String::new() } else { format!(" ({})", d.searched.join(", ")) };
        let error = d.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        println!("daemon {}: {}{ms}{what}{error}", d.name, d.status);
    }
    for o in &answer.origins {
        let via = o.via.as_deref().map_or("no copy answered".to_owned(), |v| format!("from {v}"));
        let behind = if o.behind_events > 0 { format!(", {} events behind the freshest copy", o.behind_events) } else { String::new() };
        println!(
            "host {}: {via}, head {} ({}…), snapshot {} old{behind}, {} cop{}",
            o.host,
            o.head_seq,
            crate::fanout::short_hash(&o.head_hash),
            humantime::format_duration(Duration::from_secs(o.age_ms.max(0) as u64 / 1000)),
            o.copies,
            if o.copies == 1 { "y" } else { "ies" }
        );
    }
    let merged = Answer { hits: answer.hits.iter().map(|h| h.hit.clone()).collect(), notes: answer.notes.clone(), ..Default::default() };
    print_answer(&merged, false)
}
