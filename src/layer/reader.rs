//! Reading a layer's files: any byte range of an entry, decoding only the
//! span(s) that hold it, through an LRU cache of decoded spans bounded in
//! bytes and shared by all layers of a process.
//!
//! A gzip span is decoded only as far as a read needs, and a sequential
//! read continues the inflater where the last one stopped; when reads go
//! through a layer in order, the next spans are decoded ahead on other
//! cores (`decode_ahead`), within a few MiB and the cache's bound.
//!
//! A layer the store holds only in part (a lazy image) is read through its
//! partial blob: before a span is decoded, the compressed bytes it needs are
//! made local (fetched, verified against the index's span digests, stored),
//! waiting at most `store::partial::fetch_timeout()`. No lock of the union is
//! held here; only the span being decoded is marked busy in the cache.

use super::LayerError;
use super::decode::{GzipCursor, SpanError, ZstdCursor, decode_spans, inflate_prefix, inflate_to};
use super::index::{Entry, LayerIndex};
use super::ingest::open_index;
use crate::oci::Digest;
use crate::store::{FetchError, PartialBlob, SpanTable, Store, partial};
use lru::LruCache;
use std::fs::File;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// Decoded spans, shared by every layer a process has open.
pub struct SpanCache {
    state: Mutex<CacheState>,
    ready: Condvar,
    limit: usize,
    decoded: AtomicU64,
    served: AtomicU64,
    checked: AtomicU64,
}

struct CacheState {
    lru: LruCache<(u64, u32), Arc<Vec<u8>>>,
    bytes: usize,
    /// Spans some thread is decoding now; others wait instead of decoding twice.
    busy: std::collections::HashSet<(u64, u32)>,
}

impl SpanCache {
    /// A cache holding at most `limit` bytes of decoded spans.
    pub fn new(limit: usize) -> Arc<SpanCache> {
        Arc::new(SpanCache {
            state: Mutex::new(CacheState {
                lru: LruCache::unbounded(),
                bytes: 0,
                busy: Default::default(),
            }),
            ready: Condvar::new(),
            limit,
            decoded: AtomicU64::new(0),
            served: AtomicU64::new(0),
            checked: AtomicU64::new(0),
        })
    }

    /// Bytes decoded (inflated) since the cache was made.
    pub fn decoded_bytes(&self) -> u64 {
        self.decoded.load(Ordering::Relaxed)
    }

    /// Bytes of files read through the cache since it was made: with
    /// `decoded_bytes`, what reads cost in inflating per byte they return.
    pub fn served_bytes(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Of `decoded_bytes`, those inflated on another core to check the CRC
    /// of spans that reads were served from before their end (see
    /// `SpanChecks`); what they decoded is cached for the reads after.
    pub fn checked_bytes(&self) -> u64 {
        self.checked.load(Ordering::Relaxed)
    }

    /// Bytes of decoded spans the cache holds now (at most its limit, but
    /// for the one span it always keeps).
    pub fn held_bytes(&self) -> u64 {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.bytes as u64
    }

    fn count_decoded(&self, n: u64) {
        self.decoded.fetch_add(n, Ordering::Relaxed);
    }

    /// Span `i` of layer `layer`, at least its first `need` bytes: from the
    /// cache, or made by `decode` from what the cache holds of it (a prefix,
    /// or nothing) while other readers of the span wait. `decode` may return
    /// more spans than `i`; all are kept. None if it did not return span `i`.
    fn get_or_decode<E>(
        &self,
        layer: u64,
        i: u32,
        need: usize,
        decode: impl FnOnce(Option<Arc<Vec<u8>>>) -> Result<Vec<(u32, Vec<u8>)>, E>,
    ) -> Result<Option<Arc<Vec<u8>>>, E> {
        let key = (layer, i);
        let (busy, have) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(s) = st.lru.get(&key).filter(|s| s.len() >= need) {
                    return Ok(Some(s.clone()));
                }
                if st.busy.insert(key) {
                    break (Busy { cache: self, key }, st.lru.peek(&key).cloned());
                }
                st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        let spans = decode(have)?;
        Ok(self.keep(layer, i, spans, busy))
    }

    /// Decodes span `i` of layer `layer` with `decode` unless the cache holds
    /// its `full` bytes or another thread is decoding it: nobody waits here.
    fn decode_ahead<E>(
        &self,
        layer: u64,
        i: u32,
        full: usize,
        decode: impl FnOnce() -> Result<Vec<(u32, Vec<u8>)>, E>,
    ) -> Result<(), E> {
        let key = (layer, i);
        let busy = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.lru.peek(&key).is_some_and(|s| s.len() >= full) || !st.busy.insert(key) {
                return Ok(());
            }
            Busy { cache: self, key }
        };
        let spans = decode()?;
        self.keep(layer, i, spans, busy);
        Ok(())
    }

