//! The replica role: serves read-only queries from the newest verified snapshot that
//! `replica-receive` accepted, switching atomically when a newer one arrives. Nothing is
//! re-embedded: the model is loaded for queries only.

use crate::config::Config;
use crate::layout::Layout;
use crate::reader::OfflineReader;
use crate::stream::receive;
use crate::stream::snapshot::Manifest;
use anyhow::{Result, anyhow};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// One opened snapshot.
pub struct Current {
    pub name: String,
    pub manifest: Manifest,
    pub layout: Layout,
    pub reader: OfflineReader,
}

pub struct ReplicaView {
    dir: PathBuf,
    config: Config,
    current: RwLock<Option<Arc<Current>>>,
    /// The receiver's state file as last seen (modification time), to skip unchanged polls.
    seen: std::sync::Mutex<Option<std::time::SystemTime>>,
}

impl ReplicaView {
    pub fn open(dir: &Path, config: &Config) -> Result<Self> {
        let view = Self { dir: dir.to_owned(), config: config.clone(), current: RwLock::new(None), seen: std::sync::Mutex::new(None) };
        view.refresh()?;
        Ok(view)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens the newest verified snapshot if it is not the one being served; returns true
    /// when it switched. Cheap when nothing changed (one small file read).
    pub fn refresh(&self) -> Result<bool> {
        let modified = std::fs::metadata(self.dir.join("replica-state.json")).and_then(|m| m.modified()).ok();
        {
            // A failed open is retried when the next snapshot arrives, not every poll.
            let mut seen = self.seen.lock().expect("seen lock");
            if modified.is_some() && *seen == modified {
                return Ok(false);
            }
            *seen = modified;
        }
        let Some(path) = receive::newest(&self.dir) else { return Ok(false) };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if self.current.read().expect("replica lock").as_ref().is_some_and(|c| c.name == name) {
            return Ok(false);
        }
        let layout = Layout::detect(&path);
        let manifest = Manifest::read(&path)?;
        let previous = self.current.read().expect("replica lock").clone();
        let reader = match previous {
            Some(prev) if prev.manifest.seq <= manifest.seq => prev.reader.advance(&layout)?,
            _ => OfflineReader::open(&layout, &self.config)?,
        };
        *self.current.write().expect("replica lock") = Some(Arc::new(Current { name: name.clone(), manifest, layout, reader }));
        tracing::info!(snapshot = %name, "serving a new snapshot");
        Ok(true)
    }

    pub fn current(&self) -> Result<Arc<Current>> {
        self.current
            .read()
            .expect("replica lock")
            .clone()
            .ok_or_else(|| anyhow!("no verified snapshot has arrived in {} yet", self.dir.display()))
    }
}
