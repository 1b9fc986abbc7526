//! Lazy images, the registry's part: range requests on blob URLs, and where
//! a lazy pull finds each layer's index.
//!
//! - [`RangeFetcher`] implements `store::BlobFetcher`: `GET /v2/REPO/blobs/D`
//!   with `Range: bytes=A-B` through the same [`Client`] as `pull` (scheme,
//!   auth and token renewal, TLS, redirects, retries). A registry that
//!   ignores Range (200 with the whole body) still works: the bytes before
//!   the range are read and dropped. The command line installs one for the
//!   process with `store::partial::set_fetcher`.
//! - [`IndexSource`]: "the index of layer D of image M". A lazy pull asks the
//!   sources of [`index_sources`] in order; the first that puts an index
//!   with span digests in the store wins. With none, the layer is fetched
//!   whole and indexed as it arrives, as a plain pull does. The sources:
//!   1. an index already in the store (a layer seen before, or one whose
//!      blob was removed): [`LocalIndex`];
//!   2. the layerfs index published with the image (referrers API or tag
//!      schema) and 3. one made from an eStargz layer's TOC
//!      (`estargz::EstargzIndex`), listed in `index_sources::all`.
//!
//! For whoever publishes or converts an index: it must be index version 5
//! with span digests (`LayerIndex::span_table`); `layer::index_blob_with_span`
//! with 1 MiB builds one that lazy reads fetch little through (a read
//! decodes from the checkpoint before it). An eStargz TOC gives its chunks
//! as the spans (`SpanTable::chunks`, see `layer::estargz::index_from_toc`).

use super::RegistryError;
use super::auth::Scopes;
use super::client::{Client, ClientOptions, Req};
use crate::layer::LayerIndex;
use crate::oci::{Descriptor, Digest};
use crate::store::{BlobFetcher, FetchError, Store};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use ureq::http::Method;

/// Fetches byte ranges of blobs, one connected client per registry, kept
/// for the life of the process (its token is renewed as `pull`'s is).
pub struct RangeFetcher {
    opts: ClientOptions,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl RangeFetcher {
    /// Silent connections cut after the fetch timeout
    /// (`store::partial::fetch_timeout`).
    pub fn new(opts: ClientOptions) -> RangeFetcher {
        RangeFetcher::with_bound(opts, crate::store::partial::fetch_timeout())
    }

    /// A connection silent for `bound` (connecting, waiting for the answer,
    /// between two reads of the body) is cut and not tried again: a reader
    /// waits that long at most, and the fetch thread is free for the reads
    /// after it, which work again as soon as the registry answers.
    pub fn with_bound(mut opts: ClientOptions, bound: std::time::Duration) -> RangeFetcher {
        opts.deadlines.idle = opts.deadlines.idle.min(bound);
        opts.deadlines.retry_idle = false;
        RangeFetcher {
            opts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, registry: &str) -> Result<Arc<Client>, RegistryError> {
        if let Some(c) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return Ok(Arc::clone(c));
        }
        // Connected outside the lock: a registry that does not answer must
        // not hold up reads from another.
        let c = Arc::new(Client::connect(registry, &self.opts)?);
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(registry.to_string(), Arc::clone(&c));
        Ok(c)
    }

    fn forget(&self, registry: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(registry);
    }
}

/// Splits an origin (`registry/repository`) in two.
pub fn split_origin(origin: &str) -> Option<(&str, &str)> {
    origin
        .split_once('/')
        .filter(|(r, p)| !r.is_empty() && !p.is_empty())
}

/// The origin string partial blobs record for `repo` on `registry`.
pub fn origin(registry: &str, repo: &str) -> String {
    format!("{registry}/{repo}")
}

impl BlobFetcher for RangeFetcher {
    fn fetch_range(
        &self,
        origin: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let failed = |why: String| FetchError::Failed {
            origin: origin.to_string(),
            why,
        };
        let (registry, repo) =
            split_origin(origin).ok_or_else(|| failed("not a registry/repository".into()))?;
        let client = self.client(registry).map_err(|e| failed(e.to_string()))?;
        let got = get_range(&client, repo, digest, offset, len);
        if got.is_err() {
            // Connect again next time: the registry may have restarted.
            self.forget(registry);
        }
        got.map_err(|e| failed(e.to_string()))
    }
}

/// Bytes `[offset, offset + len)` of a blob, by a Range request; from a
/// registry that answers 200 instead, the same bytes out of the whole body.
pub fn get_range(
    client: &Client,
    repo: &str,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RegistryError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let scopes = Scopes::pull(repo);
    let what = format!("blob {digest} bytes {offset}-{}", offset + len - 1);
    let req = Req::new(
        Method::GET,
        format!("/v2/{repo}/blobs/{digest}"),
        &scopes,
        format!("GET {what}"),
    )
    .transfer()
    .header("Range", format!("bytes={offset}-{}", offset + len - 1));
    let resp = client.send(req)?;
    let resp = client.expect(resp, &[200, 206], &what)?;
    let skip = match resp.status().as_u16() {
        206 => {
            let range = resp
                .headers()
                .get("Content-Range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !range.starts_with(&format!("bytes {offset}-")) {
                return Err(client.bad(&what, "the registry answered another range than asked"));
            }
            0
        }
        // Range ignored: the whole blob comes.
        _ => offset,
    };
    let mut body = resp.into_body().into_reader();
    let io = |e: std::io::Error| client.bad(&what, &format!("reading the body: {e}"));
    if skip > 0 {
        let skipped =
            std::io::copy(&mut (&mut body).take(skip), &mut std::io::sink()).map_err(io)?;
        if skipped < skip {
            return Err(client.bad(&what, "the body ends before the range"));
        }
    }
    // `len` may come from a hostile footer: the buffer grows with the body.
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    (&mut body).take(len).read_to_end(&mut out).map_err(io)?;
    if (out.len() as u64) < len {
        return Err(client.bad(&what, "the body ends inside the range"));
    }
    Ok(out)
}

/// What an index source is asked about: layer `layer` of the image whose
/// manifest is `manifest`, in `repo` of the registry `client` speaks to.
pub struct IndexRequest<'a> {
    pub store: &'a Store,
    pub client: &'a Client,
    pub repo: &'a str,
    pub manifest: &'a Digest,
    pub layer: &'a Descriptor,
}

