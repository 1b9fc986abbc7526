//! `import`: a rootfs tarball (plain, gzip or zstd) becomes a one-layer
//! image, as `docker import` makes it. The tarball's bytes are the layer.

use super::{
    ImageError, StoredImage, apply_change, check_hardlinks, layer_descriptor, new_config,
    write_image,
};
use crate::layer::ingest;
use crate::oci::{HistoryEntry, Reference, time};
use crate::store::Store;
use std::io::Read;

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    pub message: Option<String>,
    pub changes: Vec<String>,
    /// Recorded in history as where the layer came from.
    pub source: String,
}

/// Imports `src` as image `tag` (or untagged); returns the config digest (the
/// image ID) and the manifest descriptor.
pub fn import(
    store: &Store,
    src: impl Read + Send,
    tag: Option<&Reference>,
    opts: &ImportOptions,
) -> Result<StoredImage, ImageError> {
    let _lock = store.lock_shared()?;
    let mut config = new_config();
    for c in &opts.changes {
        apply_change(&mut config, c)?;
    }
    let info = ingest(store, src, None)?;
    check_hardlinks(store, &[info.digest])?;
    let now = time::now_rfc3339();
    config.created = Some(now.clone());
    config.rootfs.diff_ids = vec![info.diff_id];
    config.history = vec![HistoryEntry {
        created: Some(now),
        created_by: Some(format!("layerfs import {}", opts.source)),
        comment: opts.message.clone(),
        ..Default::default()
    }];
    write_image(store, &config, &[layer_descriptor(&info)], tag)
}
