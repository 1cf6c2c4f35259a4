//! The durable configuration of a single instance: what the state file holds, and the file
//! itself, replaced atomically: write a temporary file, fsync it, rename it over the old one,
//! fsync the directory (the sequence SQLite and etcd use; without the directory fsync the rename
//! itself may be lost on power failure). In a cluster the same format keeps
//! `--cluster-fallback-state`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::{BackendAddr, BackendSpec, MAX_WEIGHT};
use crate::strategy::StrategyKind;

/// Version of the state file format.
pub(crate) const STATE_FORMAT: u32 = 1;

/// One backend as an operator configured it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedBackend {
    pub address: BackendAddr,
    pub weight: u32,
    pub enabled: bool,
}

/// The durable part of the configuration: what the state file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SavedState {
    pub format: u32,
    pub strategy: StrategyKind,
    pub backends: Vec<SavedBackend>,
}

/// The state file, if one is configured.
#[derive(Debug, Clone)]
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub(crate) fn new(path: impl Into<PathBuf>) -> StateFile {
        StateFile { path: path.into() }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved state; `Ok(None)` when there is no file yet. A file that exists but cannot
    /// be read or parsed is an error naming the file, and the file is left as it is.
    pub(crate) fn load(&self) -> Result<Option<SavedState>, String> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(format!(
                    "cannot read state file {}: {e}",
                    self.path.display()
                ))
            }
        };
        let state: SavedState = serde_json::from_str(&text).map_err(|e| {
            format!(
                "state file {} is corrupt: {e} (fix or remove it; it was left untouched)",
                self.path.display()
            )
        })?;
        if state.format != STATE_FORMAT {
            return Err(format!(
                "state file {} has format {}, this sluice reads format {STATE_FORMAT}",
                self.path.display(),
                state.format
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for b in &state.backends {
            if b.weight > MAX_WEIGHT {
                return Err(format!(
                    "state file {}: weight {} of {} is above {MAX_WEIGHT}",
                    self.path.display(),
                    b.weight,
                    b.address
                ));
            }
            if !seen.insert(&b.address) {
                return Err(format!(
                    "state file {}: backend {} appears twice",
                    self.path.display(),
                    b.address
                ));
            }
        }
        Ok(Some(state))
    }

    /// Replaces the file atomically and durably.
    pub(crate) fn save(&self, state: &SavedState) -> io::Result<()> {
        let text = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::other("state file path has no file name"))?;
        let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&text)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            File::open(&dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Says at start what a state file restored, and which flags it overrides.
pub(crate) fn report_restored(
    saved: &SavedState,
    file: &StateFile,
    flag_backends: &[BackendSpec],
    flag_strategy: StrategyKind,
) {
    let path = file.path().display();
    log::info!(
        "restored {} backends and strategy {} from the state file {path}",
        saved.backends.len(),
        saved.strategy
    );
    let same_backends = flag_backends.len() == saved.backends.len()
        && flag_backends
            .iter()
            .all(|f| saved.backends.iter().any(|b| b.address == f.addr));
    if !flag_backends.is_empty() && !same_backends {
        let flags: Vec<String> = flag_backends.iter().map(|b| b.addr.to_string()).collect();
        log::warn!(
            "--backend {} ignored: the state file {path} decides the backends (change them with \
             sluice ctl, or remove the file to start from the flags)",
            flags.join(" --backend ")
        );
    }
    if flag_strategy != saved.strategy {
        log::info!(
            "strategy {} comes from the state file; the --strategy flag ({flag_strategy}) does not apply",
            saved.strategy
        );
    }
}
