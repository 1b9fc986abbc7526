//! The build cache: what each step made, by a key of the parent image, the
//! instruction (after variable expansion, with the build args a RUN sees)
//! and the digest of what a COPY or ADD reads from the context (or, for
//! COPY --from, of the files it copies from the stage or image).
//!
//! ```text
//! ROOT/layerfs/build-cache/
//!   cache.json   {"<key>": {"manifest": .., "size": .., "id": ..}, ...}
//!   lock         flock: one writer of cache.json at a time
//! ```
//!
//! Config-only steps (ENV, LABEL, CMD, ...) store no image each: a run of
//! them is keyed as a chain (each key over the one before, the next step's
//! key over the last), and their changes are stored with the next image
//! stored. Their keys are recorded then as markers (`chain:<key>`), never
//! as images, so that a rebuild can say those steps were cached.
//!
//! Intermediate images are kept out of index.json (so `images` lists what
//! people built, not every step, as Docker hides intermediates); the hold
//! `build-cache` keeps them from gc instead. A step image that is also
//! tagged is left out of the hold, so `rmi` of a built image works without
//! --force; its entry then simply misses if gc removes it.

use super::StepError;
use crate::image::StoredImage;
use crate::oci::{Descriptor, Digest, Manifest, media_type as mt};
use crate::store::{Hold, Store};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::PathBuf;

const HOLD_ID: &str = crate::image::BUILD_CACHE_HOLD;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The step's image manifest.
    pub manifest: Digest,
    pub size: u64,
    /// Its image ID (config digest).
    pub id: Digest,
}

impl From<&StoredImage> for Entry {
    fn from(img: &StoredImage) -> Entry {
        Entry {
            manifest: img.manifest.digest,
            size: img.manifest.size,
            id: img.id,
        }
    }
}

impl Entry {
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(mt::OCI_MANIFEST, self.manifest, self.size)
    }
}

pub struct Cache {
    dir: PathBuf,
}

/// The key of a step: a hash of its parts, each length-prefixed.
pub fn key(parts: &[&str]) -> String {
    let mut h = crate::oci::Sha256Writer::new();
    h.update(b"layerfs build cache v1\n");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    h.finish().hex()
}

/// What marks `key` as a config-only step some build has stored past.
pub fn chain_marker(key: &str) -> String {
    format!("chain:{key}")
}

/// The manifests of the tagged images.
fn tagged(store: &Store) -> Result<HashSet<Digest>, StepError> {
    Ok(store
        .image_entries()?
        .into_iter()
        .filter(|e| e.name().is_some())
        .map(|e| e.descriptor.digest)
        .collect())
}

impl Cache {
    pub fn open(store: &Store) -> Result<Cache, StepError> {
        Ok(Cache {
            dir: store.own_dir_for("build-cache")?,
        })
    }

    fn file(&self) -> PathBuf {
        self.dir.join("cache.json")
    }

    fn io(&self, e: std::io::Error) -> StepError {
        StepError::Io {
            path: self.file().display().to_string(),
            source: e,
        }
    }

