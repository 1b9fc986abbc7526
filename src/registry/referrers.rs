//! The published layerfs index: each layer's index file (the one `pull`
//! builds beside the blob) pushed as an OCI artifact whose `subject` is the
//! image manifest (image-spec 1.1), so a lazy mount gets every layer's
//! index without reading the layers.
//!
//! ```text
//! artifact manifest  artifactType  application/vnd.layerfs.index.v1
//!                    config        the empty descriptor ({})
//!                    layers        one index file per image layer, gzipped
//!                                  (application/vnd.layerfs.index.layer.v1+gzip;
//!                                  plain ...layer.v1 blobs are read as well),
//!                                  annotated io.layerfs.index.layer = the layer's digest
//!                    subject       the image manifest
//! found through      GET /v2/NAME/referrers/DIGEST        (registries with the API)
//!                    tag sha256-<hex>: an image index of referrers (the tag
//!                    schema, for registries without it, as distribution 2.8)
//! ```
//!
//! An index from a registry is trusted only after it checks: the blob's
//! digest, the index's own sha256, the layer digest and size in its header.

use super::RegistryError;
use super::auth::Scopes;
use super::client::{Client, ClientOptions};
use crate::layer::{LayerIndex, PUBLISH_SPAN, index_blob_with_span, index_only, open_index};
use crate::oci::media_type as mt;
use crate::oci::{Descriptor, Digest, ImageIndex, Manifest, ManifestKind, Reference};
use crate::store::Store;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

pub const INDEX_ARTIFACT_TYPE: &str = "application/vnd.layerfs.index.v1";
/// The media type of one layer's index file inside the artifact, gzipped:
/// its entries compress to a fraction, and a lazy mount fetches every
/// layer's index before it answers.
pub const INDEX_GZIP_MEDIA_TYPE: &str = "application/vnd.layerfs.index.layer.v1+gzip";
/// On each index blob of the artifact: the digest of the layer it describes.
pub const LAYER_ANNOTATION: &str = "io.layerfs.index.layer";
const EMPTY_JSON: &[u8] = b"{}";
/// Layers with the bytes of their index files.
pub(super) type Indexes = Vec<(Descriptor, Vec<u8>)>;

/// The referrers tag schema's tag for manifest `d`.
pub fn referrers_tag(d: &Digest) -> String {
    format!("sha256-{}", d.hex())
}

/// A bound on an index blob from a registry: a real one is a few percent
/// of its layer, so anything larger is not worth fetching.
fn index_limit(layer_size: u64) -> u64 {
    layer_size / 4 + (1 << 20)
}

/// The artifact for `subject` whose layers are `indexes` (index blob
/// descriptors, annotated with their layer).
fn artifact_manifest(subject: &Descriptor, indexes: Vec<Descriptor>) -> Manifest {
    let config = Descriptor::new(mt::OCI_EMPTY, Digest::of(EMPTY_JSON), 2);
    let mut m = Manifest::new_oci(config, indexes);
    m.artifact_type = Some(INDEX_ARTIFACT_TYPE.to_string());
    let mut s = Descriptor::new(&subject.media_type, subject.digest, subject.size);
    s.annotations = None;
    m.subject = Some(s);
    m
}

/// What was published for one image manifest.
#[derive(Clone, Debug)]
pub struct Published {
    pub artifact: Descriptor,
    /// Layers and the sizes of their (gzipped) index blobs.
    pub indexes: Vec<(Digest, u64)>,
    /// Whether the registry keeps referrers itself (else the tag was updated).
    pub referrers_api: bool,
}

