//! Images and tags: the entries of the layout's index.json. A tag is an
//! entry's `org.opencontainers.image.ref.name`; an untagged image is an entry
//! without one. Images are found by tag, by `name@digest`, or by their ID (the
//! config digest, as Docker's image ID) or a unique prefix of it.

use super::blobs::write_atomic;
use super::{INDEX_JSON, Result, Store, StoreError};
use crate::oci::{
    Descriptor, Digest, ImageConfig, ImageIndex, Manifest, ManifestKind, Platform,
    REF_NAME_ANNOTATION, Reference, media_type as mt,
};

/// One entry of index.json.
#[derive(Clone, Debug)]
pub struct ImageEntry {
    pub descriptor: Descriptor,
}

impl ImageEntry {
    /// The tag, as `images` shows it (`name:tag`).
    pub fn name(&self) -> Option<&str> {
        self.descriptor.annotation(REF_NAME_ANNOTATION)
    }
}

/// An image found in the store, resolved to one platform's manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// The tag it was found by, or its first tag.
    pub name: Option<String>,
    /// The index.json entry (a manifest, or an index for multi-platform images).
    pub top: Descriptor,
    pub manifest_digest: Digest,
    pub manifest: Manifest,
    pub config_digest: Digest,
    pub config: ImageConfig,
}

impl ResolvedImage {
    /// Docker's image ID: the config digest.
    pub fn id(&self) -> Digest {
        self.config_digest
    }

    pub fn layer_digests(&self) -> Vec<Digest> {
        self.manifest.layer_digests()
    }
}

impl Store {
    fn index_json_path(&self) -> std::path::PathBuf {
        self.root.join(INDEX_JSON)
    }

    pub fn read_index_json(&self) -> Result<ImageIndex> {
        let path = self.index_json_path();
        let bytes = std::fs::read(&path).map_err(|e| StoreError::io(&path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            why: format!("not a valid OCI index: {e}"),
        })
    }

    /// Every entry of index.json, in file order.
    pub fn image_entries(&self) -> Result<Vec<ImageEntry>> {
        Ok(self
            .read_index_json()?
            .manifests
            .into_iter()
            .map(|descriptor| ImageEntry { descriptor })
            .collect())
    }

    /// Replaces `dest`, a file in the store's own folders, with `content`:
    /// a temp file, fsynced, renamed over it, so a crash leaves the old
    /// file or the new one. Under the store lock, shared, as every writer:
    /// gc removes the temp files it finds as left by crashes.
    pub(crate) fn write_file(&self, dest: &std::path::Path, content: &[u8]) -> Result<()> {
        let _lock = self.lock_shared()?;
        write_atomic(&self.tmp_dir(), dest, content)
    }