    /// Puts decoded spans in the cache, then lets the readers waiting for
    /// `busy` go on; returns span `i` if it is among them.
    fn keep(
        &self,
        layer: u64,
        i: u32,
        spans: Vec<(u32, Vec<u8>)>,
        busy: Busy<'_>,
    ) -> Option<Arc<Vec<u8>>> {
        let mut wanted = None;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for (id, data) in spans {
            let data = Arc::new(data);
            if id == i {
                wanted = Some(data.clone());
            }
            self.insert(&mut st, (layer, id), data);
        }
        drop(st);
        drop(busy);
        wanted
    }

    /// Drops span `i` of layer `layer` from the cache.
    fn forget(&self, layer: u64, i: u32) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = st.lru.pop(&(layer, i)) {
            st.bytes -= old.len();
        }
    }

    /// Span `i` of layer `layer` if the cache holds its first `need` bytes.
    fn cached(&self, layer: u64, i: u32, need: usize) -> Option<Arc<Vec<u8>>> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.lru.get(&(layer, i)).filter(|s| s.len() >= need).cloned()
    }

    fn insert(&self, st: &mut CacheState, key: (u64, u32), data: Arc<Vec<u8>>) {
        st.bytes += data.len();
        if let Some(old) = st.lru.put(key, data) {
            st.bytes -= old.len();
        }
        while st.bytes > self.limit && st.lru.len() > 1 {
            match st.lru.pop_lru() {
                Some((_, old)) => st.bytes -= old.len(),
                None => break,
            }
        }
    }
}

/// A span being decoded. Dropped on every way out of the decode (done, an
/// error, a panic), so the readers waiting for the span never wait forever.
struct Busy<'a> {
    cache: &'a SpanCache,
    key: (u64, u32),
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut st = self.cache.state.lock().unwrap_or_else(|p| p.into_inner());
        st.busy.remove(&self.key);
        self.cache.ready.notify_all();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("layer {digest}: {source}")]
    Span { digest: Digest, source: SpanError },
    #[error("layer {digest}: {source}")]
    Fetch {
        digest: Digest,
        source: Box<FetchError>,
    },
}

/// Where a layer's compressed bytes are read from.
enum BlobData {
    Whole(Arc<File>),
    /// Present in part: missing spans are fetched, verified against `spans`.
    Partial {
        blob: Arc<PartialBlob>,
        spans: SpanTable,
    },
}

/// Compressed bytes read past a span's end, so the inflater sees the next
/// block's real header rather than the zeros of a sparse file.
const SPAN_MARGIN: u64 = 64 << 10;

static NEXT_LAYER_KEY: AtomicU64 = AtomicU64::new(1);

/// Bytes past a gzip read's end decoded with it, so that the reads after it
/// (the kernel reads a file ahead in 128 KiB steps) find them decoded.
const DECODE_PAST: usize = 128 << 10;
/// Decoded bytes a sequential read keeps ahead of itself, on other cores (at
/// most a quarter of the cache, so that what it decodes stays until read):
/// as many as it has read in order so far, up to this.
const AHEAD_BYTES: u64 = 8 << 20;
/// Bytes read in order before spans are decoded ahead: a few small files
/// that lie side by side are not a stream.
const AHEAD_AFTER: u64 = 2 << 20;
/// A read this near the end of the last one continues it (the kernel may
/// send a file's reads slightly out of order).
const SEQUENTIAL_GAP: u64 = 128 << 10;