/// Pushes `indexes` (a layer's descriptor and its index file's bytes, each
/// layer of `subject`) as the artifact of `subject`, and lists it under the
/// referrers tag unless the registry keeps referrers itself.
pub(super) fn publish(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Descriptor,
    indexes: &[(Descriptor, Vec<u8>)],
) -> Result<Published, RegistryError> {
    let (mut blobs, mut sizes) = (Vec::new(), Vec::new());
    upload_bytes(client, repo, scopes, EMPTY_JSON)?;
    for (layer, bytes) in indexes {
        let packed = gzip(bytes);
        let d = upload_bytes(client, repo, scopes, &packed)?;
        let mut desc = Descriptor::new(INDEX_GZIP_MEDIA_TYPE, d, packed.len() as u64);
        desc.set_annotation(LAYER_ANNOTATION, &layer.digest.to_string());
        blobs.push(desc);
        sizes.push((layer.digest, packed.len() as u64));
    }
    let manifest = artifact_manifest(subject, blobs);
    let bytes = manifest.to_json();
    let mut artifact = Descriptor::new(mt::OCI_MANIFEST, Digest::of(&bytes), bytes.len() as u64);
    artifact.artifact_type = Some(INDEX_ARTIFACT_TYPE.to_string());
    let kept = client.put_manifest(
        repo,
        &artifact.digest.to_string(),
        mt::OCI_MANIFEST,
        &bytes,
        scopes,
    )?;
    if !kept {
        list_under_tag(client, repo, scopes, &subject.digest, &artifact)?;
    }
    Ok(Published {
        artifact,
        indexes: sizes,
        referrers_api: kept,
    })
}

/// Read-modify-write of the referrers tag: `artifact` replaces any earlier
/// layerfs index of the same subject; other referrers are kept.
fn list_under_tag(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
    artifact: &Descriptor,
) -> Result<(), RegistryError> {
    let tag = referrers_tag(subject);
    let mut index = match tag_index(client, repo, scopes, subject)? {
        Some(i) => i,
        None => ImageIndex::new_oci(Vec::new()),
    };
    if index.manifests.iter().any(|d| d.digest == artifact.digest) {
        return Ok(());
    }
    index
        .manifests
        .retain(|d| d.artifact_type.as_deref() != Some(INDEX_ARTIFACT_TYPE));
    index.manifests.push(artifact.clone());
    client.put_manifest(repo, &tag, mt::OCI_INDEX, &index.to_json(), scopes)?;
    Ok(())
}

