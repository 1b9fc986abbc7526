//! The OCI image layout, as a directory or a tar of one (oci-archive, and the
//! OCI half of a Docker 25+ `docker save`): picking each index.json entry's
//! image for a platform, with every blob read verified, and writing images
//! as an oci-archive with blobs byte for byte.

use super::ArchiveError;
use super::save_out::{SaveItem, TarOut, copy_blob};
use super::source::Source;
use crate::oci::{
    Descriptor, Digest, ImageConfig, ImageIndex, Manifest, ManifestKind, Platform,
    REF_NAME_ANNOTATION, from_json, media_type as mt,
};
use crate::store::Store;
use std::collections::HashSet;
use std::io::Write;

pub const INDEX_JSON: &str = "index.json";
pub const OCI_LAYOUT: &str = "oci-layout";
const OCI_LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Where the store nests indexes no deeper (a loop of indexes would not end).
const MAX_DEPTH: usize = 8;

pub fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// index.json as found in the wild: Docker 25 writes `"manifests": null`
/// when it saves an image by ID.
#[derive(serde::Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// The top-level entries of the layout's index.json.
pub fn read_index(src: &Source) -> Result<Vec<Descriptor>, ArchiveError> {
    let bytes = src.read_small(INDEX_JSON)?;
    let index: LayoutIndex =
        from_json(&bytes, "OCI image index").map_err(|e| ArchiveError::Member {
            archive: src.name().to_string(),
            member: INDEX_JSON.into(),
            why: e.to_string(),
        })?;
    Ok(index.manifests.unwrap_or_default())
}

/// An image picked out of the layout, its manifest and config read and verified.
pub struct Picked {
    pub manifest_digest: Digest,
    pub manifest_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub config_bytes: Vec<u8>,
    pub config: ImageConfig,
}

/// Why an entry gives no image to load.
pub enum Skip {
    /// An artifact, a referrer, a type we do not know.
    NotImage(String),
    /// Images exist, but for other platforms (listed).
    Platform(Vec<String>),
}

pub enum Pick {
    Image(Box<Picked>),
    Skip(Skip),
}

/// How `pick` treats an image for another platform than the one wanted.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PlatformRule {
    /// Skip it (a platform was asked for, or others may match).
    Strict,
    /// Take it when it is the only image the entry offers (as `docker load`
    /// does); an index offering several platforms is still skipped.
    TakeTheOnlyOne,
}

/// Follows `desc` (a manifest, or an index, nested or not) to the image for `want`.
pub fn pick(
    src: &Source,
    desc: &Descriptor,
    want: &Platform,
    rule: PlatformRule,
) -> Result<Pick, ArchiveError> {
    pick_at(src, desc, want, 0, rule)
}

fn pick_at(
    src: &Source,
    desc: &Descriptor,
    want: &Platform,
    depth: usize,
    rule: PlatformRule,
) -> Result<Pick, ArchiveError> {
    let member = blob_path(&desc.digest);
    if depth > MAX_DEPTH {
        return Err(member_error(
            src,
            &member,
            "image indexes nested too deeply",
        ));
    }
    let media = desc.media_type.as_str();
    if !mt::is_manifest(media) && !mt::is_index(media) {
        return Ok(Pick::Skip(Skip::NotImage(format!(
            "{} is not an image (media type {media})",
            desc.digest
        ))));
    }
    let bytes = read_blob(src, desc)?;
    let kind =
        ManifestKind::parse(&bytes).map_err(|e| member_error(src, &member, e.to_string()))?;
    match kind {
        ManifestKind::Image(manifest) => {
            if !manifest.is_image() {
                let kind = manifest
                    .artifact_type
                    .as_deref()
                    .unwrap_or(&manifest.config.media_type);
                return Ok(Pick::Skip(Skip::NotImage(format!(
                    "{} is an artifact ({kind}), not an image",
                    desc.digest
                ))));
            }
            let config_bytes = read_blob(src, &manifest.config)?;
            let config = ImageConfig::parse(&config_bytes).map_err(|e| {
                member_error(src, &blob_path(&manifest.config.digest), e.to_string())
            })?;
            let platform = desc.platform.clone().or_else(|| config.platform());
            if let Some(p) = platform
                && !p.satisfies(want)
                && rule == PlatformRule::Strict
            {
                return Ok(Pick::Skip(Skip::Platform(vec![p.to_string()])));
            }
            Ok(Pick::Image(Box::new(Picked {
                manifest_digest: desc.digest,
                manifest_bytes: bytes,
                manifest,
                config_bytes,
                config,
            })))
        }
        ManifestKind::Index(index) => pick_from_index(src, &index, want, depth, rule),
    }
}