    fn lock(&self) -> Result<nix::fcntl::Flock<File>, StepError> {
        let path = self.dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io(e))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| self.io(e.into()))
    }

    fn read(&self) -> BTreeMap<String, Entry> {
        // A damaged cache is an empty one: it only costs a rebuild.
        std::fs::read(self.file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// The image a step with this key made, and its manifest, if it is
    /// still whole in the store.
    pub fn get(&self, store: &Store, key: &str) -> Option<(Entry, Manifest)> {
        let e = self.read().remove(key)?;
        let m = store.read_manifest(&e.manifest).ok()?;
        let whole =
            store.has_blob(&m.config.digest) && m.layers.iter().all(|l| store.has_blob(&l.digest));
        whole.then_some((e, m))
    }

    /// Records the image a step made, and holds it against gc. Call with the
    /// store lock held shared, before the image is otherwise unreferenced.
    pub fn put(&self, store: &Store, key: &str, entry: Entry) -> Result<(), StepError> {
        self.put_chain(store, key, entry, &[])
    }

    /// `put`, and the keys of the config-only steps that led to it marked
    /// as known, in one write.
    pub fn put_chain(
        &self,
        store: &Store,
        key: &str,
        entry: Entry,
        chain: &[String],
    ) -> Result<(), StepError> {
        let _lock = self.lock()?;
        let mut map = self.read();
        for k in chain {
            map.insert(chain_marker(k), entry.clone());
        }
        map.insert(key.to_string(), entry);
        let bytes = serde_json::to_vec_pretty(&map).map_err(|e| self.io(e.into()))?;
        store.write_file(&self.file(), &bytes)?;
        self.write_hold(store, &map)
    }

    /// Every key the cache knows (images and chain markers) as it is now:
    /// read once per build, for config-only steps to say they were cached.
    pub fn known_keys(&self) -> HashSet<String> {
        self.read().into_keys().collect()
    }

    /// Rewrites the hold after tags changed (a build tagged its result).
    pub fn refresh_hold(&self, store: &Store) -> Result<(), StepError> {
        let _lock = self.lock()?;
        let map = self.read();
        self.write_hold(store, &map)
    }

    /// Drops the records of intermediate step images (with `all`, of every
    /// step, the tagged results' too) and rewrites the hold; returns how
    /// many records went. A gc then frees what only they kept.
    pub fn prune(&self, store: &Store, all: bool) -> Result<usize, StepError> {
        let _lock = self.lock()?;
        let mut map = self.read();
        let before = map.len();
        let tagged = tagged(store)?;
        map.retain(|_, e| !all && tagged.contains(&e.manifest));
        let bytes = serde_json::to_vec_pretty(&map).map_err(|e| self.io(e.into()))?;
        store.write_file(&self.file(), &bytes)?;
        self.write_hold(store, &map)?;
        Ok(before - map.len())
    }

    fn write_hold(&self, store: &Store, map: &BTreeMap<String, Entry>) -> Result<(), StepError> {
        let tagged = tagged(store)?;
        let mut manifests: Vec<Digest> = map
            .values()
            .map(|e| e.manifest)
            .filter(|m| !tagged.contains(m))
            .collect();
        manifests.sort_by_key(|d| d.to_string());
        manifests.dedup();
        store.add_hold(&Hold {
            id: HOLD_ID.into(),
            manifests,
            what: "the build cache".into(),
            pid: None,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{new_config, store_image};

    #[test]
    fn keys_and_entries() {
        assert_ne!(key(&["ab", "c"]), key(&["a", "bc"]));
        assert_eq!(key(&["x"]), key(&["x"]));
        let (_dir, store) = crate::testutil::temp_store();
        let cache = Cache::open(&store).unwrap();
        let img = store_image(&store, &new_config().to_json(), &[]).unwrap();
        let entry = Entry::from(&img);
        let hit = |store: &Store| cache.get(store, "k").map(|(e, _)| e);
        assert!(hit(&store).is_none());
        cache.put(&store, "k", entry.clone()).unwrap();
        assert_eq!(hit(&store), Some(entry.clone()));
        // Held against gc while untagged; not held once tagged.
        assert!(store.held_manifests().unwrap().contains(&entry.manifest));
        store.gc(&[]).unwrap();
        assert_eq!(hit(&store), Some(entry.clone()));
        store.tag("built:1", &entry.descriptor()).unwrap();
        cache.refresh_hold(&store).unwrap();
        assert!(!store.held_manifests().unwrap().contains(&entry.manifest));
        store.untag("built:1").unwrap();
        store.remove_image_entries(&entry.manifest).unwrap();
        store.gc(&[]).unwrap();
        assert!(hit(&store).is_none(), "a collected image misses");
    }

    #[test]
    fn prune_keeps_the_tagged_results_records_unless_all() {
        let (_dir, store) = crate::testutil::temp_store();
        let cache = Cache::open(&store).unwrap();
        let mut config = new_config();
        let step = Entry::from(&store_image(&store, &config.to_json(), &[]).unwrap());
        config.author = Some("the result".into());
        let result = Entry::from(&store_image(&store, &config.to_json(), &[]).unwrap());
        cache.put(&store, "step", step.clone()).unwrap();
        cache.put(&store, "result", result.clone()).unwrap();
        store.tag("built:1", &result.descriptor()).unwrap();
        assert_eq!(cache.prune(&store, false).unwrap(), 1);
        assert!(cache.get(&store, "step").is_none());
        assert_eq!(cache.get(&store, "result").map(|(e, _)| e), Some(result));
        assert!(!store.held_manifests().unwrap().contains(&step.manifest));
        assert_eq!(cache.prune(&store, true).unwrap(), 1);
        assert!(cache.known_keys().is_empty());
    }
}
