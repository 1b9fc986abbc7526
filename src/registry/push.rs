//! `push`: uploads an image from the store, blobs as stored (never
//! recompressed), so the manifest digest on the registry is the one in the
//! store. Per blob: HEAD (skip what the registry has), else a
//! cross-repository mount when we know another repository there holds it,
//! else an upload. Then manifests: an index's children by digest, the top
//! one by tag. A layer the store holds in part (a lazy image) is fetched
//! whole only when the registry has it nowhere to HEAD or mount from.

use super::auth::Scopes;
use super::client::{Client, ClientOptions};
use super::progress::{BlobKind, BlobOutcome, Event, Progress};
use super::sources;
use super::{MAX_INDEX_DEPTH, RegistryError, run_parallel};
use crate::oci::{Descriptor, Digest, Manifest, ManifestKind, Reference};
use crate::store::{Store, StoreError};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Blobs larger than this go up in PATCH chunks of this size, so a failure
/// costs one chunk's worth of progress report, not a silent stall.
const DEFAULT_CHUNK: u64 = 64 << 20;

#[derive(Clone, Debug)]
pub struct PushOptions {
    pub client: ClientOptions,
    /// Chunk size for large blobs; 0 uploads every blob in one PUT.
    pub chunk_size: u64,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Also publish each layer's index as an artifact of the image
    /// (`referrers`), for lazy mounts.
    pub indexes: bool,
}

