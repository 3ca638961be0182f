//! One ledger record: its canonical encoding, its hash and its parsing.
//!
//! The exact bytes are specified in `docs/ledger-format.md`; keep the two in step.

use crate::event::Priority;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// A 32-byte SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first record and the `element_prev` of an element's first record.
pub const ZERO_HASH: Hash = [0; 32];

/// A record as stored in the ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    pub ts: i64,
    pub host: String,
    pub source: String,
    pub element_id: String,
    pub element_type: String,
    pub action: String,
    pub priority: Priority,
    pub summary: String,
    pub details: Value,
    #[serde(with = "hex_hash")]
    pub prev: Hash,
    #[serde(with = "hex_hash")]
    pub element_prev: Hash,
    #[serde(with = "hex_hash")]
    pub hash: Hash,
}

impl Record {
    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// The hashed part of this record (everything but `hash`).
    pub fn body(&self) -> Body<'_> {
        Body {
            seq: self.seq,
            ts: self.ts,
            host: &self.host,
            source: &self.source,
            element_id: &self.element_id,
            element_type: &self.element_type,
            action: &self.action,
            priority: self.priority,
            summary: &self.summary,
            details: &self.details,
            prev: &self.prev,
            element_prev: &self.element_prev,
        }
    }
}

/// Everything of a record except its hash, in the order the canonical encoding writes it.
pub struct Body<'a> {
    pub seq: u64,
    pub ts: i64,
    pub host: &'a str,
    pub source: &'a str,
    pub element_id: &'a str,
    pub element_type: &'a str,
    pub action: &'a str,
    pub priority: Priority,
    pub summary: &'a str,
    pub details: &'a Value,
    pub prev: &'a Hash,
    pub element_prev: &'a Hash,
}

impl Body<'_> {
    /// The canonical encoding: compact JSON, keys sorted by their UTF-8 bytes at every level.
    pub fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.summary.len());
        out.push(b'{');
        // Keys in sorted order; `hash` is not part of the body.
        write_key(&mut out, "action", true);
        write_str(&mut out, self.action);
        write_key(&mut out, "details", false);
        write_canonical_value(&mut out, self.details);
        write_key(&mut out, "element_id", false);
        write_str(&mut out, self.element_id);
        write_key(&mut out, "element_prev", false);
        write_hex(&mut out, self.element_prev);
        write_key(&mut out, "element_type", false);
        write_str(&mut out, self.element_type);
        write_key(&mut out, "host", false);
        write_str(&mut out, self.host);
        write_key(&mut out, "prev", false);
        write_hex(&mut out, self.prev);
        write_key(&mut out, "priority", false);
        write_str(&mut out, self.priority.as_str());
        write_key(&mut out, "seq", false);
        out.extend_from_slice(self.seq.to_string().as_bytes());
        write_key(&mut out, "source", false);
        write_str(&mut out, self.source);
        write_key(&mut out, "summary", false);
        write_str(&mut out, self.summary);
        write_key(&mut out, "ts", false);
        out.extend_from_slice(self.ts.to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// Encodes a body as one ledger line (with its trailing newline) and returns the line and hash.
pub fn encode_line(body: &Body<'_>) -> (Vec<u8>, Hash) {
    let mut line = body.canonical();
    let hash: Hash = Sha256::digest(&line).into();
    line.pop(); // the closing brace; the hash field goes before it
    line.extend_from_slice(HASH_FIELD);
    write_hex_raw(&mut line, &hash);
    line.extend_from_slice(b"\"}\n");
    (line, hash)
}

const HASH_FIELD: &[u8] = b",\"hash\":\"";
/// Length of `,"hash":"<64 hex>"}` at the end of every line.
const HASH_SUFFIX_LEN: usize = HASH_FIELD.len() + 64 + 2;

/// Why one line is not a valid record on its own (chain links are checked elsewhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineError {
    /// Not a JSON object with every field of the right type.
    Malformed(String),
    /// The stored hash does not match the bytes it covers.
    HashMismatch { stored: String, computed: String },
}

