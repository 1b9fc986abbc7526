//! `save`: images of the store written as a docker-archive or an
//! oci-archive, to any writer or to a file (a temp file beside it, renamed
//! over it only once the archive is whole). Every blob is verified as it is
//! copied, so a damaged store gives an error, never a damaged archive.

use super::save_out::{SaveItem, TarOut};
use super::{ArchiveError, Output, docker, oci};
use crate::oci::{Descriptor, Digest, Manifest, ManifestKind, Reference, media_type as mt};
use crate::store::{ResolvedImage, Store, StoreError};
use std::collections::{HashSet, VecDeque};
use std::io::{BufWriter, Write};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    /// What `docker save` and `skopeo copy ... docker-archive:` write.
    DockerArchive,
    /// A tar of an OCI image layout.
    OciArchive,
}

#[derive(Clone, Debug, Default)]
pub struct SaveReport {
    /// Image IDs written, each with the names saved for it.
    pub images: Vec<(Digest, Vec<String>)>,
    /// Bytes of the archive.
    pub bytes: u64,
}

/// Writes `images` (names or IDs, for this machine's platform) to `out`.
pub fn save(
    store: &Store,
    images: &[String],
    format: SaveFormat,
    out: impl Write,
) -> Result<SaveReport, ArchiveError> {
    // Keeps gc from removing what is being copied.
    let _lock = store.lock_shared().map_err(|e| ArchiveError::Store {
        archive: "save".into(),
        source: e,
    })?;
    let items = resolve_all(store, images)?;
    // A lazy image's layers are fetched whole first: the archive is the image.
    for item in &items {
        for d in item.image.layer_digests() {
            crate::layer::fetch_whole(store, &d).map_err(|e| ArchiveError::SaveBroken {
                image: item.image.id().to_string(),
                why: e.to_string(),
            })?;
        }
    }
    let mut tar = TarOut::new(out);
    match format {
        SaveFormat::DockerArchive => docker::write(store, &items, &mut tar)?,
        SaveFormat::OciArchive => oci::write(store, &items, &mut tar)?,
    }
    let bytes = tar.finish().map_err(|e| ArchiveError::SaveBroken {
        image: "archive".into(),
        why: format!("cannot finish writing: {e}"),
    })?;
    Ok(SaveReport {
        images: items
            .iter()
            .map(|i| {
                (
                    i.image.id(),
                    i.names.iter().map(Reference::canonical).collect(),
                )
            })
            .collect(),
        bytes,
    })
}

/// Writes `images` to the file `path`: a regular file is replaced only on
/// success, a FIFO or character device written into (see `Output`).
pub fn save_to_path(
    store: &Store,
    images: &[String],
    format: SaveFormat,
    path: &Path,
) -> Result<SaveReport, ArchiveError> {
    let output = Output::create(path)?;
    let mut w = BufWriter::with_capacity(1 << 20, output.file());
    let report = save(store, images, format, &mut w)?;
    w.flush().map_err(|e| ArchiveError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    drop(w);
    output.finish()?;
    Ok(report)
}

/// Resolves each argument; the same image named twice is saved once, under
/// both names. An image given by ID or digest is saved without a name.
fn resolve_all(store: &Store, images: &[String]) -> Result<Vec<SaveItem>, ArchiveError> {
    let mut items: Vec<SaveItem> = Vec::new();
    for what in images {
        let image = store.resolve(what).map_err(|e| ArchiveError::SaveImage {
            image: what.clone(),
            source: e,
        })?;
        let name = Reference::parse(what)
            .ok()
            .filter(|r| r.digest().is_none() && image.name.as_deref() == Some(&r.canonical()));
        let (top, blobs) = save_top(store, &image).map_err(|e| ArchiveError::SaveImage {
            image: what.clone(),
            source: e,
        })?;
        match items.iter_mut().find(|i| i.top.digest == top.digest) {
            Some(item) => {
                if let Some(n) = name
                    && !item.names.contains(&n)
                {
                    item.names.push(n);
                }
            }
            None => items.push(SaveItem {
                what: what.clone(),
                image,
                names: name.into_iter().collect(),
                top,
                blobs,
            }),
        }
    }
    Ok(items)
}

/// What to save for `image` (see `SaveItem::top`), with its blobs.
fn save_top(store: &Store, image: &ResolvedImage) -> Result<(Descriptor, Vec<Digest>), StoreError> {
    if mt::is_index(&image.top.media_type)
        && let Ok(blobs) = blobs_of(store, &image.top)
        && blobs.iter().all(|d| store.has_blob(d))
    {
        let mut top = image.top.clone();
        top.annotations = None;
        return Ok((top, blobs));
    }
    let size = store.blob_size(&image.manifest_digest)?;
    let top = Descriptor::new(image.manifest.media_type(), image.manifest_digest, size);
    let mut blobs = vec![image.manifest_digest];
    let mut seen = HashSet::from([image.manifest_digest]);
    push_image_blobs(&image.manifest, &mut seen, &mut blobs);
    Ok((top, blobs))
}

/// Every blob under `top` (indexes, manifests, configs, layers), each once,
/// parents before children.
fn blobs_of(store: &Store, top: &Descriptor) -> Result<Vec<Digest>, StoreError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = VecDeque::from([top.digest]);
    while let Some(d) = todo.pop_front() {
        if !seen.insert(d) {
            continue;
        }
        out.push(d);
        match store.read_manifest_kind(&d)? {
            ManifestKind::Image(m) => push_image_blobs(&m, &mut seen, &mut out),
            ManifestKind::Index(i) => todo.extend(i.manifests.iter().map(|m| m.digest)),
        }
    }
    Ok(out)
}

/// A manifest's config and layers, those not `seen` yet.
fn push_image_blobs(m: &Manifest, seen: &mut HashSet<Digest>, out: &mut Vec<Digest>) {
    for b in std::iter::once(m.config.digest).chain(m.layers.iter().map(|l| l.digest)) {
        if seen.insert(b) {
            out.push(b);
        }
    }
}