impl PushOptions {
    pub fn new(client: ClientOptions) -> PushOptions {
        PushOptions {
            client,
            chunk_size: DEFAULT_CHUNK,
            jobs: super::pull::DEFAULT_JOBS,
            indexes: true,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PushReport {
    /// The tag pushed to.
    pub tag: String,
    /// The top manifest's digest and size, as on the registry and in the store.
    pub digest: Digest,
    pub size: u64,
    pub blobs_pushed: usize,
    pub blobs_existing: usize,
    pub blobs_mounted: usize,
    pub bytes_pushed: u64,
    /// Layer index artifacts published (one per image manifest).
    pub index_artifacts: usize,
}

/// A manifest to PUT, children before parents.
struct Put {
    desc: Descriptor,
    bytes: Vec<u8>,
}

struct Blob {
    desc: Descriptor,
    kind: BlobKind,
}

/// Pushes the stored image `image` (any name `find_entry` accepts) to
/// `target`, which must name a tag.
pub fn push(
    store: &Store,
    image: &str,
    target: &Reference,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport, RegistryError> {
    let tag = target
        .tag_or_default()
        .ok_or_else(|| {
            RegistryError::Invalid(format!(
                "{target}: push needs a tag to push to, not a digest"
            ))
        })?
        .to_string();
    let entry = store.find_entry(image)?;
    let (puts, blobs) = collect(store, &entry.descriptor, image)?;
    let registry = target.registry().to_string();
    let repo = target.repository();
    let client = Client::connect(&registry, &opts.client)?;
    let scopes = Scopes::push(&repo);
    progress.event(Event::Status(&format!(
        "The push refers to repository [{}]",
        target.name()
    )));

    let counts = Counts::default();
    let images: Vec<(&Put, Manifest)> = match opts.indexes {
        true => puts
            .iter()
            .filter_map(|p| match ManifestKind::parse(&p.bytes) {
                Ok(ManifestKind::Image(m)) if m.is_image() => Some((p, m)),
                _ => None,
            })
            .collect(),
        false => Vec::new(),
    };
    // The layer indexes to publish are read, or built where a layer needs
    // inflating, while the blobs go up: one is CPU, the other network.
    let stop = AtomicBool::new(false);
    let (pushed, prepared) = std::thread::scope(|s| {
        let prep = s.spawn(|| {
            images
                .iter()
                .map(|(_, m)| super::referrers::stored_indexes(store, m, &stop))
                .collect::<Vec<_>>()
        });
        let pushed = push_blobs(
            store, &client, &repo, &scopes, blobs, opts, progress, &counts,
        );
        stop.store(pushed.is_err(), Ordering::Relaxed);
        (pushed, prep.join())
    });
    pushed?;

    let top = puts
        .last()
        .map(|p| p.desc.clone())
        .ok_or_else(|| RegistryError::Invalid(format!("{image}: nothing to push")))?;
    for (i, p) in puts.iter().enumerate() {
        let reference = if i + 1 == puts.len() {
            tag.clone()
        } else {
            p.desc.digest.to_string()
        };
        client.put_manifest(&repo, &reference, &p.desc.media_type, &p.bytes, &scopes)?;
        sources::record(store, &p.desc.digest, &registry, &repo);
    }
    let prepared = prepared.unwrap_or_default();
    let index_artifacts =
        publish_indexes(store, &client, &repo, &scopes, &images, prepared, progress);
    Ok(PushReport {
        tag,
        digest: top.digest,
        size: top.size,
        blobs_pushed: counts.pushed.load(Ordering::Relaxed),
        blobs_existing: counts.existing.load(Ordering::Relaxed),
        blobs_mounted: counts.mounted.load(Ordering::Relaxed),
        bytes_pushed: counts.bytes.load(Ordering::Relaxed),
        index_artifacts,
    })
}

/// Publishes the layer indexes of each image manifest pushed, with what was
/// `prepared` during the upload (made again where that failed: a lazy
/// layer is whole only once uploaded). The image is up already, so a
/// registry that refuses artifacts costs a warning, not the push.
fn publish_indexes(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    images: &[(&Put, Manifest)],
    prepared: Vec<Result<super::referrers::Indexes, RegistryError>>,
    progress: &dyn Progress,
) -> usize {
    let mut n = 0;
    let mut prepared = prepared.into_iter();
    for (p, m) in images {
        let indexes = match prepared.next() {
            Some(Ok(i)) => Ok(i),
            _ => super::referrers::stored_indexes(store, m, &AtomicBool::new(false)),
        };
        let published =
            indexes.and_then(|i| super::referrers::publish(client, repo, scopes, &p.desc, &i));
        match published {
            Ok(_) => n += 1,
            Err(e) => progress.event(Event::Status(&format!(
                "warning: layer indexes of {} not published: {e}",
                p.desc.digest
            ))),
        }
    }
    n
}

#[derive(Default)]
struct Counts {
    pushed: AtomicUsize,
    existing: AtomicUsize,
    mounted: AtomicUsize,
    bytes: AtomicU64,
}

/// The manifests to PUT (children first) and the blobs they name (each once).
fn collect(
    store: &Store,
    top: &Descriptor,
    image: &str,
) -> Result<(Vec<Put>, Vec<Blob>), RegistryError> {
    let mut puts = Vec::new();
    let mut blobs = Vec::new();
    let mut seen = HashSet::new();
    // Depth-first, children before their index.
    fn visit(
        store: &Store,
        desc: &Descriptor,
        image: &str,
        depth: usize,
        puts: &mut Vec<Put>,
        blobs: &mut Vec<Blob>,
        seen: &mut HashSet<Digest>,
    ) -> Result<(), RegistryError> {
        if depth >= MAX_INDEX_DEPTH {
            return Err(RegistryError::Invalid(format!(
                "{image}: image indexes nested too deeply"
            )));
        }
        let bytes = match store.read_blob(&desc.digest) {
            Ok(b) => b,
            Err(StoreError::BlobNotFound(d)) => {
                let plat = desc
                    .platform
                    .as_ref()
                    .map(|p| format!(" for {p}"))
                    .unwrap_or_default();
                return Err(RegistryError::Invalid(format!(
                    "{image}: manifest {d}{plat} is not in the store (pull it with --all-platforms)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        let kind = ManifestKind::parse(&bytes).map_err(|e| {
            RegistryError::Store(StoreError::BadBlob {
                digest: desc.digest,
                why: e.to_string(),
            })
        })?;
        match &kind {
            ManifestKind::Index(idx) => {
                for child in &idx.manifests {
                    visit(store, child, image, depth + 1, puts, blobs, seen)?;
                }
            }
            ManifestKind::Image(m) => {
                let config = (m.config.clone(), BlobKind::Config);
                let layers = m.layers.iter().map(|l| (l.clone(), BlobKind::Layer));
                for (d, kind) in std::iter::once(config).chain(layers) {
                    if !store.has_blob(&d.digest) && !store.has_partial(&d.digest) {
                        return Err(RegistryError::Store(StoreError::BlobNotFound(d.digest)));
                    }
                    if seen.insert(d.digest) {
                        blobs.push(Blob { desc: d, kind });
                    }
                }
            }
        }
        if !puts.iter().any(|p: &Put| p.desc.digest == desc.digest) {
            let mut d = Descriptor::new(kind.media_type(), desc.digest, bytes.len() as u64);
            d.platform = desc.platform.clone();
            puts.push(Put { desc: d, bytes });
        }
        Ok(())
    }
    visit(store, top, image, 0, &mut puts, &mut blobs, &mut seen)?;
    Ok((puts, blobs))
}

#[allow(clippy::too_many_arguments)]
fn push_blobs(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    blobs: Vec<Blob>,
    opts: &PushOptions,
    progress: &dyn Progress,
    counts: &Counts,
) -> Result<(), RegistryError> {
    run_parallel(blobs, opts.jobs, |blob, _| {
        push_blob(store, client, repo, scopes, &blob, opts, progress, counts)
    })?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn push_blob(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    blob: &Blob,
    opts: &PushOptions,
    progress: &dyn Progress,
    counts: &Counts,
) -> Result<(), RegistryError> {
    let d = &blob.desc.digest;
    let size = match store.has_blob(d) {
        true => store.blob_size(d)?,
        false => blob.desc.size,
    };
    let done = |outcome, from: Option<&str>| {
        progress.event(Event::Done {
            digest: d,
            kind: blob.kind,
            size,
            outcome,
            from,
        })
    };
    if client.has_blob(repo, d, scopes)? {
        counts.existing.fetch_add(1, Ordering::Relaxed);
        done(BlobOutcome::Exists, None);
        return Ok(());
    }
    for from in sources::repos_on(store, d, client.registry(), repo) {
        let mscopes = Scopes::mount(repo, &from);
        match client.mount_blob(repo, d, &from, &mscopes) {
            Ok(true) => {
                counts.mounted.fetch_add(1, Ordering::Relaxed);
                sources::record(store, d, client.registry(), repo);
                done(BlobOutcome::Mounted, Some(&from));
                return Ok(());
            }
            Ok(false) => {}
            // A mount is an optimisation: any refusal falls back to upload.
            Err(e) => log::debug!("{e}; uploading instead"),
        }
    }
    progress.event(Event::Start {
        digest: d,
        kind: blob.kind,
        size,
    });
    crate::layer::fetch_whole(store, d)?;
    let file = store.open_blob(d)?;
    let retry = client.retry();
    let mut failures = 0;
    loop {
        let on_progress = |n: u64| progress.event(Event::Bytes { digest: d, done: n });
        match client.upload_blob(repo, d, &file, size, opts.chunk_size, scopes, &on_progress) {
            Ok(()) => break,
            Err(e) if e.is_transient() && failures + 1 < retry.attempts => {
                failures += 1;
                let why = e.to_string();
                progress.event(Event::Retry {
                    digest: d,
                    why: &why,
                });
                std::thread::sleep(retry.backoff(failures));
                // The failed session may have completed after all.
                if client.has_blob(repo, d, scopes)? {
                    break;
                }
            }
            Err(e) => return Err(e),
        }
    }
    counts.pushed.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(size, Ordering::Relaxed);
    sources::record(store, d, client.registry(), repo);
    done(BlobOutcome::Pushed, None);
    Ok(())
}
