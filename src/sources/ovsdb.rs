//! The Open vSwitch source: the OVSDB JSON-RPC `monitor` method on the database's unix
//! socket, for `Bridge`, `Port`, `Interface` and `Open_vSwitch`. Answers `echo`, records a
//! baseline the first time, reconciles against the index after every (re)connect, and
//! reconnects with backoff when ovsdb-server restarts.

use super::{Diff, LiveElement, Sink, diff, reconcile, value_text};
use crate::backoff::backoff;
use crate::engine::Engine;
use crate::event::{NewEvent, Priority};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const SOURCE: &str = "ovsdb";

/// Monitored tables: (table, element prefix, columns).
const TABLES: &[(&str, &str, &[&str])] = &[
    ("Open_vSwitch", "ovs", &["ovs_version", "db_version", "external_ids"]),
    ("Bridge", "bridge", &["name", "ports", "datapath_type", "fail_mode", "protocols", "external_ids"]),
    ("Port", "ovs-port", &["name", "interfaces", "tag", "trunks", "vlan_mode", "bond_mode", "external_ids"]),
    (
        "Interface",
        "ovs-interface",
        &["name", "type", "admin_state", "link_state", "ofport", "error", "mtu", "mac_in_use", "options", "external_ids"],
    ),
];

/// Runs forever: connect, monitor, reconnect.
pub async fn run(socket: PathBuf, sink: Sink, engine: Arc<Engine>) {
    let mut attempt = 0u32;
    let mut said_absent = false;
    loop {
        match session(&socket, &sink, &engine, &mut attempt).await {
            Ok(()) => {
                sink.waiting("ovsdb-server closed the connection; reconnecting");
                tracing::warn!(socket = %socket.display(), "ovsdb-server closed the connection; reconnecting");
            }
            Err(e) if !socket.exists() => {
                sink.waiting(format!("no OVSDB socket at {}", socket.display()));
                if !said_absent {
                    tracing::warn!(socket = %socket.display(), "no OVSDB socket (Open vSwitch not installed or not running); the OVS source waits for it");
                    said_absent = true;
                }
                let _ = e;
            }
            Err(e) => {
                sink.waiting(format!("{}: {e:#}", socket.display()));
                tracing::warn!(socket = %socket.display(), error = %format!("{e:#}"), "OVSDB connection failed; retrying");
            }
        }
        tokio::time::sleep(backoff(attempt)).await;
        attempt = attempt.saturating_add(1);
    }
}

/// The tables' rows by uuid, normalised to JSON objects.
#[derive(Default)]
struct Rows {
    tables: HashMap<String, HashMap<String, Map<String, Value>>>,
}

impl Rows {
    fn name_of(&self, table: &str, uuid: &str) -> Option<String> {
        self.tables.get(table)?.get(uuid)?.get("name")?.as_str().map(str::to_owned)
    }

    /// The element id of a row (`bridge:NAME`; `ovs:system` for the single root row).
    fn element_id(table: &str, row: &Map<String, Value>) -> Option<String> {
        let (_, prefix, _) = TABLES.iter().find(|(t, _, _)| *t == table)?;
        if table == "Open_vSwitch" {
            return Some("ovs:system".into());
        }
        Some(format!("{prefix}:{}", row.get("name")?.as_str()?))
    }

    /// A row as recorded: uuids of ports/interfaces replaced by their names, and for
    /// ports the bridge they are on.
    fn presentable(&self, table: &str, uuid: &str, row: &Map<String, Value>) -> Map<String, Value> {
        let mut out = row.clone();
        let names = |t: &str, v: &Value| -> Value {
            let list: Vec<Value> = as_list(v)
                .iter()
                .filter_map(|u| u.as_str())
                .map(|u| Value::from(self.name_of(t, u).unwrap_or_else(|| u.to_owned())))
                .collect();
            let mut sorted = list;
            sorted.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            Value::Array(sorted)
        };
        match table {
            "Bridge" => {
                if let Some(p) = row.get("ports") {
                    out.insert("ports".into(), names("Port", p));
                }
            }
            "Port" => {
                if let Some(i) = row.get("interfaces") {
                    out.insert("interfaces".into(), names("Interface", i));
                }
                if let Some(bridge) = self.bridge_of_port(uuid) {
                    out.insert("bridge".into(), Value::from(bridge));
                }
            }
            _ => {}
        }
        out
    }