/// One layer opened for reading: its index and its blob.
pub struct Layer {
    pub index: Arc<LayerIndex>,
    blob: BlobData,
    key: u64,
    cache: Arc<SpanCache>,
    /// Where the last zstd decode stopped, so sequential reads continue.
    zstd: Mutex<Option<ZstdCursor>>,
    /// Where the last partial gzip decode stopped, likewise.
    gzip: Mutex<Option<GzipCursor>>,
    /// The stream offset where the last read ended, and the bytes read in
    /// order up to it, to see sequential reads.
    last_end: AtomicU64,
    streak: AtomicU64,
    /// Spans before this one have been given to `decode_ahead`.
    ahead: AtomicU32,
    /// Spans served before their end was decoded, given to a decode-ahead
    /// thread to check whole against their CRC; those that failed it.
    checks: Arc<Mutex<SpanChecks>>,
}

/// Gzip spans of a whole blob are served as soon as the bytes a read needs
/// are inflated, but damage on disk is caught by a span's CRC, which covers
/// the whole span: the rest of each such span is inflated on another core,
/// and a span that fails its CRC is dropped from the cache and fails every
/// later read (EIO), as it would have failed whole.
#[derive(Default)]
struct SpanChecks {
    queued: std::collections::HashSet<u32>,
    damaged: std::collections::HashSet<u32>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Layer({})", self.index.digest())
    }
}

impl Layer {
    /// Opens the layer of blob `digest`, rebuilding its index from the blob
    /// if the index is missing or damaged.
    pub fn open(
        store: &Store,
        digest: &Digest,
        cache: Arc<SpanCache>,
    ) -> Result<Layer, LayerError> {
        let (blob, index) = match store.open_blob(digest) {
            Ok(f) => (BlobData::Whole(Arc::new(f)), open_index(store, digest)?),
            Err(crate::store::StoreError::BlobNotFound(_)) => match store.open_partial(digest)? {
                Some(p) => open_partial(store, digest, p)?,
                None => return Err(crate::store::StoreError::BlobNotFound(*digest).into()),
            },
            Err(e) => return Err(e.into()),
        };
        Ok(Layer {
            index: Arc::new(index),
            blob,
            key: NEXT_LAYER_KEY.fetch_add(1, Ordering::Relaxed),
            cache,
            zstd: Mutex::new(None),
            gzip: Mutex::new(None),
            last_end: AtomicU64::new(u64::MAX),
            streak: AtomicU64::new(0),
            ahead: AtomicU32::new(0),
            checks: Arc::default(),
        })
    }

    pub fn digest(&self) -> &Digest {
        self.index.digest()
    }

    /// The partial blob a lazy layer reads through; None when it is whole.
    pub fn partial(&self) -> Option<&Arc<PartialBlob>> {
        match &self.blob {
            BlobData::Whole(_) => None,
            BlobData::Partial { blob, .. } => Some(blob),
        }
    }

    /// Fetches every span of a lazy layer still missing, `step` bytes per
    /// request, then checks the whole blob and makes it an ordinary blob.
    /// `go_on` is asked before each request (false stops the prefetch).
    pub fn prefetch(&self, step: u64, go_on: &dyn Fn() -> bool) -> Result<bool, ReadError> {
        let BlobData::Partial { blob, .. } = &self.blob else {
            return Ok(true);
        };
        if !self.prefetch_range(0..blob.size(), step, go_on)? {
            return Ok(false);
        }
        blob.complete().map_err(|source| ReadError::Fetch {
            digest: *self.digest(),
            source: Box::new(source),
        })
    }

