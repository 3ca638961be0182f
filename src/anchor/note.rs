//! C2SP signed notes (c2sp.org/signed-note) with Ed25519 signatures, and Ed25519
//! cosignatures v1 (c2sp.org/tlog-cosignature): what standard transparency-log tools read.
//!
//! A note is text ending in a newline, a blank line, then signature lines
//! `— <key name> <base64(key ID ‖ signature)>`. Key IDs are the first 4 bytes of
//! SHA-256(name ‖ 0x0A ‖ type ‖ public key), type 0x01 for note signatures and 0x04 for
//! cosignatures, whose signature is `timestamp (u64, big-endian) ‖ Ed25519 signature` over
//! `cosignature/v1\ntime <timestamp>\n` followed by the note text.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature type of a note signature.
pub const NOTE_ED25519: u8 = 0x01;
/// Signature type of a cosignature v1.
pub const COSIGNATURE_ED25519: u8 = 0x04;
const SIGNATURE_PREFIX: &str = "\u{2014} ";
/// Signature lines read from one note at most (as Go's note package).
const MAX_SIGNATURES: usize = 100;

/// `SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4]`.
pub fn key_id(name: &str, kind: u8, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', kind]);
    h.update(public);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// A key name is non-empty, without spaces, `+` or control characters.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control()) {
        bail!("key name {name:?} must be non-empty and hold no spaces, '+' or control characters");
    }
    Ok(())
}

/// A signing key with its name.
pub struct Signer {
    pub name: String,
    key: SigningKey,
}

/// Names the key, never shows it.
impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(name: &str, seed: [u8; 32]) -> Result<Self> {
        check_name(name)?;
        Ok(Self { name: name.to_owned(), key: SigningKey::from_bytes(&seed) })
    }

    /// The key in Go's note private-key text: `PRIVATE+KEY+<name>+<id>+<base64(0x01 ‖ seed)>`.
    pub fn private_text(&self) -> String {
        let id = key_id(&self.name, NOTE_ED25519, self.key.verifying_key().as_bytes());
        let mut material = vec![NOTE_ED25519];
        material.extend_from_slice(&self.key.to_bytes());
        format!("PRIVATE+KEY+{}+{}+{}", self.name, hex::encode(id), B64.encode(material))
    }

    /// Reads [`private_text`](Self::private_text) back.
    pub fn from_private_text(text: &str) -> Result<Self> {
        let rest = text.trim().strip_prefix("PRIVATE+KEY+").ok_or_else(|| anyhow!("not a note private key"))?;
        // Split from the left: names hold no '+', base64 may.
        let mut parts = rest.splitn(3, '+');
        let (name, _id, material) = (parts.next(), parts.next(), parts.next());
        let (Some(name), Some(material)) = (name, material) else { bail!("not a note private key") };
        let material = B64.decode(material).context("the key material is not base64")?;
        let [NOTE_ED25519, seed @ ..] = material.as_slice() else { bail!("not an Ed25519 note key") };
        Self::new(name, seed.try_into().map_err(|_| anyhow!("an Ed25519 seed is 32 bytes"))?)
    }

    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The verifier key others use to check this key's signatures of `kind`.
    pub fn vkey(&self, kind: u8) -> String {
        vkey(&self.name, kind, &self.public())
    }

    /// A note signature line over `text` (which ends in a newline).
    pub fn sign(&self, text: &str) -> String {
        let mut bytes = key_id(&self.name, NOTE_ED25519, &self.public()).to_vec();
        bytes.extend_from_slice(&self.key.sign(text.as_bytes()).to_bytes());
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }

    /// A cosignature v1 line over the note `text`, made at `timestamp` (Unix seconds).
    pub fn cosign(&self, text: &str, timestamp: u64) -> String {
        let signature = self.key.sign(&cosigned_message(text, timestamp));
        let mut bytes = key_id(&self.name, COSIGNATURE_ED25519, &self.public()).to_vec();
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, B64.encode(bytes))
    }
}

fn cosigned_message(text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{text}").into_bytes()
}

pub fn vkey(name: &str, kind: u8, public: &[u8; 32]) -> String {
    let mut material = vec![kind];
    material.extend_from_slice(public);
    format!("{name}+{}+{}", hex::encode(key_id(name, kind, public)), B64.encode(material))
}