/// The referrers tag's image index, None when there is no such tag.
fn tag_index(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
) -> Result<Option<ImageIndex>, RegistryError> {
    let tag = referrers_tag(subject);
    match client.get_manifest(repo, &tag, scopes) {
        Ok(m) => match ManifestKind::parse(&m.bytes) {
            Ok(ManifestKind::Index(i)) => Ok(Some(i)),
            _ => Err(client.bad(
                &format!("manifest {repo}:{tag}"),
                "the referrers tag holds no image index",
            )),
        },
        Err(RegistryError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn upload_bytes(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    bytes: &[u8],
) -> Result<Digest, RegistryError> {
    let d = Digest::of(bytes);
    if client.has_blob(repo, &d, scopes)? {
        return Ok(d);
    }
    let spool = |e: std::io::Error| RegistryError::Invalid(format!("spooling an index: {e}"));
    let mut file = tempfile::tempfile().map_err(spool)?;
    file.write_all(bytes).map_err(spool)?;
    client.upload_blob(repo, &d, &file, bytes.len() as u64, 0, scopes, &|_| {})?;
    Ok(d)
}

/// The layerfs index artifact of manifest `subject`: through the referrers
/// API where the registry has it, else the referrers tag. None when the
/// image has none.
pub(super) fn find_artifact(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
) -> Result<Option<Descriptor>, RegistryError> {
    let listed = match client.get_referrers(repo, subject, INDEX_ARTIFACT_TYPE, scopes)? {
        Some(bytes) => match ManifestKind::parse(&bytes) {
            Ok(ManifestKind::Index(i)) => i.manifests,
            _ => {
                return Err(client.bad(
                    &format!("referrers of {repo}@{subject}"),
                    "the answer is not an image index",
                ));
            }
        },
        None => tag_index(client, repo, scopes, subject)?
            .map(|i| i.manifests)
            .unwrap_or_default(),
    };
    Ok(listed
        .into_iter()
        .rfind(|d| d.artifact_type.as_deref() == Some(INDEX_ARTIFACT_TYPE)))
}

/// The layerfs index artifact of manifest `subject`, fetched and checked
/// to be one (its type and subject); None when the image has none.
fn artifact_of(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
) -> Result<Option<Manifest>, RegistryError> {
    let Some(desc) = find_artifact(client, repo, scopes, subject)? else {
        return Ok(None);
    };
    let what = format!("layerfs index {repo}@{}", desc.digest);
    let m = client.get_manifest(repo, &desc.digest.to_string(), scopes)?;
    let manifest = match ManifestKind::parse(&m.bytes) {
        Ok(ManifestKind::Image(man)) => man,
        _ => return Err(client.bad(&what, "not an artifact manifest")),
    };
    if manifest.artifact_type.as_deref() != Some(INDEX_ARTIFACT_TYPE)
        || manifest.subject.as_ref().map(|s| s.digest) != Some(*subject)
    {
        return Err(client.bad(&what, "not a layerfs index of this image"));
    }
    Ok(Some(manifest))
}

/// The index file of `layer` from `artifact`, checked (see the module
/// comment; `dir` holds the check's temp file); None when the artifact
/// has none for it.
fn layer_index(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    artifact: &Manifest,
    layer: &Descriptor,
    dir: &Path,
) -> Result<Option<Vec<u8>>, RegistryError> {
    let want = layer.digest.to_string();
    let Some(blob) = artifact
        .layers
        .iter()
        .find(|b| b.annotation(LAYER_ANNOTATION) == Some(want.as_str()))
    else {
        return Ok(None);
    };
    let limit = index_limit(layer.size);
    let mut bytes = client.get_small_blob(repo, blob, limit, scopes)?;
    if blob.media_type == INDEX_GZIP_MEDIA_TYPE {
        bytes = gunzip(&bytes, limit).map_err(|why| {
            client.bad(
                &format!("layerfs index of layer {} in {repo}", layer.digest),
                &why,
            )
        })?;
    }
    check_index(&bytes, layer, dir).map_err(|why| {
        client.bad(
            &format!("layerfs index of layer {} in {repo}", layer.digest),
            &why,
        )
    })?;
    Ok(Some(bytes))
}

/// The index file of each of `layers` (the layers of manifest `subject`)
/// from its published artifact, each checked; layers the artifact lacks
/// are left out. None when there is no artifact.
pub(super) fn fetch_indexes(
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
    layers: &[Descriptor],
    dir: &Path,
) -> Result<Option<Indexes>, RegistryError> {
    let Some(artifact) = artifact_of(client, repo, scopes, subject)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for layer in layers {
        if let Some(bytes) = layer_index(client, repo, scopes, &artifact, layer, dir)? {
            out.push((layer.clone(), bytes));
        }
    }
    Ok(Some(out))
}

/// The lazy pull's index source for published layerfs indexes: the
/// artifact of each image is fetched once, then each layer's index blob.
#[derive(Default)]
pub struct PublishedIndex {
    /// Per image manifest: its artifact, or None when it has none.
    artifacts: std::sync::Mutex<std::collections::HashMap<Digest, Option<Manifest>>>,
}

impl super::lazy::IndexSource for PublishedIndex {
    fn name(&self) -> &'static str {
        "published"
    }

    fn fetch_index(&self, req: &super::lazy::IndexRequest<'_>) -> Result<bool, RegistryError> {
        let scopes = Scopes::pull(req.repo);
        let known = self
            .artifacts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(req.manifest)
            .cloned();
        let artifact = match known {
            Some(a) => a,
            None => {
                let a = artifact_of(req.client, req.repo, &scopes, req.manifest)?;
                self.artifacts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(*req.manifest, a.clone());
                a
            }
        };
        let Some(artifact) = artifact else {
            return Ok(false);
        };
        let tmp = req.store.tmp_dir();
        let Some(bytes) = layer_index(req.client, req.repo, &scopes, &artifact, req.layer, &tmp)?
        else {
            return Ok(false);
        };
        install(req.store, &req.layer.digest, &bytes)?;
        Ok(true)
    }
}

/// Fast, not best: an index's windows are deflated already and its span
/// digests are random, so level 6 made the 12.4 MB of indexes of a 392 MB
/// image 10.20 MB where level 1 makes them 10.24 (gzip -6 and -1), at about
/// a second more at the end of the push.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    use flate2::{Compression, write::GzEncoder};
    let mut z = GzEncoder::new(Vec::with_capacity(bytes.len() / 2), Compression::fast());
    // Writing to memory cannot fail.
    let _ = z.write_all(bytes);
    z.finish().unwrap_or_default()
}

/// A published index blob inflated, refused past `limit` bytes (a bomb).
fn gunzip(bytes: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not gzip: {e}"))?;
    if out.len() as u64 > limit {
        return Err(format!("inflates past {limit} bytes"));
    }
    Ok(out)
}

/// Puts a checked index file where the store keeps the layer's index.
fn install(store: &Store, layer: &Digest, bytes: &[u8]) -> Result<(), RegistryError> {
    let path = store.layer_index_path(layer);
    let mut w = store.blob_writer()?;
    w.write_all(bytes)
        .map_err(|e| RegistryError::Store(crate::store::StoreError::io(&path, e)))?;
    w.commit_to(&path)?;
    Ok(())
}

/// An index file describes `layer`: its checksum holds, its header names
/// the layer's digest and size.
fn check_index(bytes: &[u8], layer: &Descriptor, dir: &Path) -> Result<(), String> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    tmp.write_all(bytes).map_err(|e| e.to_string())?;
    let index = LayerIndex::open_checked(tmp.path(), &layer.digest).map_err(|e| e.to_string())?;
    if index.meta().blob_size != layer.size {
        return Err(format!(
            "the index is of a {}-byte blob, the layer has {}",
            index.meta().blob_size,
            layer.size
        ));
    }
    Ok(())
}

