//! Sub-commands that ask the running daemon over D-Bus (when no `--data-dir` is given).

use super::output::print_answer;
use crate::dbus::{BUS_NAME, OBJECT_PATH, connect};
use crate::index::EventRow;
use anyhow::{Context, Result};
use futures_util::StreamExt;
use std::collections::HashMap;
use std::process::ExitCode;
use zbus::Connection;
use zbus::zvariant::Value;

const IFACE: &str = "dev.ovs.PortAgent1";

pub(super) async fn call<B, R>(conn: &Connection, method: &str, body: &B) -> Result<R>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
    R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
{
    let reply = conn.call_method(Some(BUS_NAME), OBJECT_PATH, Some(IFACE), method, body).await.with_context(|| {
        format!("calling {method} on {BUS_NAME} (is the daemon running? without --data-dir commands ask it over D-Bus)")
    })?;
    Ok(reply.body().deserialize()?)
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

pub fn search(bus: &str, query: &str, options: HashMap<&str, Value<'_>>, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let text: String = call(&conn, "Search", &(query, options)).await?;
        let answer: crate::search::Answer = serde_json::from_str(&text)?;
        print_answer(&answer, json)?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn history(bus: &str, element: &str, limit: u32, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let text: String = call(&conn, "GetElementHistory", &(element, limit)).await?;
        let events: Vec<EventRow> = serde_json::from_str(&text)?;
        super::output::print_events(&events, json)?;
        Ok(if events.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
    })
}

pub fn status(bus: &str, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let text: String = call(&conn, "GetBlockchainStats", &()).await?;
        let stats: serde_json::Value = serde_json::from_str(&text)?;
        if json {
            println!("{stats}");
        } else {
            super::status::print(&stats);
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn verify(bus: &str, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let (intact, report): (bool, String) = call(&conn, "VerifyChain", &()).await?;
        if json {
            println!("{report}");
        } else {
            let r: serde_json::Value = serde_json::from_str(&report)?;
            if intact {
                println!("intact: head seq {} ({})", r["head_seq"], r["head_hash"].as_str().unwrap_or(""));
            } else {
                println!("DAMAGED: {}", r["damage"]);
            }
        }
        Ok(if intact { ExitCode::SUCCESS } else { ExitCode::from(1) })
    })
}

/// Prints events as the daemon records them (the `EventRecorded` signal).
pub fn follow(bus: &str, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let proxy = zbus::Proxy::new(&conn, BUS_NAME, OBJECT_PATH, IFACE).await?;
        let mut signals = proxy.receive_signal("EventRecorded").await?;
        while let Some(msg) = signals.next().await {
            let (seq, element, action, hash): (u64, String, String, String) = msg.body().deserialize()?;
            if json {
                println!("{}", serde_json::json!({"seq": seq, "element_id": element, "action": action, "hash": hash}));
            } else {
                println!("{seq:>8}  {element:<28}  {action:<22}  {hash}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn replicas(bus: &str, json: bool) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let text: String = call(&conn, "GetReplicaStatus", &()).await?;
        let report: serde_json::Value = serde_json::from_str(&text)?;
        if json {
            println!("{report}");
        } else if report.as_array().is_none_or(Vec::is_empty) {
            println!("no replicas configured: add a [[stream.replicas]] entry to the config (docs/operations.md, \"Replicas over ssh with a restricted key\")");
        } else {
            for r in report.as_array().into_iter().flatten() {
                println!(
                    "{:<16} {:<12} acked seq {:<8} lag {} events / {:.1} s  sent {} bytes  {}",
                    r["name"].as_str().unwrap_or(""),
                    r["state"].as_str().unwrap_or(""),
                    r["acked_seq"],
                    r["lag_events"],
                    r["lag_seconds"].as_f64().unwrap_or(0.0),
                    r["bytes_sent"],
                    r["last_error"].as_str().unwrap_or("")
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn sync_now(bus: &str) -> Result<ExitCode> {
    runtime()?.block_on(async {
        let conn = connect(bus).await?;
        let () = call(&conn, "SyncNow", &()).await?;
        println!("snapshot requested");
        Ok(ExitCode::SUCCESS)
    })
}
