//! Holds: records that keep an image's blobs from gc and its tag from a
//! plain `rmi` while something uses it — a mount (held as long as its daemon
//! lives), a container (held until it is removed), a running build.

use super::{Result, Store, StoreError};
use crate::oci::Digest;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hold {
    /// Unique name of the hold, e.g. `mount-<hash>` or `container-<name>`.
    pub id: String,
    /// The manifest (or index) digests it keeps.
    pub manifests: Vec<Digest>,
    /// What holds it, for messages: `mount at /mnt/x`.
    pub what: String,
    /// The process that holds it; the hold ends when it dies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Store {
    fn holds_dir(&self) -> PathBuf {
        self.own_dir().join("holds")
    }

    pub fn add_hold(&self, hold: &Hold) -> Result<()> {
        let dir = self.holds_dir();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let bytes = serde_json::to_vec_pretty(hold)
            .map_err(|e| StoreError::io(&dir, std::io::Error::other(e)))?;
        self.write_file(&dir.join(format!("{}.json", hold.id)), &bytes)
    }

    pub fn remove_hold(&self, id: &str) -> Result<()> {
        let path = self.holds_dir().join(format!("{id}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(&path, e)),
            _ => Ok(()),
        }
    }

    /// The holds in force; those of dead processes are removed on the way.
    pub fn holds(&self) -> Result<Vec<Hold>> {
        let dir = self.holds_dir();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let path = entry.path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
            // A hold that cannot be read keeps something from gc; say so rather than drop it.
            let hold = serde_json::from_slice::<Hold>(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                why: format!("not a hold record ({e}); remove it if nothing uses it"),
            })?;
            if hold.pid.is_some_and(|p| !process_alive(p)) {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            out.push(hold);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// The manifests every hold keeps, as gc roots.
    pub fn held_manifests(&self) -> Result<Vec<Digest>> {
        Ok(self
            .holds()?
            .into_iter()
            .flat_map(|h| h.manifests)
            .collect())
    }
}

/// Whether process `pid` is running. A zombie (exited, not yet reaped, as
/// daemons whose parent left become where no init reaps them) is not.
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold any byte.
    let state = stat
        .iter()
        .rposition(|&c| c == b')')
        .and_then(|i| stat.get(i + 2).copied());
    !matches!(state, None | Some(b'Z') | Some(b'X'))
}