    fn bridge_of_port(&self, port_uuid: &str) -> Option<String> {
        self.tables
            .get("Bridge")?
            .values()
            .find(|b| b.get("ports").map(|p| as_list(p).iter().any(|u| u.as_str() == Some(port_uuid))).unwrap_or(false))?
            .get("name")?
            .as_str()
            .map(str::to_owned)
    }

    /// Every element with its presentable state.
    fn elements(&self) -> HashMap<String, (String, Map<String, Value>)> {
        let mut out = HashMap::new();
        for (table, rows) in &self.tables {
            for (uuid, row) in rows {
                if let Some(id) = Self::element_id(table, row) {
                    out.insert(id, (table.clone(), self.presentable(table, uuid, row)));
                }
            }
        }
        out
    }
}

fn as_list(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

/// OVSDB datum → JSON: atoms as themselves, `["uuid", u]` → u, sets → arrays (a one-element
/// set is its atom, as OVSDB itself abbreviates), maps → objects, the empty set → null.
pub fn datum(v: &Value) -> Value {
    match v {
        Value::Array(a) if a.len() == 2 && a[0] == "uuid" => a[1].clone(),
        Value::Array(a) if a.len() == 2 && a[0] == "set" => {
            let items: Vec<Value> = a[1].as_array().map(|xs| xs.iter().map(datum).collect()).unwrap_or_default();
            match items.len() {
                0 => Value::Null,
                1 => items.into_iter().next().expect("one"),
                _ => Value::Array(items),
            }
        }
        Value::Array(a) if a.len() == 2 && a[0] == "map" => {
            let mut m = Map::new();
            for pair in a[1].as_array().into_iter().flatten() {
                if let (Some(k), Some(val)) = (pair.get(0), pair.get(1)) {
                    let key = match datum(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    m.insert(key, datum(val));
                }
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

fn row_of(v: &Value) -> Map<String, Value> {
    v.as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), datum(v))).collect()).unwrap_or_default()
}

/// One connection: monitor, reconcile with the index, then follow updates.
async fn session(socket: &Path, sink: &Sink, engine: &Arc<Engine>, attempt: &mut u32) -> Result<()> {
    if crate::faults::fire("panic-source-ovsdb") {
        panic!("injected fault: panic-source-ovsdb");
    }
    let mut stream = UnixStream::connect(socket).await.with_context(|| format!("connecting to {}", socket.display()))?;
    let requests: Map<String, Value> = TABLES.iter().map(|(t, _, cols)| (t.to_string(), json!({"columns": cols}))).collect();
    let monitor = json!({"method": "monitor", "params": ["Open_vSwitch", null, requests], "id": "monitor"});
    stream.write_all(monitor.to_string().as_bytes()).await?;
    let mut reader = JsonStream::default();
    let mut rows = Rows::default();
    loop {
        let msg = reader.next(&mut stream).await?;
        if msg.get("id") == Some(&json!("monitor")) {
            if !msg["error"].is_null() {
                bail!("OVSDB refused the monitor request: {}", msg["error"]);
            }
            apply_updates(&mut rows, &msg["result"], None);
            *attempt = 0;
            tracing::info!(socket = %socket.display(), "OVS source connected");
            sink.connected(format!("OVSDB at {}", socket.display()));
            reconcile(SOURCE, live_elements(&rows), sink, engine).await?;
            break;
        }
        answer_echo(&mut stream, &msg).await?;
    }
    let resync = sink.resync.clone();
    loop {
        let msg = tokio::select! {
            msg = reader.next(&mut stream) => msg?,
            _ = resync.notified() => {
                reconcile(SOURCE, live_elements(&rows), sink, engine).await?;
                continue;
            }
        };
        if msg.get("method") == Some(&json!("update")) {
            let updates = &msg["params"][1];
            let mut events = Vec::new();
            apply_updates(&mut rows, updates, Some(&mut events));
            for e in events {
                sink.emit(e);
            }
        } else {
            answer_echo(&mut stream, &msg).await?;
        }
    }
}

async fn answer_echo(stream: &mut UnixStream, msg: &Value) -> Result<()> {
    if msg.get("method") == Some(&json!("echo")) {
        let reply = json!({"result": msg["params"], "error": null, "id": msg["id"]});
        stream.write_all(reply.to_string().as_bytes()).await?;
    }
    Ok(())
}

/// Applies `table-updates` to the rows; with `events`, turns each change into events. Old
/// views are taken before and new views after the whole update, so a port inserted together
/// with its bridge's new port list already knows its bridge.
fn apply_updates(rows: &mut Rows, updates: &Value, events: Option<&mut Vec<NewEvent>>) {
    let Some(tables) = updates.as_object() else { return };
    let order = ["Open_vSwitch", "Bridge", "Port", "Interface"];
    let mut changes: Vec<(&str, String, Option<Map<String, Value>>, bool)> = Vec::new();
    for table in order {
        let Some(rows_changed) = tables.get(table).and_then(Value::as_object) else { continue };
        for (uuid, change) in rows_changed {
            let old_view = rows.tables.get(table).and_then(|t| t.get(uuid)).map(|r| rows.presentable(table, uuid, r));
            changes.push((table, uuid.clone(), old_view, change.get("new").is_some()));
        }
    }
    for table in order {
        let Some(rows_changed) = tables.get(table).and_then(Value::as_object) else { continue };
        for (uuid, change) in rows_changed {
            match change.get("new") {
                Some(new) => {
                    rows.tables.entry(table.to_owned()).or_default().insert(uuid.clone(), row_of(new));
                }
                None => {
                    rows.tables.entry(table.to_owned()).or_default().remove(uuid);
                }
            }
        }
    }
    let Some(events) = events else { return };
    for (table, uuid, old_view, exists) in changes {
        let new_view =
            if exists { rows.tables.get(table).and_then(|t| t.get(&uuid)).map(|r| rows.presentable(table, &uuid, r)) } else { None };
        events.extend(change_events(table, old_view.as_ref(), new_view.as_ref()));
    }
}

/// The events for one row change.
fn change_events(table: &str, old: Option<&Map<String, Value>>, new: Option<&Map<String, Value>>) -> Vec<NewEvent> {
    let Some(element_id) = new.or(old).and_then(|row| Rows::element_id(table, row)) else { return Vec::new() };
    let name = element_id.split_once(':').map(|(_, n)| n.to_owned()).unwrap_or_default();
    let kind = match table {
        "Bridge" => "bridge",
        "Port" => "port",
        "Interface" => "interface",
        _ => "Open vSwitch",
    };
    match (old, new) {
        (None, Some(new)) => {
            let mut out = vec![event(
                &element_id,
                &format!("{}.added", short(table)),
                Priority::Medium,
                json!({"after": new}),
                format!("OVS {kind} {name} added{}", on_bridge(new)),
            )];
            // The switch may fill in `error` in the same transaction that inserts the row.
            if let Some(error) = new.get("error").filter(|e| !e.is_null()) {
                let details = Diff {
                    changed: vec!["error".into()],
                    before: Map::new(),
                    after: [("error".to_owned(), error.clone())].into_iter().collect(),
                }
                .into_details();
                out.push(event(
                    &element_id,
                    "error",
                    Priority::Critical,
                    details,
                    format!("OVS {kind} {name} reports an error: {}", error.as_str().unwrap_or_default()),
                ));
            }
            out
        }
        (Some(old), None) => vec![event(
            &element_id,
            &format!("{}.removed", short(table)),
            Priority::Medium,
            json!({"before": old}),
            format!("OVS {kind} {name} removed{}", on_bridge(old)),
        )],
        (Some(old), Some(new)) => {
            let d = diff(old, new);
            if d.is_empty() {
                return Vec::new();
            }
            modification_events(table, &element_id, &name, kind, old, new, d)
        }
        (None, None) => Vec::new(),
    }
}

fn short(table: &str) -> &'static str {
    match table {
        "Bridge" => "bridge",
        "Port" => "port",
        "Interface" => "interface",
        _ => "ovs",
    }
}

fn on_bridge(row: &Map<String, Value>) -> String {
    row.get("bridge").and_then(Value::as_str).map(|b| format!(" on bridge {b}")).unwrap_or_default()
}

fn event(element_id: &str, action: &str, priority: Priority, details: Value, summary: String) -> NewEvent {
    NewEvent::new(SOURCE, element_id, action, priority, details).with_summary(summary)
}

fn modification_events(
    table: &str,
    element_id: &str,
    name: &str,
    kind: &str,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    d: Diff,
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    let text = |v: Option<&Value>| value_text(v.unwrap_or(&Value::Null));
    if table == "Bridge" && d.changed.iter().any(|c| c == "ports") {
        // Each port's arrival or departure names the port, not the whole list before and
        // after: on a bridge of thousands of ports that was kilobytes per event, and a burst
        // of N ports cost N² in the ledger, the index and every incremental. The element
        // fold merges `added` / `removed` into the list the state holds; `after` is empty,
        // as nothing else changed.
        let before: Vec<Value> = as_list(old.get("ports").unwrap_or(&Value::Null));
        let after: Vec<Value> = as_list(new.get("ports").unwrap_or(&Value::Null));
        let before_set: HashSet<&Value> = before.iter().collect();
        let after_set: HashSet<&Value> = after.iter().collect();
        let membership = |p: &Value, change: &str| json!({"port": p, change: {"ports": [p]}, "after": {}, "changed": ["ports"]});
        for p in after.iter().filter(|p| !before_set.contains(p)) {
            let name_of_port = p.as_str().unwrap_or_default();
            out.push(event(
                element_id,
                "port.added",
                Priority::Medium,
                membership(p, "added"),
                format!("port {name_of_port} added to OVS bridge {name}"),
            ));
        }
        for p in before.iter().filter(|p| !after_set.contains(p)) {
            let name_of_port = p.as_str().unwrap_or_default();
            out.push(event(
                element_id,
                "port.removed",
                Priority::Medium,
                membership(p, "removed"),
                format!("port {name_of_port} removed from OVS bridge {name}"),
            ));
        }
    }
    let rest: Vec<String> = d.changed.iter().filter(|c| !(table == "Bridge" && *c == "ports")).cloned().collect();
    if rest.is_empty() {
        return out;
    }
    let d = Diff {
        changed: rest.clone(),
        before: d.before.into_iter().filter(|(k, _)| rest.contains(k)).collect(),
        after: d.after.into_iter().filter(|(k, _)| rest.contains(k)).collect(),
    };
    let changed = |c: &str| rest.iter().any(|x| x == c);
    let (action, priority, summary) = if table == "Interface" && changed("error") && !new.get("error").unwrap_or(&Value::Null).is_null() {
        ("error", Priority::Critical, format!("OVS interface {name} reports an error: {}", text(new.get("error"))))
    } else if table == "Interface" && changed("link_state") && new.get("link_state") == Some(&json!("down")) {
        ("link.down", Priority::High, format!("OVS interface {name}: link down"))
    } else if table == "Interface" && changed("link_state") && new.get("link_state") == Some(&json!("up")) {
        ("link.up", Priority::Medium, format!("OVS interface {name}: link up"))
    } else if table == "Interface" && changed("admin_state") {
        let state = text(new.get("admin_state"));
        (
            if state == "down" { "admin.down" } else { "admin.up" },
            if state == "down" { Priority::High } else { Priority::Medium },
            format!("OVS interface {name}: admin state {state}"),
        )
    } else if rest.iter().all(|c| matches!(c.as_str(), "ofport" | "mac_in_use" | "mtu" | "ovs_version" | "db_version"))
        && old.get(&rest[0]).is_none_or(Value::is_null)
    {
        // Values the switch fills in right after an insert: routine.
        ("modified", Priority::Low, format!("OVS {kind} {name}: {} set", rest.join(", ")))
    } else {
        ("modified", Priority::Medium, format!("OVS {kind} {name}: {}", d.describe(3)))
    };
    out.push(event(element_id, action, priority, d.into_details(), summary));
    out
}

/// The live elements as `reconcile` wants them.
fn live_elements(rows: &Rows) -> Vec<LiveElement> {
    rows.elements()
        .into_iter()
        .map(|(id, (table, state))| {
            let name = id.split_once(':').map(|(_, n)| n.to_owned()).unwrap_or_else(|| id.clone());
            LiveElement { label: format!("OVS {} {name}", short(&table)), element_id: id, state }
        })
        .collect()
}

/// Splits a byte stream into the JSON values OVSDB sends back to back.
#[derive(Default)]
struct JsonStream {
    buf: Vec<u8>,
}

impl JsonStream {
    async fn next(&mut self, stream: &mut UnixStream) -> Result<Value> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match it.next() {
                Some(Ok(v)) => {
                    let used = it.byte_offset();
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Some(Err(e)) if !e.is_eof() => bail!("OVSDB sent invalid JSON: {e}"),
                _ => {}
            }
            if self.buf.len() > 64 << 20 {
                bail!("an OVSDB message larger than 64 MiB");
            }
            let mut chunk = [0u8; 65536];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("ovsdb-server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datums_become_plain_json() {
        assert_eq!(datum(&json!(["set", []])), Value::Null);
        assert_eq!(datum(&json!(["set", [1]])), json!(1));
        assert_eq!(datum(&json!(["set", [["uuid", "a"], ["uuid", "b"]]])), json!(["a", "b"]));
        assert_eq!(datum(&json!(["map", [["k", "v"]]])), json!({"k": "v"}));
        assert_eq!(datum(&json!("up")), json!("up"));
    }

    #[test]
    fn interface_changes_get_names_and_priorities() {
        let old = json!({"name": "p1", "link_state": "up", "error": null}).as_object().unwrap().clone();
        let new = json!({"name": "p1", "link_state": "down", "error": null}).as_object().unwrap().clone();
        let e = change_events("Interface", Some(&old), Some(&new));
        assert_eq!((e[0].element_id.as_str(), e[0].action.as_str(), e[0].priority), ("ovs-interface:p1", "link.down", Priority::High));
        assert_eq!(e[0].details["before"]["link_state"], "up");
        let err = json!({"name": "p1", "link_state": "down", "error": "could not open network device p1 (No such device)"})
            .as_object()
            .unwrap()
            .clone();
        let e = change_events("Interface", Some(&new), Some(&err));
        assert_eq!((e[0].action.as_str(), e[0].priority), ("error", Priority::Critical));
    }

    #[test]
    fn bridge_port_membership_changes_name_the_port() {
        let old = json!({"name": "br0", "ports": ["br0"]}).as_object().unwrap().clone();
        let new = json!({"name": "br0", "ports": ["br0", "p1"]}).as_object().unwrap().clone();
        let e = change_events("Bridge", Some(&old), Some(&new));
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].action.as_str(), e[0].details["port"].as_str()), ("port.added", Some("p1")));
        assert_eq!(e[0].details["added"], json!({"ports": ["p1"]}));
        let state = crate::index::next_state(json!({"name": "br0", "ports": ["br0"]}), &e[0].details);
        assert_eq!((state["ports"].clone(), state["present"].clone()), (json!(["br0", "p1"]), json!(true)), "folded into the state");
    }

    #[test]
    fn a_port_joining_a_big_bridge_is_a_small_event() {
        let ports: Vec<String> = (0..3000).map(|i| format!("vm-port-{i:05}")).collect();
        let old = json!({"name": "br-int", "ports": ports[..2999]}).as_object().unwrap().clone();
        let new = json!({"name": "br-int", "ports": ports}).as_object().unwrap().clone();
        let e = change_events("Bridge", Some(&old), Some(&new));
        assert_eq!(e.len(), 1);
        assert!(e[0].details.to_string().len() < 200, "{}", e[0].details);
        assert_eq!(e[0].details["added"]["ports"], json!(["vm-port-02999"]));
        let e = change_events("Bridge", Some(&new), Some(&old));
        assert_eq!((e[0].action.as_str(), &e[0].details["removed"]), ("port.removed", &json!({"ports": ["vm-port-02999"]})));
    }
}

#[cfg(test)]
mod hostile_updates {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &[
        "Open_vSwitch",
        "Bridge",
        "Port",
        "Interface",
        "new",
        "old",
        "name",
        "ports",
        "interfaces",
        "tag",
        "trunks",
        "mtu",
        "admin_state",
        "link_state",
        "error",
        "ofport",
        "external_ids",
        "options",
        "set",
        "map",
        "uuid",
        "named-uuid",
    ];

    proptest! {
        // Bounded: 2048 cases each, well under a second.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Whatever ovsdb-server (or something posing as it) sends as table updates, the
        /// source neither panics nor stops: each update is applied or skipped.
        #[test]
        fn any_update_is_applied_or_skipped_without_a_panic(first in crate::arbitrary_json::json(KEYS), second in crate::arbitrary_json::json(KEYS)) {
            let mut rows = Rows::default();
            let mut events = Vec::new();
            apply_updates(&mut rows, &first, Some(&mut events));
            apply_updates(&mut rows, &second, Some(&mut events));
            for e in &events {
                prop_assert!(!e.element_id.is_empty() && !e.action.is_empty());
            }
        }
    }
}