/// Parses one line (without its newline) and checks its hash against the bytes it covers.
pub fn decode_line(line: &[u8]) -> Result<Record, LineError> {
    let record: Record = serde_json::from_slice(line).map_err(|e| LineError::Malformed(e.to_string()))?;
    if line.len() < HASH_SUFFIX_LEN || !line[line.len() - HASH_SUFFIX_LEN..].starts_with(HASH_FIELD) {
        return Err(LineError::Malformed("the hash is not the last field".into()));
    }
    let covered = &line[..line.len() - HASH_SUFFIX_LEN];
    let mut hasher = Sha256::new();
    hasher.update(covered);
    hasher.update(b"}");
    let computed: Hash = hasher.finalize().into();
    if computed != record.hash {
        return Err(LineError::HashMismatch { stored: hex::encode(record.hash), computed: hex::encode(computed) });
    }
    Ok(record)
}

fn write_key(out: &mut Vec<u8>, key: &str, first: bool) {
    if !first {
        out.push(b',');
    }
    write_str(out, key);
    out.push(b':');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's string escaping: `"` `\` and control characters only; other
    // characters are written as raw UTF-8 (see docs/ledger-format.md).
    serde_json::to_writer(&mut *out, s).expect("writing to a Vec cannot fail");
}

fn write_hex(out: &mut Vec<u8>, hash: &Hash) {
    out.push(b'"');
    write_hex_raw(out, hash);
    out.push(b'"');
}

fn write_hex_raw(out: &mut Vec<u8>, hash: &Hash) {
    let mut buf = [0u8; 64];
    hex::encode_to_slice(hash, &mut buf).expect("64 bytes hold 32 in hex");
    out.extend_from_slice(&buf);
}

/// Writes any JSON value with object keys sorted, independent of serde_json's map type.
pub fn write_canonical_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push(b'{');
            for (i, key) in keys.into_iter().enumerate() {
                write_key(out, key, i == 0);
                write_canonical_value(out, &map[key]);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical_value(out, item);
            }
            out.push(b']');
        }
        Value::String(s) => write_str(out, s),
        other => serde_json::to_writer(&mut *out, other).expect("writing to a Vec cannot fail"),
    }
}

mod hex_hash {
    use super::Hash;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(hash: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 32];
        if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(D::Error::custom("a hash is 64 lowercase hex digits"));
        }
        hex::decode_to_slice(text.as_bytes(), &mut out).map_err(D::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body<'a>(details: &'a Value, prev: &'a Hash) -> Body<'a> {
        Body {
            seq: 7,
            ts: 1_700_000_000_123_456_789,
            host: "host-a",
            source: "test",
            element_id: "interface:eth0",
            element_type: "interface",
            action: "link.down",
            priority: Priority::High,
            summary: "eth0 lost carrier \u{2014} \"quoted\"",
            details,
            prev,
            element_prev: &ZERO_HASH,
        }
    }

    #[test]
    fn canonical_sorts_nested_keys_and_round_trips() {
        let details = json!({"z": 1, "a": {"y": [1, 2.5, null], "b": true}, "m": "é\n"});
        let prev = [0xab; 32];
        let (line, hash) = encode_line(&body(&details, &prev));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with(r#"{"action":"link.down","details":{"a":{"b":true,"y":[1,2.5,null]},"m":"é\n","z":1},"#));
        assert!(text.ends_with("\"}\n"));
        let record = decode_line(&line[..line.len() - 1]).unwrap();
        assert_eq!(record.hash, hash);
        assert_eq!(record.seq, 7);
        assert_eq!(record.details, details);
    }

    #[test]
    fn any_changed_value_is_a_hash_mismatch() {
        let details = json!({"mtu": 1500});
        let (line, _) = encode_line(&body(&details, &ZERO_HASH));
        let text = String::from_utf8(line).unwrap().replace("1500", "9000");
        match decode_line(text.trim_end().as_bytes()) {
            Err(LineError::HashMismatch { .. }) => {}
            other => panic!("expected a hash mismatch, got {other:?}"),
        }
    }

    #[test]
    fn hash_must_be_last_and_lowercase() {
        let details = json!({});
        let (line, _) = encode_line(&body(&details, &ZERO_HASH));
        let text = String::from_utf8(line).unwrap();
        let upper = text.trim_end().replace("\"prev\":\"0000", "\"prev\":\"000A");
        assert!(matches!(decode_line(upper.as_bytes()), Err(LineError::Malformed(_))));
    }
}
