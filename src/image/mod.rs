//! Images as wholes: writing a config and manifest over stored layers,
//! importing a rootfs tarball, and the `--change` instructions that edit a
//! config. Archive formats live in `archive`, registries in `registry`.

mod change;
mod estargz;
mod fsck;
mod history;
mod import;
mod remove;
mod usage;

pub use change::{ChangeError, apply_change};
pub use estargz::to_estargz;
pub use fsck::{FsckReport, fsck};
pub use history::{HistoryStep, history};
pub use import::{ImportOptions, import};
pub use remove::{Removal, remove_image};
pub use usage::{BUILD_CACHE_HOLD, ImageUsage, StoreUsage, usage};

use crate::layer::{LayerError, LayerInfo};
use crate::oci::{
    Descriptor, Digest, HistoryEntry, ImageConfig, Manifest, Platform, Reference, media_type as mt,
};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error("hard link {path:?} names {target:?}, which no layer of the image holds")]
    MissingLinkTarget { path: String, target: String },
    #[error("image {id} has several names ({names}); remove them by name or use --force")]
    SeveralNames { id: String, names: String },
    #[error("image is in use by {0}; stop using it or use --force")]
    InUse(String),
}

/// An image just written: its ID (config digest) and manifest descriptor.
#[derive(Clone, Debug)]
pub struct StoredImage {
    pub id: Digest,
    pub manifest: Descriptor,
}

/// A new, empty config for this machine's platform.
pub fn new_config() -> ImageConfig {
    let p = Platform::host();
    ImageConfig {
        architecture: p.architecture,
        os: p.os,
        variant: p.variant,
        ..Default::default()
    }
}

/// Stores `config` and a manifest over `layers`, then names the image (see
/// `name_image`).
pub fn write_image(
    store: &Store,
    config: &ImageConfig,
    layers: &[Descriptor],
    tag: Option<&Reference>,
) -> Result<StoredImage, ImageError> {
    let image = store_image(store, &config.to_json(), layers)?;
    name_image(store, &image.manifest, tag)?;
    Ok(image)
}

/// Lists a stored image in index.json: as `tag`, or untagged. Until then
/// only the store lock (held shared) keeps gc from it.
pub fn name_image(
    store: &Store,
    manifest: &Descriptor,
    tag: Option<&Reference>,
) -> Result<(), ImageError> {
    match tag {
        Some(r) => store.tag(&r.canonical(), manifest)?,
        None => store.add_untagged(manifest)?,
    }
    Ok(())
}

/// Stores `config` byte for byte and an OCI manifest over `layers`, without
/// naming the image. Keeping the bytes keeps the image ID: a config taken
/// from a `docker save` archive has the ID Docker showed for it.
pub fn store_image(
    store: &Store,
    config: &[u8],
    layers: &[Descriptor],
) -> Result<StoredImage, ImageError> {
    let id = store.put_blob(config, None)?;
    let manifest = Manifest::new_oci(
        Descriptor::new(mt::OCI_CONFIG, id, config.len() as u64),
        layers.to_vec(),
    );
    let manifest_bytes = manifest.to_json();
    let digest = store.put_blob(&manifest_bytes, None)?;
    let manifest = Descriptor::new(mt::OCI_MANIFEST, digest, manifest_bytes.len() as u64);
    Ok(StoredImage { id, manifest })
}

/// Adds a layer's diff_id and the history step that made it. Steps that
/// made layers pair with the layers in order: a parent without history for
/// some of its layers first gets blank steps for them, or the new step
/// would be shown against a layer of its parent.
pub fn push_layer(config: &mut ImageConfig, diff_id: Digest, step: HistoryEntry) {
    let described = config.history.iter().filter(|h| !h.empty_layer).count();
    for _ in described..config.rootfs.diff_ids.len() {
        config.history.push(HistoryEntry::default());
    }
    config.rootfs.diff_ids.push(diff_id);
    config.history.push(step);
}

/// A parent's layer descriptor as an OCI manifest lists it: Docker's layer
/// media types have OCI twins, and the bytes stay the same.
pub fn oci_layer_descriptor(d: &Descriptor) -> Descriptor {
    let media = match d.media_type.as_str() {
        mt::DOCKER_LAYER_GZIP => mt::OCI_LAYER_GZIP,
        mt::DOCKER_LAYER_TAR => mt::OCI_LAYER,
        other => other,
    };
    Descriptor {
        media_type: media.to_string(),
        ..d.clone()
    }
}

/// The descriptor of an ingested layer, with the media type its bytes have.
pub fn layer_descriptor(info: &LayerInfo) -> Descriptor {
    let mut d = Descriptor::new(info.compression.oci_media_type(), info.digest, info.size);
    if let Some(toc) = &info.toc_digest {
        use crate::layer::estargz;
        d.set_annotation(estargz::TOC_DIGEST_ANNOTATION, &toc.to_string());
        let size = info.uncompressed_size.to_string();
        d.set_annotation(estargz::UNCOMPRESSED_SIZE_ANNOTATION, &size);
    }
    d
}

/// Checks that each hard link whose target is not in its own layer finds it
/// in a layer below (images in the wild do this; a link to nothing is an error).
pub fn check_hardlinks(store: &Store, layers: &[Digest]) -> Result<(), ImageError> {
    use crate::layer::{EntryKind, LayerIndex, NONE};
    let mut opened: Vec<LayerIndex> = Vec::new();
    for d in layers {
        let idx = crate::layer::open_index(store, d)?;
        // Only the links the index lists as external: a walk of every entry
        // would bring the whole entry table of a big layer into memory.
        for id in idx.external_links() {
            let e = idx.entry(id);
            if e.kind() != EntryKind::HardLink || e.target() != NONE {
                continue;
            }
            let target = e.link();
            let found = opened.iter().rev().any(|lower| {
                let (dir, name) = match target.iter().rposition(|&c| c == b'/') {
                    Some(i) => (&target[..i], &target[i + 1..]),
                    None => (&target[..0], target),
                };
                lower.find_dir(dir).and_then(|d| d.lookup(name).0).is_some()
            });
            if !found {
                return Err(ImageError::MissingLinkTarget {
                    path: String::from_utf8_lossy(&e.path()).into_owned(),
                    target: String::from_utf8_lossy(target).into_owned(),
                });
            }
        }
        opened.push(idx);
    }
    Ok(())
}
