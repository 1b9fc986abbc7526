//! The docker-archive format (`docker save`, `skopeo copy docker-archive:`,
//! ggcr's tarball): manifest.json lists each image's config file, RepoTags and
//! layer files. Reading takes the config and layers as they are; writing
//! produces what skopeo writes: uncompressed `<diff_id>.tar` layers at the
//! top, `<config digest>.json`, manifest.json, and the legacy per-layer
//! directories and `repositories` file that older readers want.

use super::ArchiveError;
use super::save_out::{Checked, SaveItem, TarOut};
use super::source::Source;
use crate::layer::{Compression, LayerIndex, LayerInfo, index_blob};
use crate::oci::{Digest, ImageConfig, Reference, from_json};
use crate::store::Store;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read, Write};

pub const MANIFEST_JSON: &str = "manifest.json";
const REPOSITORIES: &str = "repositories";
const LEGACY_LAYER: &str = "layer.tar";
/// What skopeo copies from the image config into the top legacy layer's json.
const LEGACY_ATTRS: [&str; 7] = [
    "architecture",
    "config",
    "container",
    "container_config",
    "created",
    "docker_version",
    "os",
];

/// One entry of manifest.json. `Parent` and `LayerSources` are legacy or
/// foreign-layer metadata: the layers themselves are in the archive.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Item {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub layers: Vec<String>,
}

pub fn read_manifest(src: &Source) -> Result<Vec<Item>, ArchiveError> {
    let bytes = src.read_small(MANIFEST_JSON)?;
    from_json(&bytes, "docker-archive manifest").map_err(|e| ArchiveError::Member {
        archive: src.name().to_string(),
        member: MANIFEST_JSON.into(),
        why: e.to_string(),
    })
}

/// An image of manifest.json with its config read and its layer files found.
pub struct DockerImage {
    pub config_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub config: ImageConfig,
    pub names: Vec<Reference>,
}