    /// Fetches the spans over bytes `range` of a lazy layer's blob still
    /// missing, `step` bytes per request; false when `go_on` stopped it.
    pub fn prefetch_range(
        &self,
        range: std::ops::Range<u64>,
        step: u64,
        go_on: &dyn Fn() -> bool,
    ) -> Result<bool, ReadError> {
        let BlobData::Partial { blob, spans } = &self.blob else {
            return Ok(true);
        };
        let err = |source| ReadError::Fetch {
            digest: *self.digest(),
            source: Box::new(source),
        };
        let mut at = range.start;
        let stop = range.end.min(blob.size());
        while at < stop {
            if !go_on() {
                return Ok(false);
            }
            if blob.is_whole() {
                return Ok(true);
            }
            let end = at.saturating_add(step).min(stop);
            let runs = blob.missing(at..end, spans).map_err(err)?;
            blob.fetch_runs(&runs, spans).map_err(err)?;
            at = runs.last().map_or(end, |r| r.end.max(end));
        }
        Ok(true)
    }

    /// Reads from file `entry` at `offset` into `buf`; returns the bytes read
    /// (short only at the end of the file). Holes of sparse files read as zeros.
    pub fn read_at(
        &self,
        entry: &Entry<'_>,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, ReadError> {
        let size = entry.size();
        if offset >= size {
            return Ok(0);
        }
        let want = buf.len().min((size - offset) as usize);
        let buf = &mut buf[..want];
        if !entry.is_sparse() {
            self.read_stream(entry.data_offset() + offset, buf)?;
            return Ok(want);
        }
        buf.fill(0);
        let mut stream_pos = entry.data_offset();
        for (ext_off, ext_len) in entry.sparse() {
            // Saturating: the extents come from the index, and a damaged
            // one must give wrong bytes or an error, never an overflow.
            let (lo, hi) = (
                ext_off.max(offset),
                ext_off.saturating_add(ext_len).min(offset + want as u64),
            );
            if lo < hi {
                let dst = &mut buf[(lo - offset) as usize..(hi - offset) as usize];
                self.read_stream(stream_pos + (lo - ext_off), dst)?;
            }
            stream_pos = stream_pos.saturating_add(ext_len);
        }
        Ok(want)
    }

    /// The next data or hole boundary at or after `offset`, for SEEK_DATA
    /// (`data` true) and SEEK_HOLE; None past the end.
    pub fn seek_data(&self, entry: &Entry<'_>, offset: u64, data: bool) -> Option<u64> {
        let size = entry.size();
        if offset >= size {
            return None;
        }
        if !entry.is_sparse() {
            return Some(if data { offset } else { size });
        }
        let extents: Vec<(u64, u64)> = entry.sparse().into_iter().filter(|e| e.1 > 0).collect();
        let inside = extents
            .iter()
            .find(|(o, l)| offset >= *o && offset < o.saturating_add(*l));
        if data {
            match inside {
                Some(_) => Some(offset),
                None => extents.iter().map(|e| e.0).filter(|&o| o > offset).min(),
            }
        } else {
            match inside {
                Some(&(o, l)) => {
                    // Adjacent extents continue the data.
                    let mut end = o.saturating_add(l);
                    while let Some(&(no, nl)) = extents.iter().find(|e| e.0 == end && e.1 > 0) {
                        end = no.saturating_add(nl);
                        if end == u64::MAX {
                            break;
                        }
                    }
                    Some(end.min(size))
                }
                None => Some(offset),
            }
        }
    }