/// The index file of each layer of `manifest`, in layer order, ready to
/// publish. Layers that need an index built from their blob are done on
/// all cores at once; `stop` set cancels the layers not started.
pub(super) fn stored_indexes(
    store: &Store,
    manifest: &Manifest,
    stop: &AtomicBool,
) -> Result<Indexes, RegistryError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let digests = largest_first(&manifest.layers);
    let built = super::run_parallel(digests, cores, |digest, _| {
        if stop.load(Ordering::Relaxed) {
            return Err(RegistryError::Cancelled);
        }
        Ok((digest, stored_index(store, &digest)?))
    })?;
    let by_digest: std::collections::HashMap<Digest, Vec<u8>> = built.into_iter().collect();
    Ok(manifest
        .layers
        .iter()
        .filter_map(|l| Some((l.clone(), by_digest.get(&l.digest)?.clone())))
        .collect())
}

/// The layers' digests, each once, largest first: an index built from its
/// layer takes time in proportion to it, and the largest started last ran
/// alone at the end of a push (digest order made a 197 MB layer of six
/// start last and end a second after the uploads).
fn largest_first(layers: &[Descriptor]) -> Vec<Digest> {
    let mut by_size: Vec<&Descriptor> = layers.iter().collect();
    by_size.sort_by_key(|l| std::cmp::Reverse(l.size));
    let mut seen = std::collections::HashSet::new();
    by_size
        .into_iter()
        .filter(|l| seen.insert(l.digest))
        .map(|l| l.digest)
        .collect()
}

/// The index file of stored layer `digest` to publish: the local one when
/// its checkpoints are as dense as PUBLISH_SPAN (what ingest makes), else
/// one rebuilt from the blob with them (which replaces the local one).
fn stored_index(store: &Store, digest: &Digest) -> Result<Vec<u8>, RegistryError> {
    let index = open_index(store, digest)?;
    let cps = index.checkpoints() as u64;
    // Slack of 2: a deflate block may run well past the span target in very
    // compressible data, and such an index is still what ingest makes.
    let sparse = cps.saturating_mul(2 * PUBLISH_SPAN) < index.meta().uncompressed_size;
    if sparse && index.compression() == crate::layer::Compression::Gzip {
        drop(index);
        index_blob_with_span(store, digest, PUBLISH_SPAN)?;
    }
    let path = store.layer_index_path(digest);
    std::fs::read(&path).map_err(|e| RegistryError::Config {
        path: path.clone(),
        why: e.to_string(),
    })
}

