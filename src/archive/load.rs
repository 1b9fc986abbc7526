//! `load`: an archive's images into the store, in three steps so that a bad
//! archive leaves no trace but verified blobs:
//!
//! 1. plan: read every manifest, index and config (verified), pick each
//!    image's platform, work out its names, and check that every layer file
//!    is there with the right size; nothing is stored yet;
//! 2. store: layers (each verified and indexed in one pass; one already in
//!    the store is not copied again), then configs and manifests, with the
//!    diff_ids and hard links of each image checked;
//! 3. name: only now tags are written, all of them.

use super::ArchiveError;
use super::docker::{self, MANIFEST_JSON};
use super::oci::{self, INDEX_JSON, Pick, PlatformRule, Skip};
use super::source::Source;
use crate::image::{check_hardlinks, layer_descriptor, store_image};
use crate::layer::{Compression, LayerError, LayerInfo, ingest};
use crate::oci::{Descriptor, Digest, ImageConfig, Platform, REF_NAME_ANNOTATION, Reference};
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::path::Path;

/// The full name containerd and Docker 25+ put beside a bare-tag ref.name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// The repository for images an OCI layout names only by a tag: tag T
    /// is loaded as `REPOSITORY:T`.
    pub repository: Option<Reference>,
    /// The platform to load; this machine's when `None`.
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug)]
pub struct LoadedImage {
    /// The image ID (config digest).
    pub id: Digest,
    pub manifest: Descriptor,
    /// Canonical names (`name:tag`); empty for an image loaded untagged.
    pub names: Vec<String>,
    pub diff_ids: Vec<Digest>,
}

#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub images: Vec<LoadedImage>,
    /// What was skipped or left unnamed, and why.
    pub notes: Vec<String>,
}

/// Loads the archive at `path`: a directory holding an OCI layout, or a tar
/// (oci-archive or docker-archive), plain, gzip or zstd.
pub fn load(store: &Store, path: &Path, opts: &LoadOptions) -> Result<LoadReport, ArchiveError> {
    let name = path.display().to_string();
    // Held from the spooling on: gc treats temp files as crash leftovers.
    let _lock = store.lock_shared().map_err(|e| store_error(&name, e))?;
    let src = Source::open(path, &store.tmp_dir())?;
    load_source(store, &src, opts)
}

/// Loads an archive read from a stream (standard input); `name` is how
/// messages call it.
pub fn load_reader(
    store: &Store,
    reader: impl Read,
    name: &str,
    opts: &LoadOptions,
) -> Result<LoadReport, ArchiveError> {
    let _lock = store.lock_shared().map_err(|e| store_error(name, e))?;
    let src = Source::from_reader(reader, name, &store.tmp_dir())?;
    load_source(store, &src, opts)
}

fn store_error(archive: &str, e: StoreError) -> ArchiveError {
    ArchiveError::Store {
        archive: archive.to_string(),
        source: e,
    }
}

/// An image ready to be stored.
struct Planned {
    /// Which entry of which file it came from, for messages.
    origin: String,
    names: Vec<Reference>,
    config_bytes: Vec<u8>,
    config_digest: Digest,
    config: ImageConfig,
    layers: Vec<LayerSource>,
    /// The manifest to keep byte for byte (OCI); `None` for a docker-archive
    /// image, which gets one written over its config and layers.
    manifest: Option<KeptManifest>,
}

struct KeptManifest {
    digest: Digest,
    media_type: String,
    bytes: Vec<u8>,
}

struct LayerSource {
    member: String,
    /// The digest the bytes must have, where the archive states it.
    expected: Option<Digest>,
    /// The size its descriptor states.
    size: Option<u64>,
}

/// What planning set aside.
#[derive(Default)]
struct Notes {
    notes: Vec<String>,
    /// Platforms of images skipped for being for another platform.
    other_platforms: Vec<String>,
    /// Whether some bare tag asked for `--name`, given or not.
    bare_tags: bool,
}

