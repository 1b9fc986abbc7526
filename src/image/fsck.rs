//! `fsck`: re-verifies every blob against its digest, every image's
//! manifest, config and layers, and every layer index (a damaged index is
//! rebuilt from its blob; a damaged blob cannot be, and is reported). A
//! layer held in part (a lazy image) has its fetched spans checked against
//! its index's span digests.

use crate::layer::{LayerIndex, index_blob};
use crate::oci::{Digest, ManifestKind, Sha256Writer};
use crate::store::{Result, Store, StoreError};
use std::collections::HashSet;
use std::io::Read;

#[derive(Debug, Default)]
pub struct FsckReport {
    pub blobs_checked: usize,
    pub images_checked: usize,
    /// Damage that remains: each a line naming what is damaged.
    pub damaged: Vec<String>,
    /// Derived data that was damaged and has been rebuilt.
    pub repaired: Vec<String>,
}

pub fn fsck(store: &Store) -> Result<FsckReport> {
    // As writers do: gc waits, so a blob it would remove under the check is
    // not reported as damaged.
    let _lock = store.lock_shared()?;
    let mut r = FsckReport::default();
    for d in store.heal_partials()? {
        r.repaired.push(format!(
            "partial layer {d}: the blob is whole; its partial record was removed"
        ));
    }
    let mut bad_blobs = HashSet::new();
    for d in store.list_blobs()? {
        r.blobs_checked += 1;
        match hash_blob(store, &d) {
            Ok(actual) if actual == d => {}
            Ok(actual) => {
                r.damaged.push(format!(
                    "blob {d} is damaged: its content hashes to {actual}"
                ));
                bad_blobs.insert(d);
            }
            Err(e) => {
                r.damaged.push(format!("blob {d} cannot be read: {e}"));
                bad_blobs.insert(d);
            }
        }
    }
    let entries = match store.image_entries() {
        Ok(e) => e,
        Err(e) => {
            r.damaged.push(e.to_string());
            return Ok(r);
        }
    };
    let mut checked_layers = HashSet::new();
    for e in entries {
        r.images_checked += 1;
        let name = e
            .name()
            .map_or_else(|| e.descriptor.digest.to_string(), str::to_string);
        let mut todo = vec![e.descriptor.digest];
        while let Some(m) = todo.pop() {
            if bad_blobs.contains(&m) {
                r.damaged
                    .push(format!("image {name}: manifest {m} is damaged"));
                continue;
            }
            match store.read_manifest_kind(&m) {
                Ok(ManifestKind::Index(i)) => todo.extend(i.manifests.iter().map(|d| d.digest)),
                Ok(ManifestKind::Image(man)) => {
                    let config = match store.read_config(&man.config.digest) {
                        Ok(c) => Some(c),
                        Err(err) => {
                            r.damaged.push(format!("image {name}: config: {err}"));
                            None
                        }
                    };
                    for (i, l) in man.layers.iter().enumerate() {
                        if !store.has_blob(&l.digest) && store.has_partial(&l.digest) {
                            if checked_layers.insert(l.digest) {
                                check_partial(store, &l.digest, &mut r);
                            }
                            continue;
                        }
                        if !store.has_blob(&l.digest) {
                            r.damaged
                                .push(format!("image {name}: layer {} is missing", l.digest));
                            continue;
                        }
                        if bad_blobs.contains(&l.digest) || !checked_layers.insert(l.digest) {
                            continue;
                        }
                        let index = check_index(store, &l.digest, &mut r);
                        let want = config.as_ref().and_then(|c| c.rootfs.diff_ids.get(i));
                        if let (Some(idx), Some(want)) = (index, want)
                            && idx.diff_id() != want
                        {
                            r.damaged.push(format!(
                                "image {name}: layer {} has diff_id {} but the config says {want}",
                                l.digest,
                                idx.diff_id()
                            ));
                        }
                    }
                }
                Err(StoreError::BlobNotFound(d)) => {
                    r.damaged.push(format!("image {name}: blob {d} is missing"))
                }
                Err(err) => r.damaged.push(format!("image {name}: {err}")),
            }
        }
    }
    Ok(r)
}

/// The fetched spans of a partial layer, against its index's span digests.
fn check_partial(store: &Store, digest: &Digest, r: &mut FsckReport) {
    r.blobs_checked += 1;
    let spans = match LayerIndex::open_checked(&store.layer_index_path(digest), digest) {
        Ok(i) => i.span_table(),
        Err(e) => {
            r.damaged.push(format!("partial layer {digest}: {e}"));
            return;
        }
    };
    let Some(spans) = spans else {
        r.damaged.push(format!(
            "partial layer {digest}: its index has no span digests"
        ));
        return;
    };
    let checked = store
        .open_partial(digest)
        .map_err(|e| e.to_string())
        .and_then(|p| p.ok_or_else(|| "gone".to_string()))
        .and_then(|p| p.check(&spans).map_err(|e| e.to_string()));
    match checked {
        Ok(bad) => r.damaged.extend(bad.iter().map(|s| {
            format!(
                "partial layer {digest}: bytes {}..{} are damaged",
                s.offset,
                s.end()
            )
        })),
        Err(e) => r.damaged.push(format!("partial layer {digest}: {e}")),
    }
}

fn check_index(store: &Store, digest: &Digest, r: &mut FsckReport) -> Option<LayerIndex> {
    let path = store.layer_index_path(digest);
    match LayerIndex::open_checked(&path, digest) {
        Ok(i) => Some(i),
        Err(e) => match index_blob(store, digest) {
            Ok(i) => {
                r.repaired.push(format!("{e}; rebuilt from the blob"));
                Some(i)
            }
            Err(e2) => {
                r.damaged.push(format!("layer {digest}: {e2}"));
                None
            }
        },
    }
}

fn hash_blob(store: &Store, d: &Digest) -> std::io::Result<Digest> {
    let mut f = store.open_blob(d).map_err(std::io::Error::other)?;
    let mut h = Sha256Writer::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finish())
}
