//! Sub-commands that work on a data directory (or snapshot) directly, without the daemon.

use super::output::{event_line, format_ts, print_answer, print_events};
use super::progress::Progress;
use crate::config::Config;
use crate::dataset::DataSet;
use crate::embed::ModelFiles;
use crate::import::{Parsed, parse_input};
use crate::layout::Layout;
use crate::ledger::scan;
use crate::lock::DataDirLock;
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::io::BufReader;
use std::path::Path;
use std::process::ExitCode;

/// Reads and checks a whole import input (a file, or stdin for `-`).
fn read_import(file: &Path) -> Result<Parsed> {
    if file == Path::new("-") {
        parse_input(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
        parse_input(BufReader::new(f)).with_context(|| format!("importing {}", file.display()))
    }
}

/// `import --dry-run`: what would be recorded, and nothing written.
pub fn import_dry_run(file: &Path, json: bool) -> Result<ExitCode> {
    let parsed = read_import(file)?;
    if json {
        let legacy = (!parsed.legacy.is_empty()).then_some(&parsed.legacy);
        println!("{}", json!({"would_import": parsed.events.len(), "events": parsed.events, "legacy_chain": legacy}));
        return Ok(ExitCode::SUCCESS);
    }
    const SHOWN: usize = 20;
    println!("would import {} events (dry run: nothing written)", parsed.events.len());
    for e in parsed.events.iter().take(SHOWN) {
        let ts = e.ts.map_or_else(|| "(time of import)".to_owned(), format_ts);
        println!("  {ts}  {}  {}  {}  {}", e.element_id, e.action, e.priority.as_str(), e.summary_or_default());
    }
    if parsed.events.len() > SHOWN {
        println!("  … and {} more (--json shows every event in full)", parsed.events.len() - SHOWN);
    }
    if !parsed.legacy.is_empty() {
        println!("{}", parsed.legacy.describe());
    }
    Ok(ExitCode::SUCCESS)
}

pub fn import(config: &Config, data_dir: &Path, file: &Path, no_embed: bool, json: bool) -> Result<ExitCode> {
    let Parsed { events, legacy } = read_import(file)?;
    let layout = Layout::detect(data_dir);
    let mut dataset = DataSet::open_writable(&layout, config)?;
    let mut imported = 0usize;
    for chunk in events.chunks(config.ledger.max_batch) {
        let records = dataset.ledger_mut().append_batch(chunk)?;
        dataset.index_mut().apply(&records)?;
        imported += records.len();
    }
    let head = dataset.ledger_mut().head_seq();
    let head_hash = hex::encode(dataset.ledger_mut().head_hash());
    drop(dataset);
    if !json {
        println!("imported {imported} events; ledger head is seq {head}");
        if !legacy.is_empty() {
            println!("{}", legacy.describe());
        }
    }
    // What was appended is embedded now, so that a search finds it by meaning.
    let embedded = if no_embed {
        Err(anyhow::anyhow!("--no-embed was given"))
    } else {
        ModelFiles::locate(&config.embedding).and_then(|_| vectorize(&layout, config, json, "events embedded"))
    };
    let not_vectorized = match &embedded {
        Ok(_) => 0,
        Err(e) => {
            let waiting = head.saturating_sub(DataSet::open_read_only(&layout)?.index().vectorized_seq()?);
            eprintln!(
                "warning: {waiting} events are not embedded ({e:#}); until they are, search finds them by their words only.\n  embed them with: ovs-port-agent reembed --data-dir {}  (or start the daemon, which embeds them)",
                data_dir.display()
            );
            waiting
        }
    };
    if json {
        let legacy = (!legacy.is_empty()).then_some(&legacy);
        println!(
            "{}",
            json!({"imported": imported, "head_seq": head, "head_hash": head_hash, "not_vectorized": not_vectorized, "legacy_chain": legacy})
        );
    } else if let Ok((_, _, secs)) = embedded {
        println!("embedded in {secs:.1} s; every event is searchable");
    }
    Ok(ExitCode::SUCCESS)
}

/// `verify --anchored`: the chain, then the ledger against every head a known replica
/// cosigned.
pub fn verify_anchored(data_dir: &Path, given: &[String], notes: Option<&Path>, json: bool) -> Result<ExitCode> {
    let layout = Layout::detect(data_dir);
    let mut witnesses = Vec::new();
    for vkey in given {
        witnesses.push(crate::anchor::Verifier::parse(vkey)?);
    }
    witnesses.extend(crate::anchor::audit::pinned_witnesses(&layout.root)?);
    let notes_dir = notes.map(Path::to_owned).unwrap_or_else(|| layout.data.join(crate::anchor::checkpoint::DIR));
    let ledger_dir = layout.ledger_dir();
    let outcome = scan(&ledger_dir, |_| {}).with_context(|| format!("reading {}", ledger_dir.display()))?;
    if let Some(damage) = &outcome.damage {
        println!("DAMAGED: first bad record is {damage}");
        return Ok(ExitCode::from(1));
    }
    let report = crate::anchor::audit::judge(&ledger_dir, outcome.state.head_seq, &notes_dir, &witnesses, false)?;
    if json {
        println!("{}", json!({"witness_keys": witnesses.len(), "report": report, "says": report.describe()}));
    } else {
        println!("{}", report.describe());
        println!("{} cosigned head(s) checked, {} witness key(s) known", report.cosigned_heads, witnesses.len());
        for problem in &report.problems {
            println!("warning: {problem}");
        }
        if witnesses.is_empty() {
            println!("warning: no witness key is known; pin one by streaming to a replica, or pass --witness");
        }
    }
    Ok(if report.rewritten.is_some() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Runs the engine until every event has its vector, showing progress; returns the model
/// used, the events the history holds and the seconds it took.
fn vectorize(layout: &Layout, config: &Config, json: bool, what: &'static str) -> Result<(String, u64, f64)> {
    let started = std::time::Instant::now();
    let engine = crate::engine::Engine::open(layout, config)?;
    let head = engine.writer().head().borrow().0;
    let mut progress = (!json).then(|| Progress::new(what, head));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let outcome = runtime.block_on(async {
        let mut vectorized = engine.vectorized();
        loop {
            let done = *vectorized.borrow_and_update();
            if let Some(p) = &mut progress {
                p.update(done);
            }
            if done >= head {
                return Ok(());
            }
            if vectorized.changed().await.is_err() {
                return Err(anyhow::anyhow!("the indexer stopped at seq {done} of {head}"));
            }
        }
    });
    if let Some(p) = &mut progress {
        p.finish();
    }
    engine.shutdown();
    outcome?;
    Ok((engine.pool().model_id().to_owned(), head, started.elapsed().as_secs_f64()))
}

pub fn verify(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let layout = Layout::detect(data_dir);
    let ledger_dir = layout.ledger_dir();
    if !ledger_dir.is_dir() {
        bail!("no ledger at {}", ledger_dir.display());
    }
    let mut records = 0u64;
    // The total is the index's count when there is one (a guess: the ledger is what is read).
    let expected = crate::index::Index::open_read_only(&layout.index_path()).and_then(|i| i.covered_seq()).unwrap_or(0);
    let mut progress = (!json).then(|| Progress::new("records verified", expected));
    let outcome = scan(&ledger_dir, |_| {
        records += 1;
        if records.is_multiple_of(4096)
            && let Some(p) = &mut progress
        {
            p.update(records);
        }
    })
    .with_context(|| format!("reading {}", ledger_dir.display()))?;
    if let Some(p) = &mut progress {
        p.update(records);
        p.finish();
    }
    // A partial last line under a live writer is a write in flight, not a crash remnant.
    let writer_active = !layout.read_only && DataDirLock::acquire(&layout.root).is_err();
    let torn = outcome.torn.as_ref().filter(|_| !writer_active);
    let intact = outcome.damage.is_none() && torn.is_none();
    let head_hash = hex::encode(outcome.state.head_hash);
    if json {
        println!(
            "{}",
            json!({
                "intact": intact,
                "records": records,
                "segments": outcome.segments,
                "head_seq": outcome.state.head_seq,
                "head_hash": head_hash,
                "damage": outcome.damage,
                "torn": torn,
            })
        );
    } else if let Some(damage) = &outcome.damage {
        println!("DAMAGED: first bad record is {damage}");
        println!("{records} records before it verify; the last good one is seq {} ({head_hash})", outcome.state.head_seq);
    } else if let Some(torn) = torn {
        println!(
            "INCOMPLETE: seq {} is torn ({} bytes after the last complete record in {}); opening the ledger for writing truncates it",
            torn.seq,
            torn.bytes,
            torn.segment.display()
        );
        println!("{records} complete records verify; head seq {} ({head_hash})", outcome.state.head_seq);
    } else {
        println!("intact: {records} records in {} segment(s), head seq {} ({head_hash})", outcome.segments, outcome.state.head_seq);
    }
    Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A data set opened read-only (a read command never writes), with a note on stderr when
/// its index does not cover the whole ledger.
fn open_for_reading(data_dir: &Path) -> Result<DataSet> {
    let layout = Layout::detect(data_dir);
    if !layout.ledger_dir().is_dir() {
        bail!("no ledger at {}", layout.ledger_dir().display());
    }
    let dataset = DataSet::open_read_only(&layout)?;
    let missing = dataset.unindexed()?;
    if missing > 0 {
        eprintln!(
            "note: the last {missing} events of the ledger are not in the index yet (the daemon adds them as it runs; without it, run `ovs-port-agent rebuild --data-dir {}`)",
            data_dir.display()
        );
    }
    Ok(dataset)
}

pub fn history(data_dir: &Path, element: &str, limit: usize, json: bool) -> Result<ExitCode> {
    let dataset = open_for_reading(data_dir)?;
    let events = dataset.index().history(element, limit.clamp(1, 100_000))?;
    if events.is_empty() && !json {
        eprintln!("no events for {element}");
        return Ok(ExitCode::from(1));
    }
    print_events(&events, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn tail(data_dir: &Path, limit: usize, follow: bool, json: bool) -> Result<ExitCode> {
    let dataset = open_for_reading(data_dir)?;
    let index = dataset.index();
    let mut events = index.recent(limit.clamp(1, 100_000))?;
    events.reverse();
    print_events(&events, json)?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    let mut last = events.last().map(|e| e.seq).unwrap_or(0);
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        for e in index.events_after(last, 1000)? {
            last = e.seq;
            if json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("{}", event_line(&e));
            }
        }
    }
}

pub fn rebuild(config: &Config, data_dir: &Path, json: bool) -> Result<ExitCode> {
    let layout = Layout::detect(data_dir);
    let mut dataset = DataSet::open_writable(&layout, config)?;
    let started = std::time::Instant::now();
    let head = dataset.ledger_mut().head_seq();
    let index = dataset.index_mut();
    index.clear_events()?;
    let mut progress = (!json).then(|| Progress::new("events indexed", head));
    let events = index.catch_up_with_progress(&layout.ledger_dir(), head, |done| {
        if let Some(p) = &mut progress {
            p.update(done);
        }
    })?;
    if let Some(p) = &mut progress {
        p.finish();
    }
    let (_, elements) = index.counts()?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!("{}", json!({"events": events, "elements": elements, "seconds": secs}));
    } else {
        println!("rebuilt the index from the ledger: {events} events, {elements} elements in {secs:.2} s");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn search(config: &Config, data_dir: &Path, query: &str, limit: u32, filters: &crate::vector::Filters, json: bool) -> Result<ExitCode> {
    if query.trim().is_empty() || !(1..=1000).contains(&limit) {
        bail!("the query must not be empty and -n must be between 1 and 1000");
    }
    let reader = crate::reader::OfflineReader::open(&Layout::detect(data_dir), config)?;
    let answer = reader.search(query, limit as usize, filters)?;
    print_answer(&answer, json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn status(data_dir: &Path, json: bool) -> Result<ExitCode> {
    let layout = Layout::detect(data_dir);
    let dataset = DataSet::open_read_only(&layout)?;
    let index = dataset.index();
    let (events, elements) = index.counts()?;
    let manifest = std::fs::read_to_string(layout.manifest_path()).ok().and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok());
    let status = json!({
        "data_dir": layout.root,
        "snapshot": layout.read_only,
        "events": events,
        "elements": elements,
        "indexed_seq": index.covered_seq()?,
        "unindexed": dataset.unindexed()?,
        "vectorized_seq": index.vectorized_seq()?,
        "model_id": index.meta("model_id")?,
        "manifest": manifest,
    });
    if json {
        println!("{status}");
    } else {
        super::output::print_fields(&status);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn reembed(config: &Config, data_dir: &Path, json: bool) -> Result<ExitCode> {
    let layout = Layout::detect(data_dir);
    DataSet::open_writable(&layout, config)?.index_mut().clear_vectors()?;
    let hnsw = layout.hnsw_dir();
    if hnsw.exists() {
        std::fs::remove_dir_all(&hnsw).with_context(|| format!("removing {}", hnsw.display()))?;
    }
    // The engine sees every event without a vector as backlog and embeds it.
    let (model, head, secs) = vectorize(&layout, config, json, "events re-embedded")?;
    if json {
        println!("{}", json!({"events": head, "seconds": secs, "model": model}));
    } else {
        println!("re-embedded {head} events with {model} in {secs:.1} s");
    }
    Ok(ExitCode::SUCCESS)
}