fn load_source(
    store: &Store,
    src: &Source,
    opts: &LoadOptions,
) -> Result<LoadReport, ArchiveError> {
    if let Some(repo) = &opts.repository
        && (repo.tag().is_some() || repo.digest().is_some())
    {
        return Err(ArchiveError::BadRepository(repo.to_string()));
    }
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    let mut notes = Notes::default();
    let mut planned = plan(src, opts, &want, PlatformRule::Strict, &mut notes)?;
    // Nothing for this machine and no platform asked for: load what is
    // there, as `docker load` does, unless an index offers several.
    if planned.is_empty() && opts.platform.is_none() && !notes.other_platforms.is_empty() {
        notes = Notes::default();
        planned = plan(src, opts, &want, PlatformRule::TakeTheOnlyOne, &mut notes)?;
    }
    if planned.is_empty() {
        return Err(no_image(src, &want, &notes));
    }
    if let Some(repo) = &opts.repository
        && !notes.bare_tags
    {
        notes.notes.push(format!(
            "--name {repo} was not used: no image is named by a bare tag"
        ));
    }
    let mut layers: HashMap<String, LayerInfo> = HashMap::new();
    let mut stored = Vec::new();
    for p in &planned {
        stored.push(store_planned(store, src, p, &mut layers)?);
    }
    let mut images = Vec::new();
    for (p, (id, manifest)) in planned.iter().zip(stored) {
        let names: Vec<String> = p.names.iter().map(Reference::canonical).collect();
        let result = if names.is_empty() {
            store.add_untagged(&manifest)
        } else {
            names.iter().try_for_each(|n| store.tag(n, &manifest))
        };
        result.map_err(|e| store_error(src.name(), e))?;
        images.push(LoadedImage {
            id,
            manifest,
            names,
            diff_ids: p.config.rootfs.diff_ids.clone(),
        });
    }
    Ok(LoadReport {
        images,
        notes: notes.notes,
    })
}

fn no_image(src: &Source, want: &Platform, notes: &Notes) -> ArchiveError {
    let why = if !notes.other_platforms.is_empty() {
        let mut have = notes.other_platforms.clone();
        have.sort();
        have.dedup();
        format!(
            "no image for {want}: the archive has {}; choose one with --platform (e.g. --platform {})",
            have.join(", "),
            have[0]
        )
    } else if notes.notes.is_empty() {
        "the archive lists no images".to_string()
    } else {
        format!("no image to load: {}", notes.notes.join("; "))
    };
    ArchiveError::NoImage {
        archive: src.name().to_string(),
        why,
    }
}

fn other_platform_note(origin: &str, have: &Platform, want: &Platform) -> String {
    format!("loaded {origin}, which is for {have}, not {want}: the archive has nothing for {want}")
}

/// Step 1: what to store, and under which names.
fn plan(
    src: &Source,
    opts: &LoadOptions,
    want: &Platform,
    rule: PlatformRule,
    notes: &mut Notes,
) -> Result<Vec<Planned>, ArchiveError> {
    let has_index = src.exists(INDEX_JSON);
    let has_manifest = src.exists(MANIFEST_JSON);
    if !has_index && !has_manifest {
        let why = if src.exists("repositories") {
            "a docker save archive from before Docker 1.10 (no manifest.json), which is not supported"
        } else {
            "neither an OCI layout (no index.json) nor a docker-archive (no manifest.json)"
        };
        return Err(ArchiveError::Format {
            archive: src.name().to_string(),
            why: why.into(),
        });
    }
    let items = if has_manifest {
        Some(docker::read_manifest(src)?)
    } else {
        None
    };
    let mut planned: Vec<Planned> = Vec::new();
    if has_index {
        let entries = oci::read_index(src)?;
        // Docker 25+ writes both; the OCI side keeps the manifest digests.
        // An image saved by ID has an empty index, and only manifest.json.
        if !entries.is_empty() || items.is_none() {
            let repo_tags = match &items {
                Some(items) => tags_by_config(src, items)?,
                None => HashMap::new(),
            };
            for (i, entry) in entries.iter().enumerate() {
                let origin = format!("{INDEX_JSON} entry {}", i + 1);
                let p = plan_oci(src, entry, &origin, opts, (want, rule), &repo_tags, notes)?;
                if let Some(p) = p {
                    merge(&mut planned, p);
                }
            }
            return Ok(planned);
        }
    }
    for (i, item) in items.iter().flatten().enumerate() {
        let origin = format!("{MANIFEST_JSON} entry {}", i + 1);
        let image = docker::read_image(src, item, i)?;
        if let Some(p) = image.config.platform()
            && !p.satisfies(want)
        {
            if rule == PlatformRule::TakeTheOnlyOne {
                notes.notes.push(other_platform_note(&origin, &p, want));
            } else {
                notes.notes.push(format!(
                    "skipped {origin} ({}): it is for {p}, not {want}",
                    item.config
                ));
                notes.other_platforms.push(p.to_string());
                continue;
            }
        }
        let layers = item
            .layers
            .iter()
            .map(|member| LayerSource {
                member: member.clone(),
                expected: docker::digest_in_path(member),
                size: None,
            })
            .collect();
        merge(
            &mut planned,
            Planned {
                origin,
                names: image.names,
                config_bytes: image.config_bytes,
                config_digest: image.config_digest,
                config: image.config,
                layers,
                manifest: None,
            },
        );
    }
    Ok(planned)
}

