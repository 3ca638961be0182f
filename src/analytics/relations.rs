//! Which elements belong together, read from their recorded state: an OVS port's bridge and
//! interfaces, a bridge's ports, a connection's device and controller. Links named in an
//! element's own state are direct; the reverse (the port an interface is on, the connection
//! of a device) is found by looking for states that name the element.

use crate::index::Index;
use anyhow::Result;
use serde::Serialize;
use serde_json::Value;

/// Another element and how it relates to the one asked about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Related {
    pub element_id: String,
    /// What it is to the element: "bridge", "port", "interface", "device", "controller",
    /// "connection", "member".
    pub relation: String,
}

/// Fields that name another element, the id prefix of what they name, and the relation.
const LINKS: &[(&str, &str, &str)] = &[
    ("bridge", "bridge:", "bridge"),
    ("ports", "port:", "port"),
    ("interfaces", "interface:", "interface"),
    ("connection.interface-name", "interface:", "device"),
    ("connection.master", "interface:", "controller"),
    ("connection.controller", "interface:", "controller"),
    ("controller", "interface:", "controller"),
    ("master", "interface:", "controller"),
];

/// What a relation is seen from the other side.
fn reverse(relation: &str) -> &'static str {
    match relation {
        "bridge" | "interface" => "port",
        "port" => "bridge",
        "device" => "connection",
        "controller" => "member",
        _ => "related",
    }
}

/// The elements an element's state names directly.
pub fn named_by(state: &Value) -> Vec<Related> {
    let mut out = Vec::new();
    for (field, prefix, relation) in LINKS {
        let names: Vec<&str> = match state.get(*field) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => continue,
        };
        for name in names.into_iter().filter(|n| !n.is_empty()) {
            out.push(Related { element_id: format!("{prefix}{name}"), relation: (*relation).to_owned() });
        }
    }
    out
}

/// At most this many elements are returned for one element (a bridge with thousands of ports
/// lists the first of them).
const MAX_RELATED: usize = 64;

/// The elements related to `element_id` both ways (its own state's links and the states
/// that name it), itself excluded, sorted.
pub fn related(index: &Index, element_id: &str) -> Result<Vec<Related>> {
    let mut out = match index.element(element_id)? {
        Some(row) => named_by(&row.state),
        None => Vec::new(),
    };
    let name = element_id.split_once(':').map_or(element_id, |(_, n)| n);
    if !name.is_empty() {
        let pattern = format!("%\"{}\"%", like_escape(name));
        let mut stmt =
            index.connection().prepare_cached("SELECT element_id, state FROM elements WHERE state LIKE ?1 ESCAPE '\\' LIMIT 1000")?;
        let rows = stmt.query_map([pattern], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (other, state) = row?;
            let state: Value = serde_json::from_str(&state).unwrap_or(Value::Null);
            for link in named_by(&state).into_iter().filter(|l| l.element_id == element_id) {
                out.push(Related { element_id: other.clone(), relation: reverse(&link.relation).to_owned() });
            }
        }
    }
    out.retain(|r| r.element_id != element_id);
    out.sort();
    out.dedup_by(|a, b| a.element_id == b.element_id);
    out.truncate(MAX_RELATED);
    Ok(out)
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn links_are_read_from_state() {
        let port = json!({"name": "vnet0", "bridge": "br0", "interfaces": ["vnet0"]});
        let ids: Vec<String> = named_by(&port).into_iter().map(|r| format!("{}={}", r.relation, r.element_id)).collect();
        assert_eq!(ids, vec!["bridge=bridge:br0", "interface=interface:vnet0"]);
        let conn = json!({"connection.interface-name": "eth0", "connection.master": "bond0"});
        assert_eq!(named_by(&conn).len(), 2);
        assert!(named_by(&json!({"mtu": 1500})).is_empty());
    }
}
