//! eStargz layers read from a registry by range requests: the footer and
//! the TOC from the blob's end (the TOC checked against the descriptor's
//! TOC digest), then any chunk alone, checked against its digest. The
//! second source of a layer's index for a lazy mount, after a published
//! layerfs index.

use super::RegistryError;
use super::auth::Scopes;
use super::client::Client;
use crate::layer::LayerError;
use crate::layer::estargz::{
    self, Chunk, EstargzError, FOOTER_SIZE, MAX_TOC, TOC_DIGEST_ANNOTATION, Toc,
};
use crate::oci::{Descriptor, Digest};
use std::io::Read;

fn err(e: EstargzError) -> RegistryError {
    RegistryError::Layer(LayerError::Estargz(Box::new(e)))
}

/// `len` bytes of blob `digest` from `offset`. A registry that ignores
/// Range sends the whole blob: the bytes before `offset` are skipped.
pub(super) fn get_range(
    client: &Client,
    repo: &str,
    digest: &Digest,
    offset: u64,
    len: u64,
    scopes: &Scopes,
) -> Result<Vec<u8>, RegistryError> {
    let what = format!("blob {digest} bytes {offset}+{len}");
    let (resp, ranged) = client.get_blob(repo, digest, offset, scopes)?;
    let mut body = resp.into_body().into_reader();
    if !ranged {
        std::io::copy(&mut (&mut body).take(offset), &mut std::io::sink())
            .map_err(|e| client.bad(&what, &e.to_string()))?;
    }
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    body.take(len)
        .read_to_end(&mut out)
        .map_err(|e| client.bad(&what, &e.to_string()))?;
    if out.len() as u64 != len {
        return Err(client.bad(&what, &format!("only {} bytes arrived", out.len())));
    }
    Ok(out)
}

/// The TOC of eStargz layer `layer` and its offset, read from the blob's
/// end; None when the descriptor names no TOC digest (not eStargz).
pub(super) fn fetch_toc(
    client: &Client,
    repo: &str,
    layer: &Descriptor,
    scopes: &Scopes,
) -> Result<Option<(Toc, u64)>, RegistryError> {
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
    let footer = get_range(client, repo, &layer.digest, end, FOOTER_SIZE, scopes)?;
    let at = estargz::parse_footer(&footer).map_err(err)?;
    if at >= end || end - at > MAX_TOC {
        return Err(err(EstargzError::Footer(
            "the TOC offset is outside the blob",
        )));
    }
    let member = get_range(client, repo, &layer.digest, at, end - at, scopes)?;
    let (toc, _) = estargz::parse_toc(&member, Some(&want)).map_err(err)?;
    Ok(Some((toc, at)))
}

/// One chunk's file data, fetched alone and checked.
pub(super) fn fetch_chunk(
    client: &Client,
    repo: &str,
    layer: &Digest,
    chunk: &Chunk,
    scopes: &Scopes,
) -> Result<Vec<u8>, RegistryError> {
    let member = get_range(
        client,
        repo,
        layer,
        chunk.start,
        chunk.end - chunk.start,
        scopes,
    )?;
    estargz::verify_chunk(&member, chunk).map_err(err)
}

/// The eStargz layers of one repository, read by range: what a lazy mount
/// asks for a layer that has a TOC digest and no published layerfs index.
pub struct EstargzSource {
    client: Client,
    repo: String,
    scopes: Scopes,
}

impl EstargzSource {
    pub fn connect(
        reference: &crate::oci::Reference,
        opts: &super::ClientOptions,
    ) -> Result<EstargzSource, RegistryError> {
        let repo = reference.repository();
        Ok(EstargzSource {
            client: Client::connect(reference.registry(), opts)?,
            scopes: Scopes::pull(&repo),
            repo,
        })
    }

    /// The layer's TOC and its offset; None when the layer is not eStargz.
    pub fn toc(&self, layer: &Descriptor) -> Result<Option<(Toc, u64)>, RegistryError> {
        fetch_toc(&self.client, &self.repo, layer, &self.scopes)
    }

    /// One chunk's data, checked against its digest.
    pub fn chunk(&self, layer: &Digest, chunk: &Chunk) -> Result<Vec<u8>, RegistryError> {
        fetch_chunk(&self.client, &self.repo, layer, chunk, &self.scopes)
    }
}