/// A verifier key: who signs, with which key, of which kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub kind: u8,
    pub id: [u8; 4],
    key: VerifyingKey,
}

impl Verifier {
    /// Reads `<name>+<hex id>+<base64(type ‖ key)>`; the ID must match the key.
    pub fn parse(vkey: &str) -> Result<Self> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("{vkey:?} is not a verifier key (name+id+key)")
        };
        check_name(name)?;
        let material = B64.decode(material).with_context(|| format!("the key of {vkey:?} is not base64"))?;
        let [kind @ (NOTE_ED25519 | COSIGNATURE_ED25519), public @ ..] = material.as_slice() else {
            bail!("{vkey:?} is not an Ed25519 note or cosignature key")
        };
        let public: [u8; 32] = public.try_into().map_err(|_| anyhow!("{vkey:?}: an Ed25519 key is 32 bytes"))?;
        let expected = key_id(name, *kind, &public);
        if hex::encode(expected) != id {
            bail!("{vkey:?}: the key ID {id} does not match the key ({})", hex::encode(expected));
        }
        let key = VerifyingKey::from_bytes(&public).map_err(|_| anyhow!("{vkey:?}: not a valid Ed25519 key"))?;
        Ok(Self { name: name.to_owned(), kind: *kind, id: expected, key })
    }

    pub fn text(&self) -> String {
        vkey(&self.name, self.kind, self.key.as_bytes())
    }

    /// Checks the signature lines of a note made by this key: `Some(timestamp)` for a valid
    /// cosignature (0 for a note signature), `None` when no line is this key's; an error
    /// when this key's line does not verify.
    pub fn check(&self, note: &Note) -> Result<Option<u64>> {
        let Some(line) = note.signatures.iter().find(|s| s.name == self.name && s.bytes.get(..4) == Some(&self.id[..])) else {
            return Ok(None);
        };
        let (timestamp, message, signature) = match self.kind {
            NOTE_ED25519 => (0, note.text.as_bytes().to_vec(), &line.bytes[4..]),
            _ => {
                let stamp = line.bytes.get(4..12).ok_or_else(|| anyhow!("a cosignature of {} is too short", self.name))?;
                let timestamp = u64::from_be_bytes(stamp.try_into().expect("8 bytes"));
                (timestamp, cosigned_message(&note.text, timestamp), &line.bytes[12..])
            }
        };
        let signature =
            ed25519_dalek::Signature::from_slice(signature).map_err(|_| anyhow!("a signature of {} is malformed", self.name))?;
        self.key.verify_strict(&message, &signature).map_err(|_| anyhow!("the signature of {} does not verify", self.name))?;
        Ok(Some(timestamp))
    }
}

/// A signature line is at most this long (a cosignature's is about 140 bytes).
const MAX_LINE_BYTES: usize = 512;

impl Verifier {
    /// Checks one signature `line` (as sent by its signer) over the note `text` on its own:
    /// exactly one line, this key's name and ID, a signature that verifies. Returns the
    /// cosignature's timestamp (0 for a note signature).
    pub fn check_line(&self, text: &str, line: &str) -> Result<u64> {
        let body = line.strip_suffix('\n').ok_or_else(|| anyhow!("a signature line ends in a newline"))?;
        if line.len() > MAX_LINE_BYTES || body.contains('\n') {
            bail!("a signature line is one line of at most {MAX_LINE_BYTES} bytes");
        }
        let note = Note::parse(format!("{text}\n{line}").as_bytes())?;
        let only = &note.signatures[0];
        if only.name != self.name || only.bytes.get(..4) != Some(&self.id[..]) {
            bail!("the signature line is not of {}'s key", self.name);
        }
        self.check(&note)?.ok_or_else(|| anyhow!("the signature line is not of {}'s key", self.name))
    }
}

/// One signature line: its key name and decoded bytes (key ID first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A parsed signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, with its final newline.
    pub text: String,
    pub signatures: Vec<SignatureLine>,
}

