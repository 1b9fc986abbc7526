//! `build prune`: drops the build cache. Without `all`, the records of
//! intermediate steps (what only the cache keeps), the cache mounts no
//! build uses now and what dead builds left; with `all`, also the records
//! of tagged results (their images stay: they are tagged). Then a gc frees
//! the blobs only those records kept.

use super::StepError;
use super::cache::Cache;
use super::mounts;
use crate::store::Store;

#[derive(Clone, Debug, Default)]
pub struct PruneReport {
    /// Cache records dropped.
    pub records: usize,
    /// Bytes freed: blobs, cache mounts and scratch dirs.
    pub freed: u64,
}

pub fn prune(store: &Store, all: bool) -> Result<PruneReport, StepError> {
    let records = Cache::open(store)?.prune(store, all)?;
    let mounts_freed = mounts::prune(store)?;
    let gc = store.gc(&[])?;
    Ok(PruneReport {
        records,
        freed: mounts_freed + gc.freed,
    })
}