    /// Read-modify-write of index.json under its lock, replaced atomically.
    pub fn update_index_json<T>(&self, f: impl FnOnce(&mut ImageIndex) -> Result<T>) -> Result<T> {
        let _lock = self.lock_refs()?;
        let mut index = self.read_index_json()?;
        let out = f(&mut index)?;
        let path = self.index_json_path();
        let mut bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| StoreError::io(&path, std::io::Error::other(e)))?;
        bytes.push(b'\n');
        self.write_file(&path, &bytes)?;
        Ok(out)
    }

    /// Points tag `name` (canonical `name:tag`) at `desc`, moving it from any
    /// image that had it.
    pub fn tag(&self, name: &str, desc: &Descriptor) -> Result<()> {
        let mut desc = desc.clone();
        desc.annotations = None;
        desc.set_annotation(REF_NAME_ANNOTATION, name);
        self.update_index_json(|index| {
            index
                .manifests
                .retain(|d| d.annotation(REF_NAME_ANNOTATION) != Some(name));
            // An untagged entry of the same image is now redundant.
            index.manifests.retain(|d| {
                !(d.digest == desc.digest && d.annotation(REF_NAME_ANNOTATION).is_none())
            });
            index.manifests.push(desc);
            Ok(())
        })
    }

    /// Records an image with no tag, unless the store already lists it.
    pub fn add_untagged(&self, desc: &Descriptor) -> Result<()> {
        let mut desc = desc.clone();
        desc.annotations = None;
        self.update_index_json(|index| {
            if !index.manifests.iter().any(|d| d.digest == desc.digest) {
                index.manifests.push(desc);
            }
            Ok(())
        })
    }

    /// Removes tag `name`; returns the descriptor it pointed at.
    pub fn untag(&self, name: &str) -> Result<Descriptor> {
        self.update_index_json(|index| {
            let pos = index
                .manifests
                .iter()
                .position(|d| d.annotation(REF_NAME_ANNOTATION) == Some(name))
                .ok_or_else(|| StoreError::ImageNotFound(name.to_string()))?;
            Ok(index.manifests.remove(pos))
        })
    }

    /// Removes every entry whose manifest (or index) digest is `digest`.
    pub fn remove_image_entries(&self, digest: &Digest) -> Result<()> {
        self.update_index_json(|index| {
            index.manifests.retain(|d| d.digest != *digest);
            Ok(())
        })
    }

    /// Finds the top-level entry a user's words name: a tag, `name@digest`, an
    /// image ID, or a unique prefix of an ID or manifest digest.
    pub fn find_entry(&self, what: &str) -> Result<ImageEntry> {
        let entries = self.image_entries()?;
        if let Ok(r) = Reference::parse(what) {
            if r.tag().is_some() || r.digest().is_none() {
                let canonical = r.canonical();
                if let Some(e) = entries
                    .iter()
                    .find(|e| e.name() == Some(canonical.as_str()))
                    && r.digest().is_none_or(|d| *d == e.descriptor.digest)
                {
                    return Ok(e.clone());
                }
            }
            if let Some(d) = r.digest()
                && let Some(e) = entries.iter().find(|e| e.descriptor.digest == *d)
            {
                return Ok(e.clone());
            }
        }
        self.find_by_id_prefix(what, &entries)
    }

    fn find_by_id_prefix(&self, what: &str, entries: &[ImageEntry]) -> Result<ImageEntry> {
        let prefix = what.strip_prefix("sha256:").unwrap_or(what);
        if !crate::oci::is_hex_prefix(prefix) {
            return Err(StoreError::ImageNotFound(what.to_string()));
        }
        let hits: Vec<(&ImageEntry, Digest)> = entries
            .iter()
            .map(|e| {
                (
                    e,
                    self.image_id(&e.descriptor).unwrap_or(e.descriptor.digest),
                )
            })
            .filter(|(e, id)| {
                id.hex().starts_with(prefix) || e.descriptor.digest.hex().starts_with(prefix)
            })
            .collect();
        let (Some(&(first, _)), Some(&(newest, id))) = (hits.first(), hits.last()) else {
            return Err(StoreError::ImageNotFound(what.to_string()));
        };
        // Several tags of one manifest.
        if hits
            .iter()
            .all(|(e, _)| e.descriptor.digest == first.descriptor.digest)
        {
            return Ok(first.clone());
        }
        // One image stored under several manifests (the same config, say
        // with gzip and with zstd layers): one image ID, as Docker and
        // podman keep it; the newest manifest serves it.
        if id.hex().starts_with(prefix) && hits.iter().all(|(_, i)| *i == id) {
            return Ok(newest.clone());
        }
        let mut candidates: Vec<String> = Vec::new();
        for (e, id) in &hits {
            let c = match e.name() {
                Some(n) => format!("{n} (ID {})", id.short()),
                None => format!("manifest {} (ID {})", e.descriptor.digest, id.short()),
            };
            if !candidates.contains(&c) {
                candidates.push(c);
            }
        }
        Err(StoreError::Ambiguous {
            what: what.to_string(),
            candidates: candidates.join(", "),
            hint: if prefix.len() < 64 {
                "use more digits, a name or a manifest digest"
            } else {
                "use a name or a manifest digest"
            },
        })
    }

    /// The image ID of a top-level entry: the config digest of a manifest, the
    /// digest itself for an index.
    pub fn image_id(&self, desc: &Descriptor) -> Result<Digest> {
        if mt::is_index(&desc.media_type) {
            return Ok(desc.digest);
        }
        Ok(self.read_manifest(&desc.digest)?.config.digest)
    }

    pub fn read_manifest(&self, digest: &Digest) -> Result<Manifest> {
        match self.read_manifest_kind(digest)? {
            ManifestKind::Image(m) => Ok(m),
            ManifestKind::Index(_) => Err(StoreError::BadBlob {
                digest: *digest,
                why: "is an image index, not a manifest".into(),
            }),
        }
    }

    pub fn read_manifest_kind(&self, digest: &Digest) -> Result<ManifestKind> {
        let bytes = self.read_blob(digest)?;
        ManifestKind::parse(&bytes).map_err(|e| StoreError::BadBlob {
            digest: *digest,
            why: e.to_string(),
        })
    }

    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfig> {
        let bytes = self.read_blob(digest)?;
        ImageConfig::parse(&bytes).map_err(|e| StoreError::BadBlob {
            digest: *digest,
            why: format!("image config: {e}"),
        })
    }

    /// Resolves a user's words to one image for this machine's platform.
    pub fn resolve(&self, what: &str) -> Result<ResolvedImage> {
        self.resolve_for(what, &Platform::host())
    }

    pub fn resolve_for(&self, what: &str, platform: &Platform) -> Result<ResolvedImage> {
        let entry = self.find_entry(what)?;
        let name = entry.name().map(str::to_string);
        let (manifest_digest, manifest) =
            self.manifest_for_platform(&entry.descriptor.digest, platform)?;
        let config_digest = manifest.config.digest;
        let config = self.read_config(&config_digest)?;
        Ok(ResolvedImage {
            name,
            top: entry.descriptor,
            manifest_digest,
            manifest,
            config_digest,
            config,
        })
    }

    /// Follows indexes (also nested ones) down to the manifest for `platform`.
    pub fn manifest_for_platform(
        &self,
        top: &Digest,
        platform: &Platform,
    ) -> Result<(Digest, Manifest)> {
        let mut digest = *top;
        for _ in 0..8 {
            match self.read_manifest_kind(&digest)? {
                ManifestKind::Image(m) => return Ok((digest, m)),
                ManifestKind::Index(index) => {
                    digest = index
                        .select(platform)
                        .ok_or_else(|| StoreError::BadBlob {
                            digest,
                            why: format!("image index has no manifest for platform {platform}"),
                        })?
                        .digest;
                }
            }
        }
        Err(StoreError::BadBlob {
            digest,
            why: "image indexes nested too deeply".into(),
        })
    }

    /// Every tag that points at `digest`.
    pub fn tags_of(&self, digest: &Digest) -> Result<Vec<String>> {
        Ok(self
            .image_entries()?
            .into_iter()
            .filter(|e| e.descriptor.digest == *digest)
            .filter_map(|e| e.name().map(str::to_string))
            .collect())
    }
}