fn pick_from_index(
    src: &Source,
    index: &ImageIndex,
    want: &Platform,
    depth: usize,
    rule: PlatformRule,
) -> Result<Pick, ArchiveError> {
    if let Some(child) = index.select(want) {
        return pick_at(src, child, want, depth + 1, PlatformRule::Strict);
    }
    let images: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| mt::is_manifest(&d.media_type) || mt::is_index(&d.media_type))
        .filter(|d| d.platform.as_ref().is_none_or(|p| p.os != "unknown"))
        .collect();
    if rule == PlatformRule::TakeTheOnlyOne
        && let [only] = images[..]
        && let Pick::Image(p) = pick_at(src, only, want, depth + 1, rule)?
    {
        return Ok(Pick::Image(p));
    }
    // Entries without a platform (as in some hand-made and older indexes)
    // are judged by what they hold, as containerd does.
    let mut have = Vec::new();
    for child in index.manifests.iter().filter(|d| d.platform.is_none()) {
        match pick_at(src, child, want, depth + 1, PlatformRule::Strict)? {
            Pick::Image(p) => return Ok(Pick::Image(p)),
            Pick::Skip(Skip::Platform(p)) => have.extend(p),
            Pick::Skip(Skip::NotImage(_)) => {}
        }
    }
    have.extend(
        index
            .manifests
            .iter()
            .filter(|d| mt::is_manifest(&d.media_type) || mt::is_index(&d.media_type))
            .filter_map(|d| d.platform.as_ref())
            // Attestation manifests carry unknown/unknown.
            .filter(|p| p.os != "unknown")
            .map(Platform::to_string),
    );
    if have.is_empty() {
        return Ok(Pick::Skip(Skip::NotImage(
            "an image index with no image in it".to_string(),
        )));
    }
    Ok(Pick::Skip(Skip::Platform(have)))
}

/// Reads a JSON blob of the layout, checked against its descriptor.
fn read_blob(src: &Source, desc: &Descriptor) -> Result<Vec<u8>, ArchiveError> {
    let member = blob_path(&desc.digest);
    let bytes = src.read_small(&member)?;
    let actual = Digest::of(&bytes);
    if actual != desc.digest {
        return Err(ArchiveError::DigestMismatch {
            archive: src.name().to_string(),
            member,
            expected: desc.digest,
            actual,
        });
    }
    if bytes.len() as u64 != desc.size {
        return Err(member_error(
            src,
            &member,
            format!(
                "is {} bytes, its descriptor says {}",
                bytes.len(),
                desc.size
            ),
        ));
    }
    Ok(bytes)
}

fn member_error(src: &Source, member: &str, why: impl Into<String>) -> ArchiveError {
    ArchiveError::Member {
        archive: src.name().to_string(),
        member: member.to_string(),
        why: why.into(),
    }
}

/// Writes `items` as an OCI layout into `out`: each blob once, byte for byte
/// and verified as it is copied; one index.json entry per saved name, its
/// `org.opencontainers.image.ref.name` the full name (`app:1`), which
/// `skopeo ... oci-archive:FILE:app:1` and `load` both understand.
pub fn write<W: Write>(
    store: &Store,
    items: &[SaveItem],
    out: &mut TarOut<W>,
) -> Result<(), ArchiveError> {
    let io = |e: std::io::Error| ArchiveError::SaveBroken {
        image: "oci-layout".into(),
        why: e.to_string(),
    };
    out.bytes(OCI_LAYOUT, OCI_LAYOUT_CONTENT).map_err(io)?;
    out.dir("blobs").map_err(io)?;
    out.dir("blobs/sha256").map_err(io)?;
    let mut written = HashSet::new();
    let mut entries = Vec::new();
    for item in items {
        for &d in &item.blobs {
            if written.insert(d) {
                copy_blob(store, out, &d, &blob_path(&d), &item.what)?;
            }
        }
        let mut desc = item.top.clone();
        desc.annotations = None;
        for name in &item.names {
            let mut named = desc.clone();
            named.set_annotation(REF_NAME_ANNOTATION, &name.canonical());
            entries.push(named);
        }
        if item.names.is_empty() {
            entries.push(desc);
        }
    }
    let index = ImageIndex::new_oci(entries).to_json();
    out.bytes(INDEX_JSON, &index).map_err(io)?;
    Ok(())
}
