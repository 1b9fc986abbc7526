//! Disk usage per image: total, unique and shared bytes, with every shared
//! blob counted once in the store's total (`df`). Only local bytes count: a
//! lazy image's partial layers count what has been fetched.

use crate::oci::Digest;
use crate::store::{Result, Store};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Debug, serde::Serialize)]
pub struct ImageUsage {
    /// The image's tags (none for an untagged image).
    pub names: Vec<String>,
    pub id: Digest,
    pub manifest: Digest,
    pub total: u64,
    /// Bytes of blobs no other image uses.
    pub unique: u64,
    /// Bytes of blobs other images use too.
    pub shared: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreUsage {
    pub images: Vec<ImageUsage>,
    /// Bytes of the distinct blobs the images use, each counted once.
    pub images_total: u64,
    /// Bytes of all blobs on disk (including those only gc would remove).
    pub blobs_total: u64,
    /// Bytes of layer indexes (derived data).
    pub indexes_total: u64,
}

pub fn usage(store: &Store) -> Result<StoreUsage> {
    // (manifest, image ID, tags) of each image, in index.json order.
    let mut by_manifest: Vec<(Digest, Digest, Vec<String>)> = Vec::new();
    for e in store.image_entries()? {
        let d = e.descriptor.digest;
        match by_manifest.iter_mut().find(|(m, _, _)| *m == d) {
            Some((_, _, names)) => names.extend(e.name().map(str::to_string)),
            None => {
                let id = store.image_id(&e.descriptor).unwrap_or(d);
                by_manifest.push((d, id, e.name().map(str::to_string).into_iter().collect()))
            }
        }
    }
    let mut blob_sets: Vec<HashSet<Digest>> = Vec::new();
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for (m, _, _) in &by_manifest {
        let set = store.reachable_from(&[*m])?;
        for b in &set {
            *users.entry(*b).or_default() += 1;
        }
        blob_sets.push(set);
    }
    let size = |d: &Digest| store.local_bytes(d);
    let mut images = Vec::new();
    let mut all = HashSet::new();
    for ((manifest, id, names), set) in by_manifest.into_iter().zip(blob_sets) {
        let (mut unique, mut shared) = (0, 0);
        for b in &set {
            if users.get(b).copied().unwrap_or(0) > 1 {
                shared += size(b);
            } else {
                unique += size(b);
            }
        }
        all.extend(set);
        images.push(ImageUsage {
            names,
            id,
            manifest,
            total: unique + shared,
            unique,
            shared,
        });
    }
    let images_total = all.iter().map(size).sum();
    let blobs = store.list_blobs()?;
    let partials = store.list_partials()?;
    let blobs_total = blobs.iter().chain(&partials).map(size).sum();
    let indexes_total = blobs
        .iter()
        .chain(&partials)
        .filter_map(|d| std::fs::metadata(store.layer_index_path(d)).ok())
        .map(|m| m.len())
        .sum();
    Ok(StoreUsage {
        images,
        images_total,
        blobs_total,
        indexes_total,
    })
}
