//! Garbage collection: blobs that no image, no hold (mounts, containers,
//! builds) and no root given by the caller reaches are removed with their indexes,
//! together with temp files that crashed writers left, and partial blobs
//! (lazy images) that nothing reaches.

use super::{Result, Store, StoreError};
use crate::oci::{Digest, ManifestKind};
use std::collections::HashSet;
use std::fs;

#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<(Digest, u64)>,
    pub temp_files: usize,
    pub freed: u64,
}

struct Unreachable {
    digest: Digest,
    size: u64,
    partial: bool,
}

impl Store {
    /// Every blob reachable from index.json and from the manifests or
    /// indexes in `roots`. Missing blobs are skipped (fsck reports them).
    pub fn reachable(&self, roots: &[Digest]) -> Result<HashSet<Digest>> {
        let mut all: Vec<Digest> = self
            .image_entries()?
            .into_iter()
            .map(|e| e.descriptor.digest)
            .collect();
        all.extend_from_slice(roots);
        all.extend(self.held_manifests()?);
        self.reachable_from(&all)
    }

    /// Every blob reachable from the manifests or indexes in `roots` alone.
    pub fn reachable_from(&self, roots: &[Digest]) -> Result<HashSet<Digest>> {
        let mut todo = roots.to_vec();
        let mut seen = HashSet::new();
        while let Some(d) = todo.pop() {
            if !seen.insert(d) {
                continue;
            }
            match self.read_manifest_kind(&d) {
                Ok(ManifestKind::Image(m)) => {
                    seen.insert(m.config.digest);
                    seen.extend(m.layers.iter().map(|l| l.digest));
                }
                Ok(ManifestKind::Index(i)) => todo.extend(i.manifests.iter().map(|m| m.digest)),
                // A manifest that is gone protects nothing (fsck reports it); one
                // that cannot be read might, so gc stops rather than guess.
                Err(StoreError::BlobNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(seen)
    }

    /// The blobs that `gc(roots)` would remove now, whole ones and partial
    /// ones (lazy images; counted by their local bytes).
    fn unreachable_blobs(&self, roots: &[Digest]) -> Result<Vec<Unreachable>> {
        let keep = self.reachable(roots)?;
        let mut out: Vec<Unreachable> = self
            .list_blobs()?
            .into_iter()
            .filter(|d| !keep.contains(d))
            .map(|digest| Unreachable {
                digest,
                size: self.blob_size(&digest).unwrap_or(0),
                partial: false,
            })
            .collect();
        for digest in self.list_partials()? {
            if !keep.contains(&digest) {
                // A damaged record must not stop gc: its blob goes all the same.
                let size = match self.partial_status(&digest) {
                    Ok(status) => status.map_or(0, |(_, n)| n),
                    Err(e) => {
                        log::warn!("gc: partial blob {digest}: {e}");
                        0
                    }
                };
                out.push(Unreachable {
                    digest,
                    size,
                    partial: true,
                });
            }
        }
        Ok(out)
    }

    /// What `gc(roots)` would remove and free if no writer were active,
    /// removing nothing (`df`'s reclaimable bytes are this report's).
    pub fn gc_plan(&self, roots: &[Digest]) -> Result<GcReport> {
        let mut report = GcReport::default();
        for u in self.unreachable_blobs(roots)? {
            report.freed += u.size;
            report.removed.push((u.digest, u.size));
        }
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(|e| StoreError::io(&tmp, e))? {
            let entry = entry.map_err(|e| StoreError::io(&tmp, e))?;
            report.freed += entry.metadata().map_or(0, |m| m.len());
            report.temp_files += 1;
        }
        Ok(report)
    }

    /// Removes what nothing reaches. Waits for writers to finish (they hold
    /// the store lock shared) and keeps them out while it runs.
    pub fn gc(&self, roots: &[Digest]) -> Result<GcReport> {
        let _lock = self.lock_exclusive()?;
        let mut report = GcReport::default();
        self.heal_partials()?;
        for u in self.unreachable_blobs(roots)? {
            if u.partial {
                self.remove_partial(&u.digest)?;
            } else {
                self.remove_blob(&u.digest)?;
            }
            report.freed += u.size;
            report.removed.push((u.digest, u.size));
        }
        // Indexes whose blob is gone (a partial blob's index stays).
        let index_dir = self.index_dir();
        for entry in fs::read_dir(&index_dir).map_err(|e| StoreError::io(&index_dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&index_dir, e))?;
            let name = entry.file_name();
            let hex = name.to_str().and_then(|n| n.strip_suffix(".idx"));
            let orphan = match hex.and_then(|h| Digest::from_hex(h).ok()) {
                Some(d) => !self.has_blob(&d) && !self.has_partial(&d),
                None => true,
            };
            if orphan {
                let _ = fs::remove_file(entry.path());
            }
        }
        // No writer is active: every temp file is left over from a crash.
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(|e| StoreError::io(&tmp, e))? {
            let entry = entry.map_err(|e| StoreError::io(&tmp, e))?;
            report.freed += entry.metadata().map_or(0, |m| m.len());
            if fs::remove_file(entry.path()).is_ok() {
                report.temp_files += 1;
            }
        }
        Ok(report)
    }
}