    /// Reads `buf.len()` bytes of the uncompressed stream at `off`.
    fn read_stream(&self, mut off: u64, mut buf: &mut [u8]) -> Result<(), ReadError> {
        let len = buf.len() as u64;
        let last = self
            .last_end
            .swap(off.saturating_add(len), Ordering::Relaxed);
        let streak = if last != u64::MAX && off.abs_diff(last) <= SEQUENTIAL_GAP {
            self.streak.fetch_add(len, Ordering::Relaxed) + len
        } else {
            self.streak.store(len, Ordering::Relaxed);
            len
        };
        while !buf.is_empty() {
            let Some(i) = self.index.checkpoint_for(off) else {
                return Err(ReadError::Span {
                    digest: *self.digest(),
                    source: SpanError::Damaged {
                        offset: off,
                        why: "offset outside the layer".into(),
                    },
                });
            };
            let cp = self.index.checkpoint(i);
            let start = (off - cp.out_offset) as usize;
            let need = (start + buf.len()).min(cp.out_len as usize);
            let span = match self.lazy_prefix(i, need)? {
                Some(prefix) => prefix,
                // A stream's spans are decoded whole as it goes on (and
                // ahead of it), which checks them: no check of its own.
                None => self.span(i, need, streak < AHEAD_AFTER)?,
            };
            if streak >= AHEAD_AFTER {
                self.read_ahead(i, streak);
            }
            let n = buf.len().min(span.len().saturating_sub(start));
            if n == 0 {
                return Err(ReadError::Span {
                    digest: *self.digest(),
                    source: SpanError::Damaged {
                        offset: off,
                        why: "short span".into(),
                    },
                });
            }
            buf[..n].copy_from_slice(&span[start..start + n]);
            buf = &mut buf[n..];
            off += n as u64;
            self.cache.served.fetch_add(n as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Gives the spans after `i`, up to `streak` bytes of them (at most
    /// `AHEAD_BYTES`), to the decode-ahead threads (gzip layers held whole:
    /// their spans decode independently; zstd ones continue one cursor, and
    /// lazy ones fetch).
    fn read_ahead(&self, i: u32, streak: u64) {
        let BlobData::Whole(file) = &self.blob else {
            return;
        };
        if self.index.compression() != super::Compression::Gzip {
            return;
        }
        let budget = streak.min(AHEAD_BYTES).min(self.cache.limit as u64 / 4);
        let (mut j, mut bytes) = (i + 1, 0u64);
        while j < self.index.checkpoints() && bytes < budget {
            bytes += u64::from(self.index.checkpoint(j).out_len);
            j += 1;
        }
        // Only what an earlier call did not give already, unless that was
        // for another stretch of the layer.
        let given = self.ahead.swap(j, Ordering::Relaxed);
        let from = if given > i && given <= j {
            given
        } else {
            i + 1
        };
        for s in from..j {
            let (index, file, cache, key) = (
                Arc::clone(&self.index),
                Arc::clone(file),
                Arc::clone(&self.cache),
                self.key,
            );
            decode_ahead::submit(Box::new(move || {
                decode_whole(&cache, key, &index, &file, s, false);
            }));
        }
    }

    /// For a gzip layer held in part whose span `i` is not local: its first
    /// `need` bytes, fetching only the compressed bytes they take (None: read
    /// the span whole, as for any other layer).
    fn lazy_prefix(&self, i: u32, need: usize) -> Result<Option<Arc<Vec<u8>>>, ReadError> {
        let BlobData::Partial { blob, spans } = &self.blob else {
            return Ok(None);
        };
        if self.index.compression() != super::Compression::Gzip {
            return Ok(None);
        }
        if let Some(s) = self.cache.cached(self.key, i, need) {
            return Ok(Some(s));
        }
        let range = clip_to_chunk(spans, compressed_range(&self.index, i, blob.size()));
        if blob.is_local(range.clone()) {
            return Ok(None);
        }
        let fetch_err = |source| ReadError::Fetch {
            digest: *self.digest(),
            source: Box::new(source),
        };
        let timeout = partial::fetch_timeout();
        // One request for about the share of the span the read needs; the
        // decode asks for more if that was short, as much as it then expects.
        let cp = self.index.checkpoint(i);
        let span_in = if i + 1 < self.index.checkpoints() {
            self.index.checkpoint(i + 1).in_offset
        } else {
            blob.size()
        };
        let guess = span_in
            .saturating_sub(range.start)
            .saturating_mul(need as u64)
            / u64::from(cp.out_len.max(1));
        blob.ensure(
            clip_to_chunk(spans, range.start..range.start + guess),
            spans,
            timeout,
        )
        .map_err(fetch_err)?;
        let failed = std::cell::RefCell::new(None);
        let ensure = |offset: u64, len: u64| {
            blob.ensure(
                clip_to_chunk(spans, offset..offset.saturating_add(len)),
                spans,
                timeout,
            )
            .map_err(|e| {
                *failed.borrow_mut() = Some(e);
                std::io::Error::other("fetch failed")
            })
        };
        match inflate_prefix(&self.index, blob.file(), i, need, &ensure) {
            Ok(prefix) => Ok(Some(Arc::new(prefix))),
            Err(source) => match failed.into_inner() {
                Some(f) => Err(fetch_err(f)),
                None => Err(ReadError::Span {
                    digest: *self.digest(),
                    source,
                }),
            },
        }
    }

    /// Span `i`, at least its first `need` bytes; `check`: have it checked
    /// whole if the read leaves its end undecoded.
    fn span(&self, i: u32, need: usize, check: bool) -> Result<Arc<Vec<u8>>, ReadError> {
        let span = self.span_unchecked(i, need)?;
        if self.checks_lock().damaged.contains(&i) {
            return Err(ReadError::Span {
                digest: *self.digest(),
                source: SpanError::Damaged {
                    offset: self.index.checkpoint(i).out_offset,
                    why: "the span does not match its CRC".into(),
                },
            });
        }
        if check && span.len() < self.index.checkpoint(i).out_len as usize {
            self.check_whole(i);
        }
        Ok(span)
    }

    fn checks_lock(&self) -> std::sync::MutexGuard<'_, SpanChecks> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Has gzip span `i` of a whole blob inflated to its end on a
    /// decode-ahead thread, once, to check its CRC (see `SpanChecks`); what
    /// it decodes goes to the cache for the reads after.
    fn check_whole(&self, i: u32) {
        let BlobData::Whole(file) = &self.blob else {
            return; // fetched bytes were checked against their span digests
        };
        if !self.index.has_crcs() || !self.checks_lock().queued.insert(i) {
            return;
        }
        let (index, file, cache, key, checks) = (
            Arc::clone(&self.index),
            Arc::clone(file),
            Arc::clone(&self.cache),
            self.key,
            Arc::clone(&self.checks),
        );
        let queued = decode_ahead::submit_check(Box::new(move || {
            let full = index.checkpoint(i).out_len as usize;
            let outcome = decode_whole(&cache, key, &index, &file, i, true);
            let mut c = checks.lock().unwrap_or_else(|p| p.into_inner());
            match outcome {
                Whole::Failed(why) => {
                    log::error!(
                        "layer {}: {why}; reads of it fail from now on",
                        index.digest()
                    );
                    c.damaged.insert(i);
                    cache.forget(key, i);
                }
                // Another thread was decoding part of it: ask again later.
                Whole::Skipped if cache.cached(key, i, full).is_none() => {
                    c.queued.remove(&i);
                }
                Whole::Skipped | Whole::Done => {}
            }
        }));
        if !queued {
            // The threads are busy: a later read of the span asks again.
            self.checks_lock().queued.remove(&i);
        }
    }

    /// Span `i`, at least its first `need` bytes, as decoded.
    fn span_unchecked(&self, i: u32, need: usize) -> Result<Arc<Vec<u8>>, ReadError> {
        let gzip = self.index.compression() == super::Compression::Gzip;
        let need = if gzip {
            need
        } else {
            self.index.checkpoint(i).out_len as usize
        };
        let decoded = self.cache.get_or_decode(self.key, i, need, |have| {
            let file: &File = match &self.blob {
                BlobData::Whole(f) => f,
                BlobData::Partial { blob, spans } => {
                    let range = clip_to_chunk(spans, compressed_range(&self.index, i, blob.size()));
                    blob.ensure(range, spans, partial::fetch_timeout())
                        .map_err(|source| ReadError::Fetch {
                            digest: *self.digest(),
                            source: Box::new(source),
                        })?;
                    blob.file()
                }
            };
            let err = |source| ReadError::Span {
                digest: *self.digest(),
                source,
            };
            if gzip {
                let have = have.as_deref().map(|h| &h[..]);
                let want = need
                    .saturating_add(DECODE_PAST)
                    .max(have.map_or(0, |h| h.len() * 2));
                // Taken, not held: reads of other spans decode meanwhile.
                let mut saved = self.gzip.lock().unwrap_or_else(|p| p.into_inner()).take();
                let (data, inflated) =
                    inflate_to(&self.index, file, i, have, want, &mut saved).map_err(err)?;
                if saved.is_some() {
                    *self.gzip.lock().unwrap_or_else(|p| p.into_inner()) = saved;
                }
                self.cache.count_decoded(inflated);
                return Ok(vec![(i, data)]);
            }
            let spans = decode_spans(&self.index, file, i, &self.zstd).map_err(err)?;
            self.cache
                .count_decoded(spans.iter().map(|(_, d)| d.len() as u64).sum());
            Ok(spans)
        });
        let err = |source| ReadError::Span {
            digest: *self.digest(),
            source,
        };
        decoded?.ok_or_else(|| {
            err(SpanError::Damaged {
                offset: 0,
                why: "span not decoded".into(),
            })
        })
    }
}

/// What decoding a span whole on a pool thread came to.
enum Whole {
    Done,
    /// Cached whole already, or another thread was decoding it.
    Skipped,
    Failed(String),
}

/// Decodes span `s` whole into `cache` (checking its CRC) unless it is
/// cached whole or being decoded: decodes ahead of a stream and CRC checks
/// (`check`: counted as one too).
fn decode_whole(
    cache: &SpanCache,
    key: u64,
    index: &LayerIndex,
    file: &File,
    s: u32,
    check: bool,
) -> Whole {
    let full = index.checkpoint(s).out_len as usize;
    let mut outcome = Whole::Skipped;
    let _ = cache.decode_ahead(key, s, full, || {
        let spans = decode_spans(index, file, s, &Mutex::new(None)).inspect_err(|e| {
            outcome = Whole::Failed(e.to_string());
        })?;
        let n: u64 = spans.iter().map(|(_, d)| d.len() as u64).sum();
        if check {
            // Checked first: decoded minus checked never counts a check.
            cache.checked.fetch_add(n, Ordering::Relaxed);
        }
        cache.count_decoded(n);
        outcome = Whole::Done;
        Ok::<_, SpanError>(spans)
    });
    outcome
}

/// The threads that decode spans ahead of sequential reads: one per core
/// (up to 4), started on first use, fed through a short queue; what does not
/// fit in the queue is not decoded ahead (the reader decodes it when it
/// gets there).
mod decode_ahead {
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
    use std::sync::{Arc, Mutex, OnceLock};

    pub type Job = Box<dyn FnOnce() + Send>;

    /// Queues a decode ahead of a sequential read; false if the queue is
    /// full (the job is dropped).
    pub fn submit(job: Job) -> bool {
        static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        POOL.get_or_init(|| start("decode-ahead", threads, 16))
            .try_send(job)
            .is_ok()
    }

    /// Queues a span's CRC check (see `SpanChecks`) on a thread of its own,
    /// so checks never take the places of decodes ahead; false if full.
    pub fn submit_check(job: Job) -> bool {
        static POOL: OnceLock<SyncSender<Job>> = OnceLock::new();
        POOL.get_or_init(|| start("span-check", 1, 64))
            .try_send(job)
            .is_ok()
    }

    fn start(name: &str, threads: usize, queue: usize) -> SyncSender<Job> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for k in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}-{k}"))
                .spawn(move || work(&rx));
            if let Err(e) = spawned {
                log::warn!("cannot start a {name} thread: {e}");
            }
        }
        tx
    }

    fn work(rx: &Mutex<Receiver<Job>>) {
        loop {
            let job = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
            let Ok(job) = job else { return };
            // A decoder bug costs that span's read-ahead, not the thread.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        }
    }
}

/// Makes layer `digest` whole when the store holds it in part: fetches
/// what is missing, checks the digest, moves it into the blobs. Nothing to
/// do for a whole one. `save`, `push` and a later `pull` use it.
pub fn fetch_whole(store: &Store, digest: &Digest) -> Result<(), LayerError> {
    if store.has_blob(digest) || !store.has_partial(digest) {
        return Ok(());
    }
    let layer = Layer::open(store, digest, SpanCache::new(8 << 20))?;
    match layer.prefetch(4 << 20, &|| true) {
        Ok(_) => Ok(()),
        Err(ReadError::Fetch { source, .. }) => Err(LayerError::Fetch(source)),
        Err(e @ ReadError::Span { .. }) => {
            Err(LayerError::Stream(std::io::Error::other(e.to_string())))
        }
    }
}

/// Opens a lazy layer: its index must be local (it cannot be rebuilt from a
/// blob the store lacks) and carry span digests for the blob it describes.
fn open_partial(
    store: &Store,
    digest: &Digest,
    blob: Arc<PartialBlob>,
) -> Result<(BlobData, LayerIndex), LayerError> {
    let path = store.layer_index_path(digest);
    let index = LayerIndex::open(&path, digest)?;
    let bad = |why: &str| LayerError::BadIndex {
        path: path.clone(),
        why: why.to_string(),
    };
    if index.meta().blob_size != blob.size() {
        return Err(bad("its blob size differs from the partial blob's"));
    }
    let spans = index
        .span_table()
        .ok_or_else(|| bad("it has no span digests, so a lazy read cannot be verified"))?;
    Ok((BlobData::Partial { blob, spans }, index))
}

/// `range` cut at the end of the eStargz chunk it starts in: a chunk is a
/// gzip member of its own, so inflating it never reads past it (and the
/// bytes after the last chunk, the TOC, have no chunk digest).
fn clip_to_chunk(spans: &SpanTable, range: std::ops::Range<u64>) -> std::ops::Range<u64> {
    if !spans.is_chunks() {
        return range;
    }
    match spans.covering(range.start..range.start + 1) {
        Ok([s, ..]) => range.start..range.end.min(s.end()),
        _ => range,
    }
}

/// The compressed bytes that decoding span `i` reads.
fn compressed_range(index: &LayerIndex, i: u32, blob_size: u64) -> std::ops::Range<u64> {
    let cp = index.checkpoint(i);
    let mut first = i;
    if index.compression() == super::Compression::Zstd {
        while first > 0 && !index.checkpoint(first).restart {
            first -= 1;
        }
    }
    let start_cp = index.checkpoint(first);
    let start = start_cp
        .in_offset
        .saturating_sub(u64::from(start_cp.bits > 0));
    let end = if index.compression() == super::Compression::None {
        cp.in_offset.saturating_add(cp.out_len as u64)
    } else if index.compression() == super::Compression::Zstd {
        // A checkpoint inside a zstd frame has no compressed offset (it is
        // 0): the span is read to its frame's end, the next frame's start.
        (i + 1..index.checkpoints())
            .map(|j| index.checkpoint(j))
            .find(|c| c.restart)
            .map_or(blob_size, |c| c.in_offset)
    } else if i + 1 < index.checkpoints() {
        index
            .checkpoint(i + 1)
            .in_offset
            .saturating_add(SPAN_MARGIN)
    } else {
        blob_size
    };
    start.min(blob_size)..end.min(blob_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_decode_that_panics_or_fails_releases_its_span() {
        let cache = SpanCache::new(1 << 20);
        let (tx, rx) = mpsc::channel();
        // Another reader of the span arrives while the first decode runs, then
        // the first decode panics: the second must get an answer.
        let panicked = std::panic::catch_unwind(|| {
            let _ = cache.get_or_decode::<()>(7, 0, 4, |_| {
                let (cache, tx) = (Arc::clone(&cache), tx.clone());
                std::thread::spawn(move || {
                    let got =
                        cache.get_or_decode::<()>(7, 0, 4, |_| Ok(vec![(0, b"span".to_vec())]));
                    let _ = tx.send(got);
                });
                panic!("decoder bug");
            });
        });
        assert!(panicked.is_err());
        // The timeout only turns a hang into a failure; it measures nothing.
        let got = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the second reader waited forever");
        assert_eq!(got.unwrap().as_deref().map(|v| &v[..]), Some(&b"span"[..]));

        // An error releases the span too.
        assert_eq!(cache.get_or_decode(7, 1, 2, |_| Err("bad")), Err("bad"));
        let again = cache.get_or_decode::<()>(7, 1, 2, |_| Ok(vec![(1, b"ok".to_vec())]));
        assert_eq!(again.unwrap().as_deref().map(|v| &v[..]), Some(&b"ok"[..]));
    }
}
