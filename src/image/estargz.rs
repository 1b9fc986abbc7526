//! An image's layers rewritten as eStargz (`push --estargz`): each layer's
//! tar, unchanged, laid out for lazy readers (see `layer::estargz`), the
//! config's diff_ids following. Layers that are eStargz already are kept.

use super::{ImageError, StoredImage, layer_descriptor, write_image};
use crate::layer::{LayerError, LayerWriter, decompressed, estargz};
use crate::oci::{Descriptor, ManifestKind};
use crate::store::{Store, StoreError};

/// Stores the eStargz form of image `name` (untagged) and returns it.
pub fn to_estargz(store: &Store, name: &str) -> Result<StoredImage, ImageError> {
    let entry = store.find_entry(name)?;
    let digest = entry.descriptor.digest;
    let manifest = match store.read_manifest_kind(&digest)? {
        ManifestKind::Image(m) => m,
        ManifestKind::Index(_) => {
            return Err(ImageError::Store(StoreError::BadBlob {
                digest,
                why: "an image index: convert one platform's image".into(),
            }));
        }
    };
    let mut config = store.read_config(&manifest.config.digest)?;
    let mut layers: Vec<Descriptor> = Vec::new();
    for (i, layer) in manifest.layers.iter().enumerate() {
        if layer.annotation(estargz::TOC_DIGEST_ANNOTATION).is_some() {
            layers.push(layer.clone());
            continue;
        }
        // A lazily pulled layer is completed first (what is local is kept).
        crate::layer::fetch_whole(store, &layer.digest)?;
        let path = store.blob_path(&layer.digest);
        let blob = store.open_blob(&layer.digest)?;
        let tar = decompressed(blob).map_err(|e| LayerError::io(&path, e))?;
        let info = LayerWriter::from_tar_estargz(store, tar)?;
        if let Some(d) = config.rootfs.diff_ids.get_mut(i) {
            *d = info.diff_id;
        }
        layers.push(layer_descriptor(&info));
    }
    write_image(store, &config, &layers, None)
}