impl Note {
    /// Splits a note at its last blank line and reads every signature line.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let all = std::str::from_utf8(bytes).context("a note is UTF-8")?;
        if all.chars().any(|c| c.is_control() && c != '\n') {
            bail!("a note holds no control characters but newlines");
        }
        let split = all.rfind("\n\n").ok_or_else(|| anyhow!("a note has a blank line before its signatures"))?;
        let (text, lines) = (&all[..split + 1], &all[split + 2..]);
        if !lines.ends_with('\n') {
            bail!("a note's last signature line ends in a newline");
        }
        let mut signatures = Vec::new();
        for line in lines.lines() {
            let rest = line.strip_prefix(SIGNATURE_PREFIX).ok_or_else(|| anyhow!("{line:?} is not a signature line"))?;
            let (name, b64) = rest.split_once(' ').ok_or_else(|| anyhow!("{line:?} is not a signature line"))?;
            let bytes = B64.decode(b64).with_context(|| format!("the signature of {name} is not base64"))?;
            if bytes.len() < 5 {
                bail!("the signature of {name} is too short");
            }
            signatures.push(SignatureLine { name: name.to_owned(), bytes });
        }
        if signatures.is_empty() || signatures.len() > MAX_SIGNATURES {
            bail!("a note has 1 to {MAX_SIGNATURES} signatures, not {}", signatures.len());
        }
        Ok(Self { text: text.to_owned(), signatures })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of c2sp.org/signed-note, verified by our code.
    #[test]
    fn the_specs_example_verifies() {
        let verifier = Verifier::parse("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k").unwrap();
        let note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
        assert_eq!(verifier.check(&Note::parse(note.as_bytes()).unwrap()).unwrap(), Some(0));
        let forged = note.replace("example message", "exemplary message");
        assert!(verifier.check(&Note::parse(forged.as_bytes()).unwrap()).is_err());
    }

    #[test]
    fn signatures_and_cosignatures_round_trip_and_keys_are_told_apart() {
        let log = Signer::new("host-a/ovs-port-agent", [7; 32]).unwrap();
        let witness = Signer::new("replica-1/ovs-port-agent-witness", [9; 32]).unwrap();
        let text = "host-a/ovs-port-agent\n42\nq83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=\n";
        let note = format!("{text}\n{}{}", log.sign(text), witness.cosign(text, 1_700_000_000));
        let parsed = Note::parse(note.as_bytes()).unwrap();
        assert_eq!(Verifier::parse(&log.vkey(NOTE_ED25519)).unwrap().check(&parsed).unwrap(), Some(0));
        assert_eq!(Verifier::parse(&witness.vkey(COSIGNATURE_ED25519)).unwrap().check(&parsed).unwrap(), Some(1_700_000_000));
        // The witness key as a note key has another ID: its lines are not that key's.
        assert_eq!(Verifier::parse(&witness.vkey(NOTE_ED25519)).unwrap().check(&parsed).unwrap(), None);
        let private = Signer::from_private_text(&log.private_text()).unwrap();
        assert_eq!(private.public(), log.public());
        // Keys whose base64 holds '+' and '/' read back too.
        for seed in 0..64u8 {
            let s = Signer::new("n/x", [seed; 32]).unwrap();
            assert_eq!(Signer::from_private_text(&s.private_text()).unwrap().public(), s.public());
            assert_eq!(Verifier::parse(&s.vkey(COSIGNATURE_ED25519)).unwrap().text(), s.vkey(COSIGNATURE_ED25519));
        }
        assert!(Verifier::parse("x+00000000+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k").is_err(), "a wrong ID is refused");

        // A cosignature sent alone is checked alone: one line, this key's, valid.
        let w = Verifier::parse(&witness.vkey(COSIGNATURE_ED25519)).unwrap();
        let line = witness.cosign(text, 1_700_000_000);
        assert_eq!(w.check_line(text, &line).unwrap(), 1_700_000_000);
        let smuggled = format!("{line}{}", log.sign(text));
        assert!(w.check_line(text, &smuggled).is_err(), "a second line rides along: refused");
        assert!(w.check_line(text, &log.sign(text)).is_err(), "another key's line: refused");
        assert!(w.check_line("other text\n", &line).is_err(), "over another text: refused");
    }
}
