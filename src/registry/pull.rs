//! `pull`: fetches an image (or a whole index with `all_platforms`) into the
//! store. Blobs the store has are never fetched; the rest download in
//! parallel, each streamed through one ingest pass that stores, verifies
//! and indexes it, resuming broken connections with Range requests.
//! Manifests are stored byte for byte, and the tag is written last, after
//! everything it names is stored and verified: a failed pull leaves no tag.

use super::auth::Scopes;
use super::blob_reader::BlobReader;
use super::client::{Client, ClientOptions, FetchedManifest};
use super::progress::{BlobKind, BlobOutcome, Event, Progress};
use super::sources;
use super::{MAX_INDEX_DEPTH, RegistryError, run_parallel};
use crate::layer::{LayerError, ingest, open_index};
use crate::oci::{
    Descriptor, Digest, ImageConfig, Manifest, ManifestKind, Platform, Reference, media_type as mt,
};
use crate::store::{Store, StoreError};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Docker's default number of parallel transfers.
pub(super) const DEFAULT_JOBS: usize = 3;

/// Parallel downloads for a pull: Docker's 3, but no more than the CPUs,
/// since each download also inflates and indexes its layer (on 2 cores, 3
/// jobs made the largest layer share a core and took the pull of a 311 MB
/// image from 2.3 s to 2.7-3.6 s), and at least 2 so the network overlaps.
fn default_pull_jobs() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, DEFAULT_JOBS)
}

#[derive(Clone, Debug)]
pub struct PullOptions {
    pub client: ClientOptions,
    /// The platform to pick from an index; this machine's when unset.
    pub platform: Option<Platform>,
    /// Keep the whole index: every child manifest with its blobs.
    pub all_platforms: bool,
    /// Blobs downloaded at once.
    pub jobs: usize,
    /// Lazy: a layer whose index a source has (see `lazy::index_sources`)
    /// is not downloaded but recorded as a partial blob, fetched as read.
    pub lazy: bool,
}

