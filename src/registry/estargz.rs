//! eStargz layers read from a registry by range requests: the footer and
//! the TOC from the blob's end (the TOC checked against the descriptor's
//! TOC digest), then any chunk alone, checked against its digest. The
//! source of a layer's index for a lazy mount after a published layerfs
//! index ([`EstargzIndex`]).

use super::RegistryError;
use super::auth::Scopes;
use super::client::Client;
use super::lazy::{IndexRequest, IndexSource, get_range};
use crate::layer::Compression;
use crate::layer::LayerError;
use crate::layer::estargz::{
    self, Chunk, EstargzError, FOOTER_SIZE, MAX_TOC, TOC_DIGEST_ANNOTATION, Toc,
};
use crate::layer::estargz::{TocParts, UNCOMPRESSED_SIZE_ANNOTATION};
use crate::layer::index::IndexMeta;
use crate::oci::media_type as mt;
use crate::oci::{Descriptor, Digest, ImageConfig, ManifestKind};
use std::io::Write;

fn err(e: EstargzError) -> RegistryError {
    RegistryError::Layer(LayerError::Estargz(Box::new(e)))
}

/// The TOC of eStargz layer `layer` and its offset, read from the blob's
/// end; None when the descriptor names no TOC digest (not eStargz).
pub(super) fn fetch_toc(
    client: &Client,
    repo: &str,
    layer: &Descriptor,
) -> Result<Option<(Toc, u64)>, RegistryError> {
    Ok(fetch_toc_parts(client, repo, layer)?.map(|(toc, at, _, _)| (toc, at)))
}

/// [`fetch_toc`], with the TOC member's and the footer's bytes.
#[allow(clippy::type_complexity)]
fn fetch_toc_parts(
    client: &Client,
    repo: &str,
    layer: &Descriptor,
) -> Result<Option<(Toc, u64, Vec<u8>, Vec<u8>)>, RegistryError> {
    let Some(want) = layer.annotation(TOC_DIGEST_ANNOTATION) else {
        return Ok(None);
    };
    let want: Digest = want
        .parse()
        .map_err(|_| err(EstargzError::Toc(format!("bad {TOC_DIGEST_ANNOTATION}"))))?;
    if layer.size < FOOTER_SIZE {
        return Err(err(EstargzError::Footer(
            "the blob is shorter than a footer",
        )));
    }
    let end = layer.size - FOOTER_SIZE;
    let footer = get_range(client, repo, &layer.digest, end, FOOTER_SIZE)?;
    let at = estargz::parse_footer(&footer).map_err(err)?;
    if at >= end || end - at > MAX_TOC {
        return Err(err(EstargzError::Footer(
            "the TOC offset is outside the blob",
        )));
    }
    let member = get_range(client, repo, &layer.digest, at, end - at)?;
    let (toc, _) = estargz::parse_toc(&member, Some(&want)).map_err(err)?;
    Ok(Some((toc, at, member, footer)))
}

/// One chunk's file data, fetched alone and checked.
pub(super) fn fetch_chunk(
    client: &Client,
    repo: &str,
    layer: &Digest,
    chunk: &Chunk,
) -> Result<Vec<u8>, RegistryError> {
    let member = get_range(client, repo, layer, chunk.start, chunk.end - chunk.start)?;
    estargz::verify_chunk(&member, chunk).map_err(err)
}

/// The eStargz layers of one repository, read by range: what a lazy mount
/// asks for a layer that has a TOC digest and no published layerfs index.
pub struct EstargzSource {
    client: Client,
    repo: String,
}

impl EstargzSource {
    pub fn connect(
        reference: &crate::oci::Reference,
        opts: &super::ClientOptions,
    ) -> Result<EstargzSource, RegistryError> {
        let repo = reference.repository();
        Ok(EstargzSource {
            client: Client::connect(reference.registry(), opts)?,
            repo,
        })
    }

    /// The layer's TOC and its offset; None when the layer is not eStargz.
    pub fn toc(&self, layer: &Descriptor) -> Result<Option<(Toc, u64)>, RegistryError> {
        fetch_toc(&self.client, &self.repo, layer)
    }

    /// One chunk's data, checked against its digest.
    pub fn chunk(&self, layer: &Digest, chunk: &Chunk) -> Result<Vec<u8>, RegistryError> {
        fetch_chunk(&self.client, &self.repo, layer, chunk)
    }
}

/// The index source for eStargz layers without a published layerfs index:
/// the footer and the TOC by range (the TOC checked against the
/// descriptor's TOC digest) and the few bytes before the first chunk, made
/// into an index whose spans are the chunks (`layer::estargz::index_from_toc`).
/// The diff_id comes from the image's config, as a TOC does not give it.
#[derive(Default)]
pub struct EstargzIndex;

impl IndexSource for EstargzIndex {
    fn name(&self) -> &'static str {
        "estargz"
    }

    fn fetch_index(&self, req: &IndexRequest<'_>) -> Result<bool, RegistryError> {
        let (client, repo, layer) = (req.client, req.repo, req.layer);
        if layer.annotation(TOC_DIGEST_ANNOTATION).is_none() {
            return Ok(false);
        }
        let scopes = Scopes::pull(repo);
        let Some((toc, at, toc_member, footer)) = fetch_toc_parts(client, repo, layer)? else {
            return Ok(false);
        };
        let chunks = toc.chunks(at).map_err(err)?;
        let first = chunks.first().map_or(at, |c| c.start);
        let head = get_range(client, repo, &layer.digest, 0, first)?;
        let diff_id = diff_id_of(client, repo, req.manifest, &layer.digest, &scopes)?;
        let uncompressed_size = layer
            .annotation(UNCOMPRESSED_SIZE_ANNOTATION)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let meta = IndexMeta {
            digest: layer.digest,
            diff_id,
            compression: Compression::Gzip,
            blob_size: layer.size,
            uncompressed_size,
        };
        let parts = TocParts {
            toc: &toc,
            toc_offset: at,
            head: &head,
            toc_member: &toc_member,
            footer: &footer,
        };
        let bytes = estargz::index_from_toc(&parts, &meta)?;
        let store = req.store;
        let path = store.layer_index_path(&layer.digest);
        let mut w = store.blob_writer()?;
        w.write_all(&bytes)
            .map_err(|e| RegistryError::Store(crate::store::StoreError::io(&path, e)))?;
        w.commit_to(&path)?;
        Ok(true)
    }
}

/// The diff_id the config of image `manifest` gives layer `layer`.
fn diff_id_of(
    client: &Client,
    repo: &str,
    manifest: &Digest,
    layer: &Digest,
    scopes: &Scopes,
) -> Result<Digest, RegistryError> {
    let m = client.get_manifest(repo, &manifest.to_string(), scopes)?;
    let what = format!("manifest {repo}@{manifest}");
    let ManifestKind::Image(m) =
        ManifestKind::parse(&m.bytes).map_err(|e| client.bad(&what, &e.to_string()))?
    else {
        return Err(client.bad(&what, "not an image manifest"));
    };
    let config = client.get_small_blob(repo, &m.config, 4 << 20, scopes)?;
    let config = ImageConfig::parse(&config)
        .map_err(|e| client.bad(&format!("config {}", m.config.digest), &e.to_string()))?;
    m.layers
        .iter()
        .filter(|l| mt::is_layer(&l.media_type))
        .position(|l| l.digest == *layer)
        .and_then(|i| config.rootfs.diff_ids.get(i).copied())
        .ok_or_else(|| client.bad(&what, &format!("no diff_id for layer {layer}")))
}
