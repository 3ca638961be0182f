//! Heads anchored outside the host: each snapshot's ledger head is written as a signed
//! checkpoint (a C2SP signed note), replicas cosign what they verified, and `verify
//! --anchored` checks the ledger against the cosigned heads. See docs/anchoring.md.
pub mod audit;
pub mod checkpoint;
pub mod keys;
pub mod note;

pub use checkpoint::Checkpoint;
pub use note::{COSIGNATURE_ED25519, NOTE_ED25519, Note, Signer, Verifier};
