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
    /// The hash matches, but the body is not in canonical form (an added space, an escape
    /// where none is due, a duplicate key): the format defines the hash over canonical bytes.
    NotCanonical(String),
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
    let canonical = record.body().canonical();
    if canonical.len() != covered.len() + 1 || canonical[..covered.len()] != *covered {
        return Err(LineError::NotCanonical(not_canonical_because(covered, &canonical)));
    }
    Ok(record)
}

/// Says where `covered` (a body without its closing brace) departs from `canonical`.
fn not_canonical_because(covered: &[u8], canonical: &[u8]) -> String {
    if let Err(e) = serde_json::from_slice::<NoDuplicateKeys>(&[covered, b"}"].concat()) {
        return e.to_string();
    }
    let at = covered.iter().zip(canonical).position(|(a, b)| a != b).unwrap_or(covered.len().min(canonical.len()));
    let around = |bytes: &[u8]| String::from_utf8_lossy(&bytes[at.saturating_sub(12)..(at + 12).min(bytes.len())]).into_owned();
    format!("not in canonical form at byte {at}: {:?} where the canonical encoding has {:?}", around(covered), around(canonical))
}

/// Parses any JSON and fails on the first object with a key twice (serde_json keeps the
/// last silently).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
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
        Value::Number(n) => super::number::write_number(out, n),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Null => out.extend_from_slice(b"null"),
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

    /// A line whose body was edited and re-hashed: the hash matches, the form does not.
    fn resealed(line: &[u8], edit: impl Fn(&str) -> String) -> Vec<u8> {
        let text = std::str::from_utf8(&line[..line.len() - HASH_SUFFIX_LEN - 1]).unwrap();
        let body = edit(&format!("{text}}}"));
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]).into_bytes()
    }

    #[test]
    fn a_resealed_body_out_of_canonical_form_is_refused() {
        let details = json!({"state": "up-down", "mtu": 1500});
        let (line, _) = encode_line(&body(&details, &ZERO_HASH));
        let cases: [(&str, &dyn Fn(&str) -> String, &str); 4] = [
            ("space", &|b| b.replacen("\"mtu\":", "\"mtu\": ", 1), "at byte"),
            ("escape", &|b| b.replacen("up-down", "up\\u002ddown", 1), "at byte"),
            ("duplicate", &|b| b.replacen("\"mtu\":1500", "\"mtu\":9000,\"mtu\":1500", 1), "duplicate key \"mtu\""),
            ("order", &|b| b.replacen("\"mtu\":1500,\"state\":\"up-down\"", "\"state\":\"up-down\",\"mtu\":1500", 1), "at byte"),
        ];
        for (name, edit, says) in cases {
            let bad = resealed(&line, edit);
            assert_ne!(bad, line[..line.len() - 1], "{name}: the edit changed something");
            match decode_line(&bad) {
                Err(LineError::NotCanonical(why)) => assert!(why.contains(says), "{name}: {why}"),
                other => panic!("{name}: expected NotCanonical, got {other:?}"),
            }
        }
        assert!(decode_line(&resealed(&line, |b| b.to_owned())).is_ok(), "resealing unchanged bytes is fine");
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

#[cfg(test)]
mod hostile_lines {
    use super::*;
    use proptest::prelude::*;

    const KEYS: &[&str] = &["state", "carrier", "mtu", "before", "after", "changed", "ports", "name"];

    proptest! {
        // Bounded: 2048 cases each, well under a second.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any bytes as a ledger line: a record or an error, never a panic.
        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_line(&bytes);
        }

        /// A record with any details round-trips, and any single changed byte of its line
        /// is caught (by the JSON, the hash or the canonical form).
        #[test]
        fn a_changed_byte_never_decodes(details in crate::arbitrary_json::json(KEYS), at in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let prev = [7u8; 32];
            let body = Body {
                seq: 9,
                ts: 1_700_000_000_000_000_000,
                host: "h",
                source: "test",
                element_id: "interface:eth0",
                element_type: "interface",
                action: "link.down",
                priority: Priority::High,
                summary: "s",
                details: &details,
                prev: &prev,
                element_prev: &ZERO_HASH,
            };
            let (line, _) = encode_line(&body);
            let line = &line[..line.len() - 1];
            prop_assert!(decode_line(line).is_ok());
            let mut changed = line.to_vec();
            let i = at.index(changed.len());
            changed[i] ^= flip;
            prop_assert!(decode_line(&changed).is_err(), "byte {i} changed and still decoded");
        }
    }
}
