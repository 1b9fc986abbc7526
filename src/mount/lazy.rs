//! Lazy mounts: once the mount answers, the rest of every layer the store
//! holds in part streams in behind the reads, one request at a time (reads
//! fetch on their own threads and never wait on its requests, not even for
//! bytes it is fetching: `store::partial`), eStargz layers' prioritized
//! files first (`layer::prefetch`). A layer fetched whole is checked
//! against its digest and becomes an ordinary blob.

use crate::layer::prefetch::prefetch_layers;
use crate::union::UnionFs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Bytes of compressed blob per prefetch request.
const PREFETCH_STEP: u64 = 4 << 20;

/// Starts prefetching the partial layers of `fs`; setting the returned flag
/// stops it between two requests.
pub fn start_prefetch(fs: Arc<UnionFs>) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let lazy = fs.stack().layers.iter().any(|l| l.partial().is_some());
    if !lazy {
        return stop;
    }
    let flag = Arc::clone(&stop);
    let spawned = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || {
            prefetch_layers(&fs.stack().layers, PREFETCH_STEP, &|| {
                !flag.load(Ordering::Relaxed)
            });
        });
    if let Err(e) = spawned {
        log::error!("cannot start the prefetch: {e}");
    }
    stop
}
