//! A mount's read counters, published beside its record for `layerfs
//! mounts`: bytes of layer files served and bytes inflated to serve them
//! (their ratio is what cold reads cost). The daemon rewrites the file a few
//! times a second while the counters move, and removes it when it stops.
//! The same thread tells the daemon when reads pause (`on_idle`).

use super::MountError;
use crate::layer::SpanCache;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Bytes of files read from the layers (the upper directory's not counted).
    pub served: u64,
    /// Bytes decoded (inflated) from the layers' blobs for those reads.
    pub inflated: u64,
    /// Of `inflated`, those inflated on another core to check the CRCs of
    /// spans served before their end (cached for later reads too).
    #[serde(default)]
    pub checked: u64,
    /// Bytes of decoded spans the cache holds now: the part of the daemon's
    /// memory that `--cache` bounds.
    #[serde(default)]
    pub cached: u64,
}

impl ReadStats {
    pub fn of(cache: &SpanCache) -> ReadStats {
        ReadStats {
            served: cache.served_bytes(),
            inflated: cache.decoded_bytes(),
            checked: cache.checked_bytes(),
            cached: cache.held_bytes(),
        }
    }
}

fn path(store: &Store, id: &str) -> Result<PathBuf, MountError> {
    Ok(super::records::dir(store)?.join(format!("{id}.stats")))
}

/// The counters last published for mount `id`, if any.
pub fn read(store: &Store, id: &str) -> Option<ReadStats> {
    let bytes = std::fs::read(path(store, id).ok()?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Publishes `cache`'s counters for mount `id` until the returned guard
/// drops; calls `on_idle` once each time they stop moving.
pub fn publish(
    store: &Store,
    id: &str,
    cache: Arc<SpanCache>,
    on_idle: fn(),
) -> Result<Publisher, MountError> {
    let path = path(store, id)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (p, s) = (path.clone(), Arc::clone(&stop));
    let thread = std::thread::Builder::new()
        .name("stats".into())
        .spawn(move || {
            let (mut last, mut moving) = (None, false);
            while !s.load(Ordering::Relaxed) {
                let now = ReadStats::of(&cache);
                if last != Some(now) {
                    moving = true;
                    if write(&p, &now).is_ok() {
                        last = Some(now);
                    }
                } else if moving {
                    moving = false;
                    on_idle();
                }
                std::thread::park_timeout(EVERY);
            }
        })
        .map_err(|e| MountError::io(&path, e))?;
    Ok(Publisher {
        path,
        stop,
        thread: Some(thread),
    })
}

fn write(path: &Path, s: &ReadStats) -> std::io::Result<()> {
    let tmp = path.with_extension("stats.tmp");
    std::fs::write(&tmp, serde_json::to_vec(s).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, path)
}

/// Stops the publishing and removes the file.
pub struct Publisher {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Joined first: a write under way would put the file back.
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