impl PullOptions {
    pub fn new(client: ClientOptions) -> PullOptions {
        PullOptions {
            client,
            platform: None,
            all_platforms: false,
            jobs: default_pull_jobs(),
            lazy: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct PullReport {
    /// The tag written (`Reference::canonical`).
    pub name: String,
    /// The digest the reference resolved to on the registry (an index's
    /// digest when the image came from an index).
    pub digest: Digest,
    /// What the tag points at: the platform's manifest, or the index.
    pub tagged: Descriptor,
    /// The tag already pointed at this image and nothing was missing.
    pub up_to_date: bool,
    pub blobs_downloaded: usize,
    pub blobs_present: usize,
    /// Bytes received for blobs (manifests not counted).
    pub bytes_downloaded: u64,
    /// Layers left in the registry, to be fetched as read (`lazy`).
    pub layers_lazy: usize,
}

/// A manifest to store once its blobs are in.
struct Fetched {
    desc: Descriptor,
    bytes: Vec<u8>,
    manifest: Manifest,
}

/// A blob to download.
#[derive(Clone)]
struct Job {
    desc: Descriptor,
    kind: BlobKind,
    /// A tar layer: ingested and indexed; anything else is stored as is.
    indexed: bool,
}

pub fn pull(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport, RegistryError> {
    let registry = reference.registry().to_string();
    let repo = reference.repository();
    let name = reference.canonical();
    let client = Client::connect(&registry, &opts.client)?;
    let scopes = Scopes::pull(&repo);
    let target = match (reference.digest(), reference.tag_or_default()) {
        (Some(d), _) => d.to_string(),
        // Without a digest there is always a tag, `latest` by default.
        (None, tag) => tag.unwrap_or_default().to_string(),
    };
    progress.event(Event::Status(&format!(
        "{}: Pulling from {repo}",
        reference.tag().unwrap_or(&target)
    )));
    // Held until the tag is written, so gc cannot remove blobs in between.
    let _lock = store.lock_shared()?;

    // Already here? Then the HEAD is all the network we need.
    let head = match reference.digest() {
        Some(d) => Some(*d),
        None => client.head_manifest(&repo, &target, &scopes)?,
    };
    if let Some(d) = head
        && let Some(tagged) = complete_locally(store, &d, opts)?
    {
        return finish_present(store, &name, d, tagged);
    }

    let top = client.get_manifest(&repo, &target, &scopes)?;
    let what = format!("manifest {repo}:{target}");
    let (tagged, manifests, index_bytes) = resolve(&client, &repo, &scopes, &top, opts, &what)?;
    if is_complete(store, &tagged) {
        return finish_present(store, &name, top.digest, tagged);
    }

    // Every blob once, in manifest order: config, then layers.
    let mut jobs = Vec::new();
    let mut seen = HashSet::new();
    let mut present = 0;
    // Layer digest -> diff_id, of the layers stored and then of those fetched.
    let mut diff_ids = HashMap::new();
    let mut layers_lazy = 0;
    let sources = super::index_sources::all();
    let origin = super::lazy::origin(&registry, &repo);
    for f in &manifests {
        let config = Job {
            desc: f.manifest.config.clone(),
            kind: BlobKind::Config,
            indexed: false,
        };
        let layers = f.manifest.layers.iter().map(|l| Job {
            desc: l.clone(),
            kind: BlobKind::Layer,
            indexed: mt::is_layer(&l.media_type),
        });
        for job in std::iter::once(config).chain(layers) {
            if !seen.insert(job.desc.digest) {
                continue;
            }
            if opts.lazy
                && job.indexed
                && !store.has_blob(&job.desc.digest)
                && let Some(index) = super::lazy::find_index(
                    &sources,
                    &super::lazy::IndexRequest {
                        store,
                        client: &client,
                        repo: &repo,
                        manifest: &f.desc.digest,
                        layer: &job.desc,
                    },
                )
            {
                store.add_partial(&job.desc.digest, job.desc.size, &origin)?;
                diff_ids.insert(job.desc.digest, *index.diff_id());
                layers_lazy += 1;
                exists(progress, &job);
                continue;
            }
            if have_blob(store, &job, &mut diff_ids)? {
                present += 1;
                exists(progress, &job);
            } else {
                jobs.push(job);
            }
        }
    }

    let received = AtomicU64::new(0);
    let downloaded = jobs.len();
    // A single-platform image must be the platform asked for: its config
    // (small) comes first and is checked before any layer is fetched.
    let mut config = None;
    if let (Some(want), None, [f]) = (&opts.platform, &index_bytes, manifests.as_slice()) {
        if let Some(pos) = jobs
            .iter()
            .position(|j| j.desc.digest == f.manifest.config.digest)
        {
            let job = jobs.remove(pos);
            download_all(
                store,
                &client,
                &repo,
                &scopes,
                vec![job],
                opts,
                progress,
                &received,
            )?;
        }
        config = Some(check_platform(store, &client, f, want, &what)?);
    }
    largest_first(&mut jobs);
    diff_ids.extend(download_all(
        store, &client, &repo, &scopes, jobs, opts, progress, &received,
    )?);
    check_diff_ids(store, &client, &manifests, &diff_ids, config)?;

    for f in &manifests {
        store.put_blob(&f.bytes, Some(&f.desc.digest))?;
    }
    if let Some(bytes) = &index_bytes {
        store.put_blob(bytes, Some(&top.digest))?;
    }
    store.tag(&name, &tagged)?;
    for d in seen
        .iter()
        .chain(manifests.iter().map(|f| &f.desc.digest))
        .chain(index_bytes.as_ref().map(|_| &top.digest))
    {
        sources::record(store, d, &registry, &repo);
    }
    Ok(PullReport {
        name,
        digest: top.digest,
        tagged,
        up_to_date: false,
        blobs_downloaded: downloaded,
        blobs_present: present,
        bytes_downloaded: received.load(Ordering::Relaxed),
        layers_lazy,
    })
}

/// The pulled image was already whole in the store: tag it if need be.
fn finish_present(
    store: &Store,
    name: &str,
    digest: Digest,
    tagged: Descriptor,
) -> Result<PullReport, RegistryError> {
    let current = store
        .image_entries()?
        .into_iter()
        .find(|e| e.name() == Some(name))
        .map(|e| e.descriptor.digest);
    let up_to_date = current == Some(tagged.digest);
    if !up_to_date {
        store.tag(name, &tagged)?;
    }
    Ok(PullReport {
        name: name.to_string(),
        digest,
        tagged,
        up_to_date,
        blobs_downloaded: 0,
        blobs_present: 0,
        bytes_downloaded: 0,
        layers_lazy: 0,
    })
}

/// The descriptor a pull of `digest` would tag, if the store already holds
/// all of it.
fn complete_locally(
    store: &Store,
    digest: &Digest,
    opts: &PullOptions,
) -> Result<Option<Descriptor>, RegistryError> {
    if !store.has_blob(digest) {
        return Ok(None);
    }
    let size = store.blob_size(digest)?;
    let kind = match store.read_manifest_kind(digest) {
        Ok(k) => k,
        Err(_) => return Ok(None),
    };
    let desc = Descriptor::new(kind.media_type(), *digest, size);
    match kind {
        ManifestKind::Index(_) if !opts.all_platforms => {
            let want = opts.platform.clone().unwrap_or_else(Platform::host);
            match store.manifest_for_platform(digest, &want) {
                Ok((d, m)) => {
                    let size = store.blob_size(&d)?;
                    let child = Descriptor::new(m.media_type(), d, size);
                    Ok(is_complete(store, &child).then_some(child))
                }
                Err(_) => Ok(None),
            }
        }
        _ => Ok(is_complete(store, &desc).then_some(desc)),
    }
}

/// Whether the store has the manifest `desc` and every blob it names.
fn is_complete(store: &Store, desc: &Descriptor) -> bool {
    let mut todo = vec![desc.digest];
    let mut steps = 0;
    while let Some(d) = todo.pop() {
        steps += 1;
        if steps > 10_000 || !store.has_blob(&d) {
            return false;
        }
        match store.read_manifest_kind(&d) {
            Ok(ManifestKind::Index(i)) => todo.extend(i.manifests.iter().map(|m| m.digest)),
            Ok(ManifestKind::Image(m)) => {
                if !store.has_blob(&m.config.digest) {
                    return false;
                }
                let layers_ok = m.layers.iter().all(|l| {
                    store.has_blob(&l.digest)
                        && (!mt::is_layer(&l.media_type)
                            || store.layer_index_path(&l.digest).is_file())
                });
                if !layers_ok {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Reports a blob that needs no download (stored, or left for lazy reads).
fn exists(progress: &dyn Progress, job: &Job) {
    progress.event(Event::Done {
        digest: &job.desc.digest,
        kind: job.kind,
        size: job.desc.size,
        outcome: BlobOutcome::Exists,
        from: None,
    });
}

/// Whether a blob needs no download. A stored layer's diff_id goes into
/// `diff_ids`; its index is rebuilt from the stored bytes if need be.
fn have_blob(
    store: &Store,
    job: &Job,
    diff_ids: &mut HashMap<Digest, Digest>,
) -> Result<bool, RegistryError> {
    let d = &job.desc.digest;
    // Part of it fetched by a lazy read: fetch the rest, not all of it again.
    if store.has_partial(d)
        && let Err(e) = crate::layer::fetch_whole(store, d)
    {
        log::warn!("layer {d}: completing its partial blob: {e}; downloading it whole");
    }
    if !store.has_blob(d) {
        return Ok(false);
    }
    if job.indexed {
        match open_index(store, d) {
            Ok(index) => {
                diff_ids.insert(*d, *index.diff_id());
            }
            // A stored blob that no longer matches its digest is fetched again.
            Err(LayerError::Store(StoreError::DigestMismatch { .. })) => {
                store.remove_blob(d)?;
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// From the top manifest to the image manifests to fetch: the platform's
/// one, or all of an index's. Returns the descriptor to tag, the manifests,
/// and the index bytes to store (with `all_platforms`).
#[allow(clippy::type_complexity)]
fn resolve(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    top: &FetchedManifest,
    opts: &PullOptions,
    what: &str,
) -> Result<(Descriptor, Vec<Fetched>, Option<Vec<u8>>), RegistryError> {
    let mut kind = ManifestKind::parse(&top.bytes)
        .map_err(|e| client.bad(what, &format!("bad manifest: {e}")))?;
    let mut desc = Descriptor::new(kind.media_type(), top.digest, top.bytes.len() as u64);
    let mut bytes = top.bytes.clone();
    if opts.all_platforms
        && let ManifestKind::Index(idx) = &kind
    {
        let mut out = Vec::new();
        for child in &idx.manifests {
            if mt::is_index(&child.media_type) {
                return Err(client.bad(
                    what,
                    "nested image indexes are not supported with --all-platforms",
                ));
            }
            match client.get_child_manifest(repo, child, scopes)? {
                (bytes, ManifestKind::Image(man)) => out.push(Fetched {
                    desc: child.clone(),
                    bytes,
                    manifest: man,
                }),
                (_, ManifestKind::Index(_)) => {
                    return Err(client.bad(
                        &format!("manifest {repo}@{}", child.digest),
                        "an index where the parent index names a manifest",
                    ));
                }
            }
        }
        return Ok((desc, out, Some(top.bytes.clone())));
    }
    let want = opts.platform.clone().unwrap_or_else(Platform::host);
    for _ in 0..MAX_INDEX_DEPTH {
        match kind {
            ManifestKind::Image(man) => {
                if !man.is_image() {
                    return Err(RegistryError::NotAnImage {
                        registry: client.registry().to_string(),
                        what: what.to_string(),
                        why: format!(
                            "config type {}{}",
                            man.config.media_type,
                            man.artifact_type
                                .as_deref()
                                .map(|a| format!(", artifact type {a}"))
                                .unwrap_or_default()
                        ),
                    });
                }
                let f = Fetched {
                    desc: desc.clone(),
                    bytes,
                    manifest: man,
                };
                return Ok((desc, vec![f], None));
            }
            ManifestKind::Index(idx) => {
                let child = idx.select(&want).ok_or_else(|| RegistryError::NoPlatform {
                    registry: client.registry().to_string(),
                    what: what.to_string(),
                    platform: want.to_string(),
                    available: platforms_of(&idx.manifests),
                })?;
                (bytes, kind) = client.get_child_manifest(repo, child, scopes)?;
                desc = Descriptor::new(kind.media_type(), child.digest, child.size);
                desc.platform = child.platform.clone();
            }
        }
    }
    Err(client.bad(what, "image indexes nested too deeply"))
}

fn platforms_of(descs: &[Descriptor]) -> String {
    let list: Vec<String> = descs
        .iter()
        .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
        .collect();
    if list.is_empty() {
        "no platforms".into()
    } else {
        list.join(", ")
    }
}

/// Orders downloads largest first (manifest order among equals): a pull
/// ends when its last download does, and a large layer started last would
/// run alone at the end while the other threads have nothing left to do.
fn largest_first(jobs: &mut [Job]) {
    jobs.sort_by_key(|j| std::cmp::Reverse(j.desc.size));
}

/// Downloads `jobs` with `opts.jobs` threads; returns the diff_id of each
/// layer ingested. The first failure stops the others.
#[allow(clippy::too_many_arguments)]
fn download_all(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    jobs: Vec<Job>,
    opts: &PullOptions,
    progress: &dyn Progress,
    received: &AtomicU64,
) -> Result<HashMap<Digest, Digest>, RegistryError> {
    let diff_ids = run_parallel(jobs, opts.jobs, |job, cancel| {
        let diff_id = download(
            store, client, repo, scopes, &job, progress, received, cancel,
        )?;
        Ok(diff_id.map(|d| (job.desc.digest, d)))
    })?;
    Ok(diff_ids.into_iter().flatten().collect())
}

#[allow(clippy::too_many_arguments)]
fn download(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    job: &Job,
    progress: &dyn Progress,
    received: &AtomicU64,
    cancel: &AtomicBool,
) -> Result<Option<Digest>, RegistryError> {
    let d = job.desc.digest;
    let started = std::time::Instant::now();
    log::debug!(
        "{}: {d}: downloading {} bytes",
        client.registry(),
        job.desc.size
    );
    progress.event(Event::Start {
        digest: &d,
        kind: job.kind,
        size: job.desc.size,
    });
    let reader = BlobReader::new(
        client,
        repo,
        scopes,
        d,
        job.desc.size,
        progress,
        received,
        cancel,
    );
    let slot = reader.error.clone();
    let what = format!("blob {d}");
    let result: Result<Option<Digest>, RegistryError> = if job.indexed {
        ingest(store, reader, Some(&d))
            .map(|info| Some(info.diff_id))
            .map_err(|e| match e {
                LayerError::Store(s) => store_error(client, &what, s),
                LayerError::Io { .. } => RegistryError::Layer(e),
                e if e.is_disk_full() => RegistryError::Layer(e),
                other => client.bad(&what, &format!("not a valid layer: {other}")),
            })
    } else {
        store_plain(store, reader)
            .map(|_| None)
            .map_err(|e| store_error(client, &what, e))
    };
    // A failure behind the reader is reported as itself, not as what the
    // decoder made of the broken stream.
    let taken = slot.lock().ok().and_then(|mut s| s.take());
    let out = match (result, taken) {
        (Err(_), Some(real)) => Err(real),
        (r, _) => r,
    }?;
    log::debug!(
        "{}: {d}: stored in {:.2}s",
        client.registry(),
        started.elapsed().as_secs_f64()
    );
    progress.event(Event::Done {
        digest: &d,
        kind: job.kind,
        size: job.desc.size,
        outcome: BlobOutcome::Downloaded,
        from: None,
    });
    Ok(out)
}

fn store_error(client: &Client, what: &str, e: StoreError) -> RegistryError {
    match e {
        StoreError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
            registry: client.registry().to_string(),
            what: what.to_string(),
            expected,
            actual,
        },
        other => RegistryError::Store(other),
    }
}

/// A blob that is not a tar layer (a config, an artifact): stored verified.
fn store_plain(store: &Store, mut reader: BlobReader<'_>) -> Result<(), StoreError> {
    let digest = reader.digest;
    let mut w = store.blob_writer()?;
    io::copy(&mut reader, &mut w).map_err(|e| StoreError::io(&store.tmp_dir(), e))?;
    w.commit(Some(&digest))?;
    Ok(())
}

/// Checks the image is for platform `want`; returns its config.
fn check_platform(
    store: &Store,
    client: &Client,
    f: &Fetched,
    want: &Platform,
    what: &str,
) -> Result<ImageConfig, RegistryError> {
    let bytes = store.read_blob(&f.manifest.config.digest)?;
    let config = ImageConfig::parse(&bytes).map_err(|e| client.bad(what, &e.to_string()))?;
    let have = Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os_version: None,
    };
    if have.satisfies(want) {
        Ok(config)
    } else {
        Err(RegistryError::NoPlatform {
            registry: client.registry().to_string(),
            what: what.to_string(),
            platform: want.to_string(),
            available: format!("only {have}"),
        })
    }
}

/// Each layer must decompress to the diff_id its config lists, or the image
/// would not be the one its config describes. `diff_ids` holds every layer's;
/// `checked` is the config check_platform read, for a single manifest.
fn check_diff_ids(
    store: &Store,
    client: &Client,
    manifests: &[Fetched],
    diff_ids: &HashMap<Digest, Digest>,
    mut checked: Option<ImageConfig>,
) -> Result<(), RegistryError> {
    for f in manifests {
        if !mt::is_config(&f.manifest.config.media_type) {
            continue;
        }
        let config = match checked.take() {
            Some(c) => c,
            None => {
                let bytes = store.read_blob(&f.manifest.config.digest)?;
                let what = format!("config {}", f.manifest.config.digest);
                ImageConfig::parse(&bytes).map_err(|e| client.bad(&what, &e.to_string()))?
            }
        };
        let want = &config.rootfs.diff_ids;
        let layers: Vec<&Descriptor> = f
            .manifest
            .layers
            .iter()
            .filter(|l| mt::is_layer(&l.media_type))
            .collect();
        if want.len() != layers.len() {
            return Err(client.bad(
                &format!("manifest {}", f.desc.digest),
                &format!(
                    "{} layers but the config lists {} diff_ids",
                    layers.len(),
                    want.len()
                ),
            ));
        }
        for (l, want) in layers.iter().zip(want) {
            let what = format!("layer {}", l.digest);
            // Missing only when a manifest also names the blob as a config.
            let got = diff_ids
                .get(&l.digest)
                .ok_or_else(|| client.bad(&what, "named as a config too, not taken as a layer"))?;
            if got != want {
                return Err(client.bad(
                    &what,
                    &format!("uncompresses to {got}, but the config says {want}"),
                ));
            }
        }
    }
    Ok(())
}
