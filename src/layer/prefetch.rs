//! The order the layers of a lazy image stream in behind the reads: first
//! what each eStargz layer marks to be read first (the files before its
//! prefetch landmark, at the blob's start), every layer's before any
//! layer's rest; then each layer whole, in order.

use super::estargz::PREFETCH_LANDMARK;
use super::reader::Layer;
use super::{LayerIndex, ReadError};

/// The end of the compressed bytes that hold an eStargz layer's prioritized
/// files: the end of the span its prefetch landmark's data is in. None for
/// a layer without a landmark.
pub fn prioritized_end(index: &LayerIndex) -> Option<u64> {
    let (entry, _) = index.root().lookup(PREFETCH_LANDMARK.as_bytes());
    let entry = entry?;
    let i = index.checkpoint_for(entry.data_offset())?;
    let end = match i + 1 < index.checkpoints() {
        true => index.checkpoint(i + 1).in_offset,
        false => index.meta().blob_size,
    };
    (end > 0).then_some(end)
}

/// Fetches the missing parts of the lazy layers of `layers` (whole ones are
/// skipped), `step` bytes per request, in the order the module comment
/// says; each layer fetched whole becomes an ordinary blob. `go_on` is
/// asked before each request: false stops it, and it returns false.
pub fn prefetch_layers(layers: &[Layer], step: u64, go_on: &dyn Fn() -> bool) -> bool {
    let lazy = || layers.iter().filter(|l| l.partial().is_some());
    let origin = |l: &Layer| {
        l.partial()
            .and_then(|p| p.origins().first().cloned())
            .unwrap_or_default()
    };
    let failed = |l: &Layer, e: ReadError| {
        log::error!("prefetch of layer {} from {}: {e}", l.digest(), origin(l))
    };
    for layer in lazy() {
        let Some(end) = prioritized_end(&layer.index) else {
            continue;
        };
        match layer.prefetch_range(0..end, step, go_on) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => failed(layer, e),
        }
    }
    for layer in lazy() {
        match layer.prefetch(step, go_on) {
            Ok(true) => log::info!("layer {}: whole, from {}", layer.digest(), origin(layer)),
            Ok(false) => return false,
            Err(e) => failed(layer, e),
        }
    }
    true
}