/// `layerfs index push REF`: indexes the layers of an image already in a
/// registry (each read once, streaming, nothing stored) and publishes them.
/// For an image index, every image manifest in it.
pub fn index_push(
    reference: &Reference,
    opts: &ClientOptions,
) -> Result<Vec<Published>, RegistryError> {
    let client = Client::connect(reference.registry(), opts)?;
    let repo = reference.repository();
    let scopes = Scopes::push(&repo);
    let top = reference
        .digest()
        .map(|d| d.to_string())
        .or_else(|| reference.tag_or_default().map(str::to_string))
        .unwrap_or_else(|| "latest".to_string());
    let fetched = client.get_manifest(&repo, &top, &scopes)?;
    let what = format!("manifest {repo}:{top}");
    let kind =
        ManifestKind::parse(&fetched.bytes).map_err(|e| client.bad(&what, &e.to_string()))?;
    let images = match kind {
        ManifestKind::Image(m) => {
            vec![(
                Descriptor::new(m.media_type(), fetched.digest, fetched.bytes.len() as u64),
                m,
            )]
        }
        ManifestKind::Index(i) => {
            let mut v = Vec::new();
            for child in i
                .manifests
                .iter()
                .filter(|d| mt::is_manifest(&d.media_type))
            {
                if let (_, ManifestKind::Image(m)) =
                    client.get_child_manifest(&repo, child, &scopes)?
                {
                    let d = Descriptor::new(&child.media_type, child.digest, child.size);
                    v.push((d, m));
                }
            }
            v
        }
    };
    let mut out = Vec::new();
    for (subject, manifest) in images {
        if !manifest.is_image() {
            continue;
        }
        let mut indexes = Vec::new();
        for layer in &manifest.layers {
            let (resp, _) = client.get_blob(&repo, &layer.digest, 0, &scopes)?;
            let reader = resp.into_body().into_reader();
            let (_, bytes) = index_only(reader, &layer.digest, PUBLISH_SPAN)?;
            indexes.push((layer.clone(), bytes));
        }
        out.push(publish(&client, &repo, &scopes, &subject, &indexes)?);
    }
    Ok(out)
}

/// Installs the published index of each layer of image manifest `subject`
/// at `reference`'s repository into `store` (beside where the blob goes),
/// for a lazy mount. Returns the layers that got one; empty when the image
/// has no published index.
pub fn fetch_published_indexes(
    store: &Store,
    reference: &Reference,
    subject: &Digest,
    layers: &[Descriptor],
    opts: &ClientOptions,
) -> Result<Vec<Digest>, RegistryError> {
    let client = Client::connect(reference.registry(), opts)?;
    let repo = reference.repository();
    let scopes = Scopes::pull(&repo);
    install_indexes(store, &client, &repo, &scopes, subject, layers)
}

/// [`fetch_published_indexes`] with a client already connected.
pub(super) fn install_indexes(
    store: &Store,
    client: &Client,
    repo: &str,
    scopes: &Scopes,
    subject: &Digest,
    layers: &[Descriptor],
) -> Result<Vec<Digest>, RegistryError> {
    let tmp = store.tmp_dir();
    let Some(found) = fetch_indexes(client, repo, scopes, subject, layers, &tmp)? else {
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for (layer, bytes) in found {
        install(store, &layer.digest, &bytes)?;
        done.push(layer.digest);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #[test]
    fn indexes_are_built_largest_layer_first_each_once() {
        use crate::oci::{Descriptor, Digest};
        let l =
            |data: &[u8], size| Descriptor::new(super::mt::OCI_LAYER_GZIP, Digest::of(data), size);
        let (a, b, c) = (l(b"a", 10), l(b"b", 300), l(b"c", 20));
        let got = super::largest_first(&[a.clone(), b.clone(), c.clone(), a.clone()]);
        assert_eq!(got, vec![b.digest, c.digest, a.digest]);
    }

    #[test]
    fn a_published_index_inflating_past_its_bound_is_refused() {
        let packed = super::gzip(&vec![0u8; 1 << 20]);
        assert_eq!(super::gunzip(&packed, 1 << 20).unwrap().len(), 1 << 20);
        let e = super::gunzip(&packed, (1 << 20) - 1).unwrap_err();
        assert!(e.contains("inflates past"), "{e}");
        assert!(super::gunzip(b"not gzip", 100).is_err());
    }
}