/// The same image listed twice is stored once, with all its names.
fn merge(planned: &mut Vec<Planned>, p: Planned) {
    let key = |q: &Planned| (q.manifest.as_ref().map(|m| m.digest), q.config_digest);
    match planned.iter_mut().find(|q| key(q) == key(&p)) {
        Some(q) => {
            for n in p.names {
                if !q.names.contains(&n) {
                    q.names.push(n);
                }
            }
        }
        None => planned.push(p),
    }
}

/// RepoTags of a Docker 25+ archive's manifest.json, by config digest, so
/// that the images index.json lists get the names Docker gave them.
fn tags_by_config(
    src: &Source,
    items: &[docker::Item],
) -> Result<HashMap<Digest, Vec<Reference>>, ArchiveError> {
    let mut out: HashMap<Digest, Vec<Reference>> = HashMap::new();
    for (i, item) in items.iter().enumerate() {
        let image = docker::read_image(src, item, i)?;
        out.entry(image.config_digest)
            .or_default()
            .extend(image.names);
    }
    Ok(out)
}

fn plan_oci(
    src: &Source,
    entry: &Descriptor,
    origin: &str,
    opts: &LoadOptions,
    (want, rule): (&Platform, PlatformRule),
    repo_tags: &HashMap<Digest, Vec<Reference>>,
    notes: &mut Notes,
) -> Result<Option<Planned>, ArchiveError> {
    let label = match entry.annotation(REF_NAME_ANNOTATION) {
        Some(n) => format!("{origin} ({n:?})"),
        None => origin.to_string(),
    };
    let picked = match oci::pick(src, entry, want, rule)? {
        Pick::Image(p) => p,
        Pick::Skip(Skip::NotImage(why)) => {
            notes.notes.push(format!("skipped {label}: {why}"));
            return Ok(None);
        }
        Pick::Skip(Skip::Platform(have)) => {
            notes.notes.push(format!(
                "skipped {label}: it has no image for {want}, only {}",
                have.join(", ")
            ));
            notes.other_platforms.extend(have);
            return Ok(None);
        }
    };
    if let Some(p) = picked.config.platform()
        && !p.satisfies(want)
    {
        notes.notes.push(other_platform_note(&label, &p, want));
    }
    let manifest = &picked.manifest;
    if manifest.layers.len() != picked.config.rootfs.diff_ids.len() {
        return Err(ArchiveError::Member {
            archive: src.name().to_string(),
            member: oci::blob_path(&picked.manifest_digest),
            why: format!(
                "the manifest lists {} layers, but its config has {} diff_ids",
                manifest.layers.len(),
                picked.config.rootfs.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for l in &manifest.layers {
        let member = oci::blob_path(&l.digest);
        let size = src.size(&member)?;
        if size != l.size {
            return Err(ArchiveError::Member {
                archive: src.name().to_string(),
                member,
                why: format!("is {size} bytes, the manifest says {}", l.size),
            });
        }
        layers.push(LayerSource {
            member,
            expected: Some(l.digest),
            size: Some(l.size),
        });
    }
    let names = match repo_tags.get(&manifest.config.digest) {
        Some(tags) => tags.clone(),
        None => oci_names(entry, opts, notes),
    };
    let media_type = manifest.media_type().to_string();
    Ok(Some(Planned {
        origin: label,
        names,
        config_digest: manifest.config.digest,
        config_bytes: picked.config_bytes,
        config: picked.config,
        layers,
        manifest: Some(KeptManifest {
            digest: picked.manifest_digest,
            media_type,
            bytes: picked.manifest_bytes,
        }),
    }))
}

/// Names from an index.json entry, as Docker and skopeo read them: a full
/// reference as it is; a bare tag (what the OCI spec means ref.name to be)
/// under `--name`, or no name without one.
fn oci_names(entry: &Descriptor, opts: &LoadOptions, notes: &mut Notes) -> Vec<Reference> {
    if let Some(full) = entry.annotation(CONTAINERD_NAME)
        && let Ok(r) = Reference::parse(full)
        && r.tag().is_some()
    {
        return vec![r];
    }
    let Some(ref_name) = entry.annotation(REF_NAME_ANNOTATION) else {
        return Vec::new();
    };
    if is_bare_tag(ref_name) {
        notes.bare_tags = true;
        return match &opts.repository {
            Some(repo) => match repo.with_tag(ref_name) {
                Ok(r) => vec![r],
                Err(e) => {
                    notes
                        .notes
                        .push(format!("loaded {ref_name:?} untagged: {e}"));
                    Vec::new()
                }
            },
            None => {
                notes.notes.push(format!(
                    "index.json names an image only by the tag {ref_name:?}: loaded it untagged; \
                     give --name REPO to load it as REPO:{ref_name}"
                ));
                Vec::new()
            }
        };
    }
    match Reference::parse(ref_name) {
        Ok(r) if r.tag().is_some() || r.digest().is_none() => vec![r],
        _ => {
            notes.notes.push(format!(
                "loaded {ref_name:?} untagged: it is neither a tag nor an image name"
            ));
            Vec::new()
        }
    }
}

/// Whether `s` is a tag alone: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_bare_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Step 2 for one image: its layers, then config and manifest. Returns the
/// image ID and manifest descriptor.
fn store_planned(
    store: &Store,
    src: &Source,
    p: &Planned,
    cache: &mut HashMap<String, LayerInfo>,
) -> Result<(Digest, Descriptor), ArchiveError> {
    let archive = src.name().to_string();
    let diff_ids = &p.config.rootfs.diff_ids;
    let mut infos = Vec::with_capacity(p.layers.len());
    for (i, layer) in p.layers.iter().enumerate() {
        let info = match cache.get(&layer.member) {
            Some(info) => *info,
            None => {
                let info = store_layer(store, src, layer, diff_ids.get(i))?;
                cache.insert(layer.member.clone(), info);
                info
            }
        };
        if diff_ids.get(i) != Some(&info.diff_id) {
            return Err(ArchiveError::DiffIdMismatch {
                archive,
                layer: format!("{}, layer {} of {}", layer.member, i + 1, p.origin),
                expected: diff_ids.get(i).copied().unwrap_or(info.diff_id),
                actual: info.diff_id,
            });
        }
        infos.push(info);
    }
    let digests: Vec<Digest> = infos.iter().map(|i| i.digest).collect();
    check_hardlinks(store, &digests).map_err(|e| ArchiveError::Image {
        archive: archive.clone(),
        source: e,
    })?;
    match &p.manifest {
        Some(kept) => {
            store
                .put_blob(&p.config_bytes, Some(&p.config_digest))
                .and_then(|_| store.put_blob(&kept.bytes, Some(&kept.digest)))
                .map_err(|e| store_error(&archive, e))?;
            let desc = Descriptor::new(&kept.media_type, kept.digest, kept.bytes.len() as u64);
            Ok((p.config_digest, desc))
        }
        None => {
            let layers: Vec<Descriptor> = infos.iter().map(layer_descriptor).collect();
            let stored = store_image(store, &p.config_bytes, &layers)
                .map_err(|e| ArchiveError::Image { archive, source: e })?;
            Ok((stored.id, stored.manifest))
        }
    }
}

/// Ingests one layer file. An uncompressed layer's digest is its diff_id,
/// so a docker-archive layer the store already has is not copied again.
fn store_layer(
    store: &Store,
    src: &Source,
    layer: &LayerSource,
    diff_id: Option<&Digest>,
) -> Result<LayerInfo, ArchiveError> {
    let mut expected = layer.expected;
    if expected.is_none()
        && let Some(d) = diff_id
        && Compression::detect(&src.head(&layer.member)?) == Compression::None
    {
        expected = Some(*d);
    }
    let (reader, _) = src.open_member(&layer.member)?;
    let info = ingest(
        store,
        BufReader::with_capacity(1 << 20, reader),
        expected.as_ref(),
    )
    .map_err(|e| match e {
        LayerError::Store(StoreError::DigestMismatch { expected, actual }) => {
            ArchiveError::DigestMismatch {
                archive: src.name().to_string(),
                member: layer.member.clone(),
                expected,
                actual,
            }
        }
        e => ArchiveError::Layer {
            archive: src.name().to_string(),
            member: layer.member.clone(),
            source: e,
        },
    })?;
    if let Some(size) = layer.size
        && info.size != size
    {
        return Err(ArchiveError::Member {
            archive: src.name().to_string(),
            member: layer.member.clone(),
            why: format!("is {} bytes, the manifest says {size}", info.size),
        });
    }
    Ok(info)
}