/// One place a lazy layer's index can come from.
pub trait IndexSource: Send + Sync {
    /// For messages: `local`, `published`, `estargz`.
    fn name(&self) -> &'static str;
    /// Puts the layerfs index of `req.layer` (with span digests) at
    /// `store.layer_index_path(layer)` and returns true; false when this
    /// source has none. An error is logged and the next source is asked.
    fn fetch_index(&self, req: &IndexRequest<'_>) -> Result<bool, RegistryError>;
}

/// An index already in the store, for the same blob and with span digests.
pub struct LocalIndex;

impl IndexSource for LocalIndex {
    fn name(&self) -> &'static str {
        "local"
    }
    fn fetch_index(&self, req: &IndexRequest<'_>) -> Result<bool, RegistryError> {
        let d = &req.layer.digest;
        Ok(LayerIndex::open(&req.store.layer_index_path(d), d)
            .is_ok_and(|i| i.meta().blob_size == req.layer.size && i.span_table().is_some()))
    }
}

/// The sources a lazy pull asks, in order.
pub fn index_sources() -> Vec<Box<dyn IndexSource>> {
    vec![Box::new(LocalIndex)]
}

/// The first index any source has for `req.layer`, opened; None when none
/// has one (the layer is then fetched whole).
pub fn find_index(sources: &[Box<dyn IndexSource>], req: &IndexRequest<'_>) -> Option<LayerIndex> {
    let d = &req.layer.digest;
    for s in sources {
        match s.fetch_index(req) {
            Ok(true) => match LayerIndex::open(&req.store.layer_index_path(d), d) {
                Ok(i) if i.span_table().is_some() && i.meta().blob_size == req.layer.size => {
                    return Some(i);
                }
                Ok(_) => log::warn!("layer {d}: the {} index has no span digests", s.name()),
                Err(e) => log::warn!("layer {d}: the {} index: {e}", s.name()),
            },
            Ok(false) => {}
            Err(e) => log::warn!("layer {d}: looking for a {} index: {e}", s.name()),
        }
    }
    None
}
