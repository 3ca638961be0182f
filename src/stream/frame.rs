//! The framing of one replication session: per snapshot a JSON header line, then the
//! `btrfs send` stream in chunks (u32 big-endian length + bytes), ended by an empty chunk.
//! The replica answers each snapshot with one JSON acknowledgement line.

use serde::{Deserialize, Serialize};

/// Announces one send stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// `data@S`.
    pub name: String,
    /// The snapshot the stream is incremental to (`btrfs send -p`), or a full send.
    pub parent: Option<String>,
    /// `zstd` when the chunks are a zstd stream of the send stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<String>,
}

/// The replica's answer for one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Ack {
    pub name: String,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The parent named in the header was not there (the replica lost it): send in full.
    #[serde(default)]
    pub missing_parent: bool,
    /// Not taken for a reason of the replica's own (a full disk, an I/O error), not a
    /// refusal of what was sent: the primary retries.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fault: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_uuid: Option<String>,
    #[serde(default)]
    pub head_seq: u64,
    #[serde(default)]
    pub head_hash: String,
    /// The replica's cosignature (a C2SP cosignature/v1 line) of the verified head's
    /// checkpoint, when the snapshot carried one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cosignature: Option<String>,
    /// The replica's witness verifier key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_key: Option<String>,
}

/// Largest chunk accepted (the sender uses 64 KiB).
pub const MAX_CHUNK: usize = 4 << 20;