/// Reads entry `position` (from 0): its config (checked against the digest
/// its file name gives, where it gives one), its names, and that every layer
/// it lists is there, one per diff_id.
pub fn read_image(src: &Source, item: &Item, position: usize) -> Result<DockerImage, ArchiveError> {
    let err = |member: &str, why: String| ArchiveError::Member {
        archive: src.name().to_string(),
        member: member.to_string(),
        why,
    };
    let config_bytes = src.read_small(&item.config)?;
    let config_digest = Digest::of(&config_bytes);
    if let Some(named) = digest_in_path(&item.config)
        && named != config_digest
    {
        return Err(ArchiveError::DigestMismatch {
            archive: src.name().to_string(),
            member: item.config.clone(),
            expected: named,
            actual: config_digest,
        });
    }
    let config = ImageConfig::parse(&config_bytes).map_err(|e| err(&item.config, e.to_string()))?;
    if config.rootfs.diff_ids.len() != item.layers.len() {
        return Err(err(
            MANIFEST_JSON,
            format!(
                "image {} lists {} layers, but its config {} has {} diff_ids",
                position + 1,
                item.layers.len(),
                item.config,
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    for layer in &item.layers {
        src.size(layer)?;
    }
    let mut names = Vec::new();
    for tag in item.repo_tags.iter().flatten() {
        let r = Reference::parse(tag).map_err(|e| err(MANIFEST_JSON, format!("RepoTags: {e}")))?;
        if r.tag().is_none() && r.digest().is_some() {
            return Err(err(
                MANIFEST_JSON,
                format!("RepoTags: {tag:?} is not a NAME[:TAG]"),
            ));
        }
        names.push(r);
    }
    Ok(DockerImage {
        config_bytes,
        config_digest,
        config,
        names,
    })
}

/// The digest a content-addressed file name states: `blobs/sha256/<hex>`
/// (Docker 25+) or `sha256:<hex>` (ggcr).
pub fn digest_in_path(path: &str) -> Option<Digest> {
    let name = path.rsplit('/').next()?;
    if let Some(hex) = name.strip_prefix("sha256:") {
        return Digest::from_hex(hex).ok();
    }
    let dir = path.strip_suffix(name)?.trim_end_matches('/');
    if dir == "blobs/sha256" || dir.ends_with("/blobs/sha256") {
        return Digest::from_hex(name).ok();
    }
    None
}

/// Writes `items` as a docker-archive into `out`.
pub fn write<W: Write>(
    store: &Store,
    items: &[SaveItem],
    out: &mut TarOut<W>,
) -> Result<(), ArchiveError> {
    let mut layers_written: HashSet<Digest> = HashSet::new();
    let mut legacy_written: HashSet<String> = HashSet::new();
    let mut manifest: Vec<Item> = Vec::new();
    // Per manifest.json entry: its config digest and top legacy layer ID.
    let mut entries: Vec<(Digest, Option<String>)> = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items {
        let image = &item.image;
        // Two manifests over one config (the same image pulled and loaded
        // from different sources) are one image to Docker: one entry.
        let at = match entries.iter().position(|(c, _)| *c == image.config_digest) {
            Some(at) => at,
            None => {
                let (entry, top) =
                    write_image(store, out, item, &mut layers_written, &mut legacy_written)?;
                manifest.push(entry);
                entries.push((image.config_digest, top));
                manifest.len() - 1
            }
        };
        for name in &item.names {
            let Some(tag) = name.tag_or_default() else {
                continue;
            };
            let repo_tag = format!("{}:{tag}", name.name());
            let tags = manifest[at].repo_tags.get_or_insert_with(Vec::new);
            if !tags.contains(&repo_tag) {
                tags.push(repo_tag);
            }
            if let Some(top) = &entries[at].1 {
                repositories
                    .entry(name.name().to_string())
                    .or_default()
                    .insert(tag.to_string(), top.clone());
            }
        }
    }
    let io = |e: std::io::Error| ArchiveError::SaveBroken {
        image: MANIFEST_JSON.into(),
        why: e.to_string(),
    };
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
    out.bytes(MANIFEST_JSON, &manifest_bytes).map_err(io)?;
    let repositories_bytes = serde_json::to_vec(&repositories).unwrap_or_default();
    out.bytes(REPOSITORIES, &repositories_bytes).map_err(io)?;
    Ok(())
}

/// Writes one image's layers (those not yet written), config and legacy
/// metadata; returns its manifest.json entry (without names) and its top
/// legacy layer ID.
fn write_image<W: Write>(
    store: &Store,
    out: &mut TarOut<W>,
    item: &SaveItem,
    layers_written: &mut HashSet<Digest>,
    legacy_written: &mut HashSet<String>,
) -> Result<(Item, Option<String>), ArchiveError> {
    let what = item.what.as_str();
    let broken = |why: String| ArchiveError::SaveBroken {
        image: what.to_string(),
        why,
    };
    let image = &item.image;
    let config_bytes =
        store
            .read_blob(&image.config_digest)
            .map_err(|e| ArchiveError::SaveImage {
                image: what.to_string(),
                source: e,
            })?;
    let diff_ids = &image.config.rootfs.diff_ids;
    if diff_ids.len() != image.manifest.layers.len() {
        return Err(broken(format!(
            "the manifest has {} layers, the config {} diff_ids",
            image.manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (layer, diff_id) in image.manifest.layers.iter().zip(diff_ids) {
        let path = format!("{}.tar", diff_id.hex());
        if layers_written.insert(*diff_id) {
            write_layer(store, out, &layer.digest, diff_id, &path, what)?;
        }
        layers.push(path);
    }
    let config = format!("{}.json", image.config_digest.hex());
    out.bytes(&config, &config_bytes)
        .map_err(|e| broken(format!("{config}: {e}")))?;
    let top = write_legacy(out, &config_bytes, diff_ids, legacy_written)
        .map_err(|e| broken(format!("legacy layer metadata: {e}")))?;
    let entry = Item {
        config,
        repo_tags: Some(Vec::new()),
        layers,
    };
    Ok((entry, top))
}

/// The layer's facts from its index (rebuilt, with the blob verified, if it
/// is missing or damaged).
fn layer_info(store: &Store, digest: &Digest) -> Result<LayerInfo, crate::layer::LayerError> {
    match LayerIndex::open(&store.layer_index_path(digest), digest) {
        Ok(index) => Ok(LayerInfo::from_index(&index)),
        Err(_) => index_blob(store, digest).map(|i| LayerInfo::from_index(&i)),
    }
}

/// Streams a layer, uncompressed, as `path`: decoded on the fly (never held
/// whole), its length and diff_id checked as it goes.
fn write_layer<W: Write>(
    store: &Store,
    out: &mut TarOut<W>,
    digest: &Digest,
    diff_id: &Digest,
    path: &str,
    what: &str,
) -> Result<(), ArchiveError> {
    let broken = |why: String| ArchiveError::SaveBroken {
        image: what.to_string(),
        why,
    };
    let info = layer_info(store, digest).map_err(|e| broken(format!("layer {digest}: {e}")))?;
    if info.diff_id != *diff_id {
        return Err(broken(format!(
            "layer {digest} has diff_id {}, its config says {diff_id}",
            info.diff_id
        )));
    }
    let blob = store
        .open_blob(digest)
        .map_err(|e| ArchiveError::SaveImage {
            image: what.to_string(),
            source: e,
        })?;
    let blob = BufReader::with_capacity(1 << 20, blob);
    let decoded: Box<dyn Read> = match info.compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(blob)
                .map_err(|e| broken(format!("layer {digest}: {e}")))?,
        ),
    };
    let checked = Checked::new(
        decoded,
        info.uncompressed_size,
        *diff_id,
        format!("layer {digest} (uncompressed)"),
    );
    out.stream(path, info.uncompressed_size, checked)
        .map_err(|e| broken(format!("{path}: {e}")))
}

/// The legacy (pre-1.10) layout skopeo also writes: a directory per layer
/// with a `layer.tar` symlink to the real file, `VERSION` and `json`. The
/// IDs chain each layer to its parent, so equal stacks share directories.
/// Returns the top layer's ID (what `repositories` names).
fn write_legacy<W: Write>(
    out: &mut TarOut<W>,
    config_bytes: &[u8],
    diff_ids: &[Digest],
    written: &mut HashSet<String>,
) -> std::io::Result<Option<String>> {
    let config: Map<String, Value> = serde_json::from_slice(config_bytes).unwrap_or_default();
    let mut chain: Option<String> = None;
    let mut parent: Option<String> = None;
    for (i, diff_id) in diff_ids.iter().enumerate() {
        let mut layer = Map::new();
        if let Some(p) = &parent {
            layer.insert("parent".into(), Value::String(p.clone()));
        }
        if i + 1 == diff_ids.len() {
            for attr in LEGACY_ATTRS {
                if let Some(v) = config.get(attr) {
                    layer.insert(attr.into(), v.clone());
                }
            }
        }
        let next_chain = match &chain {
            None => diff_id.to_string(),
            Some(c) => Digest::of(format!("{c} {diff_id}").as_bytes()).to_string(),
        };
        layer.insert("layer_id".into(), Value::String(next_chain.clone()));
        let id = Digest::of(&serde_json::to_vec(&layer).unwrap_or_default()).hex();
        layer.remove("layer_id");
        layer.insert("id".into(), Value::String(id.clone()));
        if written.insert(id.clone()) {
            out.symlink(
                &format!("{id}/{LEGACY_LAYER}"),
                &format!("../{}.tar", diff_id.hex()),
            )?;
            out.bytes(&format!("{id}/VERSION"), b"1.0")?;
            out.bytes(
                &format!("{id}/json"),
                &serde_json::to_vec(&layer).unwrap_or_default(),
            )?;
        }
        chain = Some(next_chain);
        parent = Some(id);
    }
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::oci::blob_path;

    #[test]
    fn finds_digests_in_content_addressed_names() {
        let hex = "ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44";
        let d = Digest::from_hex(hex).unwrap();
        assert_eq!(digest_in_path(&format!("blobs/sha256/{hex}")), Some(d));
        assert_eq!(digest_in_path(&format!("sha256:{hex}")), Some(d));
        assert_eq!(digest_in_path(&blob_path(&d)), Some(d));
        // Legacy names are not content addresses of what they hold.
        assert_eq!(digest_in_path(&format!("{hex}.json")), None);
        assert_eq!(digest_in_path(&format!("{hex}/layer.tar")), None);
        assert_eq!(digest_in_path(&format!("other/{hex}")), None);
    }
}
