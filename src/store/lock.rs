//! File locks that make concurrent layerfs processes safe. Writers of blobs
//! hold the store lock shared; `gc` holds it exclusive, so it never removes a
//! blob some process is about to tag. index.json updates take `refs.lock`.

use super::{Result, Store, StoreError};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// A held flock; released on drop.
pub struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    fn take(path: &Path, arg: FlockArg) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let lock = Flock::lock(file, arg)
            .map_err(|(_, errno)| StoreError::io(path, std::io::Error::from(errno)))?;
        Ok(StoreLock { _lock: lock })
    }
}

impl Store {
    /// Held while blobs are written and tagged.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        StoreLock::take(&self.own_dir().join("lock"), FlockArg::LockShared)
    }

    /// Held by `gc`: no writer is active while it runs.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        StoreLock::take(&self.own_dir().join("lock"), FlockArg::LockExclusive)
    }

    pub(super) fn lock_refs(&self) -> Result<StoreLock> {
        StoreLock::take(&self.own_dir().join("refs.lock"), FlockArg::LockExclusive)
    }
}
