//! Signing keys on disk: made on first use, 0600, in Go's note private-key text. A key is
//! never logged; its verifier key (public) is.

use super::note::{NOTE_ED25519, Signer};
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Where the replicas' witness keys are pinned on a primary (`<replica>.vkey`, and
/// `retired/` for keys replaced at re-enrolment).
pub fn witnesses_dir(root: &Path) -> std::path::PathBuf {
    root.join("keys").join("witnesses")
}

/// Loads the key at `path`, or makes one named `name` there when there is none. A key
/// readable by anyone but its owner is refused (it may have been copied).
pub fn load_or_create(path: &Path, name: &str) -> Result<Signer> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            if !meta.is_file() {
                bail!("{} is not a regular file", path.display());
            }
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                bail!(
                    "the signing key {} is open to others (mode {mode:o}); make it 0600 (chmod 600) or remove it to make a new one",
                    path.display()
                );
            }
            let text = crate::durable::read_limited(path, 4096)?;
            Signer::from_private_text(&String::from_utf8_lossy(&text))
                .with_context(|| format!("reading the signing key {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, name),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn create(path: &Path, name: &str) -> Result<Signer> {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    let signer = Signer::new(name, seed)?;
    let dir = path.parent().context("a key file has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    // Written aside and linked into place: a process making the same key at the same time
    // (two replica sessions starting together) finds the first one's, never half a file.
    let staged = dir.join(format!(".{}.{}.new", path.file_name().and_then(|n| n.to_str()).unwrap_or("key"), std::process::id()));
    let _ = std::fs::remove_file(&staged);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("creating {}", staged.display()))?;
    file.write_all(format!("{}\n", signer.private_text()).as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&staged, path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return load_or_create(path, name),
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    std::fs::File::open(dir)?.sync_all()?;
    tracing::info!(key = %path.display(), vkey = %signer.vkey(NOTE_ED25519), "made a new signing key");
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_private_and_refused_when_open() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("keys/checkpoint.key");
        let a = load_or_create(&path, "h/ovs-port-agent").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let b = load_or_create(&path, "ignored").unwrap();
        assert_eq!((a.public(), b.name.as_str()), (b.public(), "h/ovs-port-agent"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_or_create(&path, "x").unwrap_err().to_string().contains("chmod 600"));
    }
}
