//! Partial blobs: a layer the store holds only in part, because it is read
//! lazily from a registry. It lives beside the blobs, never among them:
//!
//! ```text
//! layerfs/partial/<hex>          sparse data file, the blob's full size
//! layerfs/partial/<hex>.ranges   append-only log of the byte ranges that are
//!                                local and verified: 24-byte records
//!                                (offset, len, check), each written after the
//!                                data it names is fsynced
//! layerfs/partial/<hex>.json     size and where to fetch the rest (origins)
//! ```
//!
//! Crash safety: a range is recorded only after its bytes are on disk, and a
//! torn or damaged record is skipped (the records appended after it still
//! count), so kill -9 loses at most a range being fetched, never one
//! already verified. Everyone who has the blob open appends to the same
//! log and reads the others' records before fetching. A partial blob
//! becomes an ordinary blob (renamed into `blobs/sha256/`) only when whole and
//! its digest checks.
//!
//! The seams other modules plug into:
//! - [`SpanTable`]: the digest of every span of a blob's compressed bytes. A
//!   fetched range is checked against it span by span before anything is
//!   stored or served. The layer index carries one (fixed-size spans); an
//!   eStargz TOC gives another (one span per chunk, checked by the sha256
//!   of the chunk its gzip member inflates to: [`SpanTable::chunks`]).
//! - [`BlobFetcher`]: "fetch these bytes of this blob from this origin",
//!   implemented by the registry client. The store cannot depend on the
//!   registry, so the command line installs one with [`set_fetcher`]; every
//!   reader of a partial blob in the process (mount, run, build, commit,
//!   export) then fetches what is missing through it. Tests install fakes
//!   for origins of their own with [`set_fetcher_for`].

use super::{Result, Store, StoreError};
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const RECORD_LEN: usize = 24;
const RECORD_CHECK: u64 = 0x6c66_7370_616e_2e31; // "lfspan.1"

/// How long a read waits for the network before it fails (EIO), unless
/// `LAYERFS_FETCH_TIMEOUT=SECONDS` says otherwise.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The wait bound in force: `LAYERFS_FETCH_TIMEOUT` seconds, or 30.
pub fn fetch_timeout() -> Duration {
    parse_fetch_timeout(std::env::var("LAYERFS_FETCH_TIMEOUT").ok().as_deref())
}

/// A fetch timeout setting: seconds; past what a Duration holds, no bound;
/// anything else but a positive number, the default.
fn parse_fetch_timeout(v: Option<&str>) -> Duration {
    v.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_FETCH_TIMEOUT, |s| {
            Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
        })
}

/// One span of a blob's compressed bytes and the sha256 of exactly those bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobSpan {
    pub offset: u64,
    pub len: u64,
    pub digest: Digest,
}

impl BlobSpan {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }
}

/// The spans of one blob that a fetched range is verified against, sorted,
/// not overlapping. Bytes no span covers cannot be fetched lazily.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpanTable {
    spans: Vec<BlobSpan>,
    /// Empty: each digest is of the span's compressed bytes. Otherwise, per
    /// span, None for such a digest, or the length of an eStargz chunk: the
    /// span is a gzip member whose first that many inflated bytes have the
    /// digest (the TOC's chunk digests are of uncompressed data).
    chunks: Vec<Option<u64>>,
}

impl SpanTable {
    /// A table from spans in any order; overlapping or empty spans are refused.
    pub fn new(mut spans: Vec<BlobSpan>) -> std::result::Result<SpanTable, String> {
        spans.sort_by_key(|s| s.offset);
        for w in spans.windows(2) {
            if w[0].end() > w[1].offset {
                return Err(format!(
                    "spans at {} and {} overlap",
                    w[0].offset, w[1].offset
                ));
            }
        }
        if spans.iter().any(|s| s.len == 0) {
            return Err("an empty span".into());
        }
        Ok(SpanTable {
            spans,
            chunks: Vec::new(),
        })
    }

    /// A table of eStargz chunks: each span is a gzip member, paired with
    /// the length of the chunk its first inflated bytes are (None: the
    /// digest is of the compressed bytes, for the bytes between chunks).
    pub fn chunks(
        mut spans: Vec<(BlobSpan, Option<u64>)>,
    ) -> std::result::Result<SpanTable, String> {
        spans.sort_by_key(|(s, _)| s.offset);
        let (spans, chunks): (Vec<BlobSpan>, Vec<Option<u64>>) = spans.into_iter().unzip();
        let mut t = SpanTable::new(spans)?;
        t.chunks = chunks;
        Ok(t)
    }

    /// Whether the spans are eStargz chunks (see [`SpanTable::chunks`]).
    pub fn is_chunks(&self) -> bool {
        !self.chunks.is_empty()
    }

    /// Whether `bytes`, the compressed bytes of span `i`, are right.
    fn verifies(&self, i: usize, bytes: &[u8]) -> bool {
        let want = self.spans[i].digest;
        let Some(&Some(len)) = self.chunks.get(i) else {
            return Digest::from_bytes(Sha256::digest(bytes).into()) == want;
        };
        use std::io::Read;
        let mut h = Sha256::new();
        let mut member = flate2::read::GzDecoder::new(bytes).take(len);
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0u64;
        loop {
            match member.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    h.update(&buf[..n]);
                    got += n as u64;
                }
                Err(_) => return false,
            }
        }
        got == len && Digest::from_bytes(h.finalize().into()) == want
    }

    /// Fixed-size spans of `span_len` bytes (the last one shorter) over a
    /// blob of `size` bytes, one digest each, as the layer index keeps them.
    pub fn fixed(
        size: u64,
        span_len: u64,
        digests: Vec<Digest>,
    ) -> std::result::Result<SpanTable, String> {
        if span_len == 0 || size.div_ceil(span_len) != digests.len() as u64 {
            return Err("span count does not match the blob size".into());
        }
        let spans = digests
            .into_iter()
            .enumerate()
            .map(|(i, digest)| {
                let offset = i as u64 * span_len;
                BlobSpan {
                    offset,
                    len: span_len.min(size - offset),
                    digest,
                }
            })
            .collect();
        Ok(SpanTable {
            spans,
            chunks: Vec::new(),
        })
    }

    pub fn spans(&self) -> &[BlobSpan] {
        &self.spans
    }

    /// The spans that overlap `range`; an error names the first byte of it
    /// that no span covers.
    pub fn covering(&self, range: Range<u64>) -> std::result::Result<&[BlobSpan], u64> {
        if range.is_empty() {
            return Ok(&[]);
        }
        let first = self.spans.partition_point(|s| s.end() <= range.start);
        let last = self.spans.partition_point(|s| s.offset < range.end);
        let found = &self.spans[first..last.max(first)];
        let mut at = range.start;
        for s in found {
            if s.offset > at {
                return Err(at);
            }
            at = s.end();
        }
        if at < range.end {
            return Err(at);
        }
        Ok(found)
    }
}

/// Why bytes of a blob could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{origin}: {why}")]
    Failed { origin: String, why: String },
    #[error("no registry is known for blob {0}")]
    NoOrigin(Digest),
    #[error("layer {digest}: bytes {offset}..{end} from {origin} do not match their span digest")]
    WrongBytes {
        digest: Digest,
        offset: u64,
        end: u64,
        origin: String,
    },
    #[error("layer {digest}: no answer from {origin} within {secs} s")]
    TimedOut {
        digest: Digest,
        origin: String,
        secs: u64,
    },
    #[error("layer {digest}: byte {offset} cannot be verified (no span digest covers it)")]
    Unverifiable { digest: Digest, offset: u64 },
    #[error("layer {0} is not whole in the store and no registry fetcher is set")]
    NoFetcher(Digest),
    #[error(transparent)]
    Store(Box<StoreError>),
}

impl FetchError {
    /// The same error again, for another reader that waited on the fetch
    /// that failed (a store error travels as its text).
    fn for_waiter(&self) -> FetchError {
        match self {
            FetchError::Failed { origin, why } => FetchError::Failed {
                origin: origin.clone(),
                why: why.clone(),
            },
            FetchError::NoOrigin(d) => FetchError::NoOrigin(*d),
            FetchError::WrongBytes {
                digest,
                offset,
                end,
                origin,
            } => FetchError::WrongBytes {
                digest: *digest,
                offset: *offset,
                end: *end,
                origin: origin.clone(),
            },
            FetchError::TimedOut {
                digest,
                origin,
                secs,
            } => FetchError::TimedOut {
                digest: *digest,
                origin: origin.clone(),
                secs: *secs,
            },
            FetchError::Unverifiable { digest, offset } => FetchError::Unverifiable {
                digest: *digest,
                offset: *offset,
            },
            FetchError::NoFetcher(d) => FetchError::NoFetcher(*d),
            FetchError::Store(e) => FetchError::Failed {
                origin: "the store".into(),
                why: e.to_string(),
            },
        }
    }
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        FetchError::Store(Box::new(e))
    }
}

/// Fetches byte ranges of blobs from where they came from. The registry
/// client implements it (auth, TLS, redirects, retries, token renewal); a
/// source that ignores ranges must still return exactly the bytes asked for.
pub trait BlobFetcher: Send + Sync {
    /// Bytes `[offset, offset + len)` of blob `digest`, from `origin`
    /// (`registry/repository`, as recorded when the partial blob was made).
    fn fetch_range(
        &self,
        origin: &str,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> std::result::Result<Vec<u8>, FetchError>;
}

type Fetchers = std::sync::RwLock<Vec<(String, Arc<dyn BlobFetcher>)>>;
static FETCHERS: OnceLock<Fetchers> = OnceLock::new();

fn fetchers() -> &'static Fetchers {
    FETCHERS.get_or_init(Default::default)
}

/// Installs the process's fetcher, for every origin.
pub fn set_fetcher(f: Arc<dyn BlobFetcher>) {
    set_fetcher_for("", f);
}

/// Installs a fetcher for the origins that start with `prefix` (the longest
/// prefix wins), replacing one installed for the same prefix.
pub fn set_fetcher_for(prefix: &str, f: Arc<dyn BlobFetcher>) {
    let mut all = fetchers().write().unwrap_or_else(|p| p.into_inner());
    all.retain(|(p, _)| p != prefix);
    all.push((prefix.to_string(), f));
}

/// The fetcher for `origin`, if one was installed.
pub fn fetcher_for(origin: &str) -> Option<Arc<dyn BlobFetcher>> {
    let all = fetchers().read().unwrap_or_else(|p| p.into_inner());
    all.iter()
        .filter(|(p, _)| origin.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, f)| Arc::clone(f))
}

/// Threads that run the fetches readers wait on: at most this many
/// requests are in the air for reads at once (the prefetch runs on its own
/// thread); more wait their turn, each reader still within its bound. A
/// registry that hangs holds a thread no longer than the fetch timeout
/// (the fetcher cuts a connection silent that long), and a queued fetch no
/// reader waits for any more is not sent.
const FETCH_THREADS: usize = 8;

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Pool {
    state: Mutex<PoolState>,
    ready: Condvar,
}

#[derive(Default)]
struct PoolState {
    jobs: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: OnceLock<Pool> = OnceLock::new();

/// Runs `job` on a fetch thread, starting one when none is idle and fewer
/// than [`FETCH_THREADS`] run.
fn submit(job: Job) {
    let pool = POOL.get_or_init(Pool::default);
    let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
    st.jobs.push_back(job);
    if st.idle < st.jobs.len() && st.threads < FETCH_THREADS {
        let spawned = std::thread::Builder::new()
            .name("fetch".into())
            .spawn(|| fetch_worker(POOL.get_or_init(Pool::default)));
        match spawned {
            Ok(_) => st.threads += 1,
            Err(e) => log::error!("cannot start a fetch thread: {e}"),
        }
    }
    if st.threads == 0 {
        // No thread to run it: run it here rather than never.
        let job = st.jobs.pop_back();
        drop(st);
        if let Some(job) = job {
            job();
        }
        return;
    }
    pool.ready.notify_one();
}

fn fetch_worker(pool: &Pool) {
    loop {
        let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        while st.jobs.is_empty() {
            st.idle += 1;
            st = pool.ready.wait(st).unwrap_or_else(|p| p.into_inner());
            st.idle -= 1;
        }
        let job = st.jobs.pop_front();
        drop(st);
        if let Some(job) = job {
            job();
        }
    }
}

/// Who asks for bytes: a read, which waits until its deadline (None: as
/// long as it takes), or the prefetch.
#[derive(Clone, Copy, Debug)]
enum Claimant {
    Read(Option<Instant>),
    Prefetch,
}

/// One fetch of a run of missing spans, which every reader of bytes in the
/// run waits on instead of fetching them again.
struct Flight {
    range: Range<u64>,
    /// A prefetch's flight: reads never join it. Its request may be 4 MiB
    /// long and its failure is its own; a read sends its own request for
    /// its own bytes at once instead.
    prefetch: bool,
    /// Until when some waiter still waits: the latest of their deadlines,
    /// None while one waits as long as it takes. A read's flight that no
    /// one waits for by the time a fetch thread gets to it is not sent, so
    /// a backlog left by an outage does not hold up the reads after it.
    wanted: Mutex<Option<Instant>>,
    outcome: Mutex<Option<std::result::Result<(), FetchError>>>,
    done: Condvar,
}

impl Flight {
    fn new(range: Range<u64>, by: Claimant) -> Arc<Flight> {
        let (prefetch, wanted) = match by {
            Claimant::Read(deadline) => (false, deadline),
            Claimant::Prefetch => (true, None),
        };
        Arc::new(Flight {
            range,
            prefetch,
            wanted: Mutex::new(wanted),
            outcome: Mutex::new(None),
            done: Condvar::new(),
        })
    }

    /// Records that `by` waits for this flight too.
    fn wanted_by(&self, by: Claimant) {
        let mut w = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        *w = match (*w, by) {
            (Some(a), Claimant::Read(Some(b))) => Some(a.max(b)),
            _ => None,
        };
    }

    /// Whether every waiter has given up on it.
    fn abandoned(&self) -> bool {
        let w = self.wanted.lock().unwrap_or_else(|p| p.into_inner());
        w.is_some_and(|d| d <= Instant::now())
    }

    /// Waits for the outcome until `deadline` (None: as long as it takes);
    /// Err(None) when the deadline passed first.
    fn wait(&self, deadline: Option<Instant>) -> std::result::Result<(), Option<FetchError>> {
        let mut out = self.outcome.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match &*out {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => return Err(Some(e.for_waiter())),
                None => {}
            }
            out = match deadline {
                None => self.done.wait(out).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(None);
                    }
                    self.done
                        .wait_timeout(out, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// The flights a caller starts and the ones it joins.
struct Claim {
    mine: Vec<Arc<Flight>>,
    joined: Vec<Arc<Flight>>,
}

impl Claim {
    fn is_empty(&self) -> bool {
        self.mine.is_empty() && self.joined.is_empty()
    }
}

/// `a` without `b`: none, one or two ranges.
fn subtract(a: &Range<u64>, b: &Range<u64>) -> Vec<Range<u64>> {
    if b.end <= a.start || b.start >= a.end {
        return vec![a.clone()];
    }
    [a.start..b.start, b.end..a.end]
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect()
}

/// What `<hex>.json` records.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PartialInfo {
    pub size: u64,
    /// `registry/repository` names the blob can be fetched from, in order.
    pub origins: Vec<String>,
}

/// Sorted, merged, non-empty ranges.
#[derive(Clone, Debug, Default)]
struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    fn add(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for &(a, b) in &self.0 {
            if b < s || a > e {
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        out.push((s, e));
        out.sort_unstable();
        self.0 = out;
    }

    fn contains(&self, start: u64, end: u64) -> bool {
        start >= end || self.0.iter().any(|&(a, b)| a <= start && end <= b)
    }

    fn total(&self) -> u64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }
}

/// A blob the store holds in part, open for reading and filling.
pub struct PartialBlob {
    store: Store,
    digest: Digest,
    info: PartialInfo,
    file: File,
    state: Mutex<State>,
    /// Fetches in progress; a range is local (in `state`) before its flight
    /// leaves this list.
    flights: Mutex<Vec<Arc<Flight>>>,
    /// Held by `complete`, so that two completions do not race the rename.
    completing: Mutex<()>,
}

struct State {
    ranges: RangeSet,
    /// The `.ranges` log, shared with whoever else has the blob open (other
    /// processes, other openers in this one), which append to it too.
    log: File,
    /// How far the log is read.
    log_seen: u64,
    /// Renamed into the blobs: nothing more to record.
    whole: bool,
}

impl State {
    /// Takes in the records appended to the log since it was last read: a
    /// range another opener fetched is not fetched again.
    fn read_log(&mut self, size: u64) -> io::Result<()> {
        let len = self.log.metadata()?.len();
        if len <= self.log_seen {
            return Ok(());
        }
        let mut bytes = vec![0u8; (len - self.log_seen) as usize];
        self.log.read_exact_at(&mut bytes, self.log_seen)?;
        self.log_seen += add_records(&bytes, size, &mut self.ranges) as u64;
        Ok(())
    }
}

impl std::fmt::Debug for PartialBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PartialBlob({})", self.digest)
    }
}

impl Store {
    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.own_dir().join("partial")
    }

    fn partial_path(&self, digest: &Digest, ext: &str) -> PathBuf {
        self.partial_dir().join(format!("{}{ext}", digest.hex()))
    }

    /// Bytes of blob `digest` on disk: all of it when whole, the verified
    /// ranges when partial, else none.
    pub fn local_bytes(&self, digest: &Digest) -> u64 {
        if let Ok(size) = self.blob_size(digest) {
            return size;
        }
        self.partial_status(digest)
            .ok()
            .flatten()
            .map_or(0, |(_, n)| n)
    }

    /// Whether the store holds blob `digest` in part (a record left beside
    /// a blob that is whole does not count).
    pub fn has_partial(&self, digest: &Digest) -> bool {
        self.partial_path(digest, ".json").is_file() && !self.has_blob(digest)
    }

    /// Removes the partial records of blobs that are whole, which a crash
    /// between a completion's rename and its record removal leaves (or a
    /// pull that stored the blob meanwhile). Returns the blobs healed.
    pub fn heal_partials(&self) -> Result<Vec<Digest>> {
        let dir = self.partial_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        let mut seen = std::collections::BTreeSet::new();
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let hex = name.split('.').next().unwrap_or(name);
            if let Ok(d) = Digest::from_hex(hex) {
                seen.insert(d);
            }
        }
        let mut healed = Vec::new();
        for d in seen {
            if self.has_blob(&d) {
                self.remove_partial(&d)?;
                healed.push(d);
            }
        }
        Ok(healed)
    }

    /// Every partially present blob.
    pub fn list_partials(&self) -> Result<Vec<Digest>> {
        let dir = self.partial_dir();
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(StoreError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            if let Some(d) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| Digest::from_hex(n).ok())
                .filter(|d| !self.has_blob(d))
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The record of partial blob `digest`, and how many of its bytes are local.
    pub fn partial_status(&self, digest: &Digest) -> Result<Option<(PartialInfo, u64)>> {
        let Some(info) = self.partial_info(digest)? else {
            return Ok(None);
        };
        let ranges = read_ranges(&self.partial_path(digest, ".ranges"), info.size)?;
        Ok(Some((info, ranges.total())))
    }

    fn partial_info(&self, digest: &Digest) -> Result<Option<PartialInfo>> {
        let path = self.partial_path(digest, ".json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                why: e.to_string(),
            })
    }

    /// Records that blob `digest` of `size` bytes can be fetched from
    /// `origin`, creating its partial blob unless the store has it whole.
    /// Returns false when the blob is whole already.
    pub fn add_partial(&self, digest: &Digest, size: u64, origin: &str) -> Result<bool> {
        if self.has_blob(digest) {
            return Ok(false);
        }
        super::create_private_dir(&self.partial_dir())?;
        let mut info = self.partial_info(digest)?.unwrap_or(PartialInfo {
            size,
            origins: Vec::new(),
        });
        if info.size != size {
            return Err(StoreError::SizeMismatch {
                digest: *digest,
                expected: info.size,
                actual: size,
            });
        }
        if info.origins.iter().any(|o| o == origin) {
            return Ok(true);
        }
        info.origins.push(origin.to_string());
        let data = self.partial_path(digest, "");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&data)
            .map_err(|e| StoreError::io(&data, e))?;
        f.set_len(size).map_err(|e| StoreError::io(&data, e))?;
        let json = serde_json::to_vec(&info).map_err(|e| StoreError::Corrupt {
            path: data.clone(),
            why: e.to_string(),
        })?;
        super::blobs::write_atomic(&self.tmp_dir(), &self.partial_path(digest, ".json"), &json)?;
        Ok(true)
    }

    /// Opens partial blob `digest`; None when the store has no such record,
    /// or the blob is whole (a record left beside it is removed).
    pub fn open_partial(&self, digest: &Digest) -> Result<Option<Arc<PartialBlob>>> {
        if self.has_blob(digest) {
            self.remove_partial(digest)?;
            return Ok(None);
        }
        let Some(info) = self.partial_info(digest)? else {
            return Ok(None);
        };
        let data = self.partial_path(digest, "");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data)
            .map_err(|e| StoreError::io(&data, e))?;
        let log_path = self.partial_path(digest, ".ranges");
        let log = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| StoreError::io(&log_path, e))?;
        let mut st = State {
            ranges: RangeSet::default(),
            log,
            log_seen: 0,
            whole: false,
        };
        st.read_log(info.size)
            .map_err(|e| StoreError::io(&log_path, e))?;
        Ok(Some(Arc::new(PartialBlob {
            store: self.clone(),
            digest: *digest,
            info,
            file,
            state: Mutex::new(st),
            flights: Mutex::new(Vec::new()),
            completing: Mutex::new(()),
        })))
    }

    /// Removes partial blob `digest` (its data, ranges and record).
    pub fn remove_partial(&self, digest: &Digest) -> Result<()> {
        for ext in [".json", ".ranges", ""] {
            let path = self.partial_path(digest, ext);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(())
    }
}

/// The ranges a log records, torn or damaged records skipped.
fn read_ranges(path: &std::path::Path, size: u64) -> Result<RangeSet> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RangeSet::default()),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let mut set = RangeSet::default();
    add_records(&bytes, size, &mut set);
    Ok(set)
}

/// Adds the ranges of the records in `bytes` to `set`; returns the length
/// up to the end of the last good record. A record a crash tore is skipped
/// byte by byte, so the records appended after it still count (a 64-bit
/// check will not match by chance).
fn add_records(bytes: &[u8], size: u64, set: &mut RangeSet) -> usize {
    let (mut at, mut good) = (0, 0);
    while let Some(rec) = bytes.get(at..at + RECORD_LEN) {
        let u = |i: usize| u64::from_le_bytes(rec[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (off, len, check) = (u(0), u(1), u(2));
        let end = off.saturating_add(len);
        if check == record_check(off, len) && end <= size {
            set.add(off, end);
            at += RECORD_LEN;
            good = at;
        } else {
            at += 1;
        }
    }
    good
}

fn record_check(off: u64, len: u64) -> u64 {
    (off.rotate_left(17) ^ len.rotate_left(41) ^ RECORD_CHECK).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl PartialBlob {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn size(&self) -> u64 {
        self.info.size
    }

    pub fn origins(&self) -> &[String] {
        &self.info.origins
    }

    /// The data file: verified bytes where recorded, zeros elsewhere.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Bytes local and verified.
    pub fn local_bytes(&self) -> u64 {
        self.lock().ranges.total()
    }

    pub fn is_local(&self, range: Range<u64>) -> bool {
        self.lock().ranges.contains(range.start, range.end)
    }

    /// Whether the blob is whole in the store: completed here, or by another
    /// process (this one's data file may then be another inode: it keeps
    /// serving what it verified, nothing more is prefetched into it).
    pub fn is_whole(&self) -> bool {
        self.lock().whole || self.store.has_blob(&self.digest)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `data`, the blob's bytes from `offset` on, after checking each
    /// span of `spans` it covers whole; bytes of spans it covers only in part
    /// are dropped. One wrong span and nothing of `data` is stored.
    /// Returns the range stored.
    pub fn store_verified(
        &self,
        offset: u64,
        data: &[u8],
        spans: &SpanTable,
        origin: &str,
    ) -> std::result::Result<Range<u64>, FetchError> {
        let end = offset.saturating_add(data.len() as u64).min(self.info.size);
        let whole: Vec<(usize, &BlobSpan)> = spans
            .spans()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.offset >= offset && s.end() <= end)
            .collect();
        let (Some((_, first)), Some((_, last))) = (whole.first(), whole.last()) else {
            return Ok(offset..offset);
        };
        for &(i, s) in &whole {
            let bytes = &data[(s.offset - offset) as usize..(s.end() - offset) as usize];
            if !spans.verifies(i, bytes) {
                log::error!(
                    "layer {}: bytes {}..{} from {origin} do not match their digest; nothing stored",
                    self.digest,
                    s.offset,
                    s.end()
                );
                return Err(FetchError::WrongBytes {
                    digest: self.digest,
                    offset: s.offset,
                    end: s.end(),
                    origin: origin.to_string(),
                });
            }
        }
        let (lo, hi) = (first.offset, last.end());
        let path = || self.store.partial_path(&self.digest, "");
        self.file
            .write_all_at(&data[(lo - offset) as usize..(hi - offset) as usize], lo)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| StoreError::io(&path(), e))?;
        let mut st = self.lock();
        if st.whole {
            return Ok(lo..hi);
        }
        let mut rec = [0u8; RECORD_LEN];
        rec[..8].copy_from_slice(&lo.to_le_bytes());
        rec[8..16].copy_from_slice(&(hi - lo).to_le_bytes());
        rec[16..].copy_from_slice(&record_check(lo, hi - lo).to_le_bytes());
        let log_path = self.store.partial_path(&self.digest, ".ranges");
        st.log
            .write_all(&rec)
            .and_then(|()| st.log.sync_data())
            .map_err(|e| StoreError::io(&log_path, e))?;
        st.ranges.add(lo, hi);
        Ok(lo..hi)
    }

    /// The runs of spans overlapping `range` that are not local yet.
    pub fn missing(
        &self,
        range: Range<u64>,
        spans: &SpanTable,
    ) -> std::result::Result<Vec<Range<u64>>, FetchError> {
        let range = range.start..range.end.min(self.info.size);
        let covering = spans
            .covering(range)
            .map_err(|offset| FetchError::Unverifiable {
                digest: self.digest,
                offset,
            })?;
        let runs = |ranges: &RangeSet| {
            let mut runs: Vec<Range<u64>> = Vec::new();
            for s in covering {
                if ranges.contains(s.offset, s.end()) {
                    continue;
                }
                match runs.last_mut() {
                    Some(r) if r.end == s.offset => r.end = s.end(),
                    _ => runs.push(s.offset..s.end()),
                }
            }
            runs
        };
        let mut st = self.lock();
        let missing = runs(&st.ranges);
        if missing.is_empty() {
            return Ok(missing);
        }
        // Another opener may have fetched them meanwhile.
        if let Err(e) = st.read_log(self.info.size) {
            log::debug!("layer {}: reading its ranges log: {e}", self.digest);
        }
        Ok(runs(&st.ranges))
    }

    /// Makes `range` local: fetches the spans over it that are missing,
    /// verifies and stores them. Spans another reader is fetching already
    /// are waited for, not fetched again; spans the prefetch is fetching are
    /// fetched again, so a read never waits behind a prefetch request. Waits
    /// at most `timeout`; a fetch still running then goes on in the
    /// background and keeps what it verifies.
    pub fn ensure(
        self: &Arc<Self>,
        range: Range<u64>,
        spans: &SpanTable,
        timeout: Duration,
    ) -> std::result::Result<(), FetchError> {
        // A timeout too long to add to now (a huge setting) is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        // A fetch that stores less than asked (a short answer) leaves spans
        // missing: ask again, a few times. So does another reader's fetch
        // that failed: it may have been sent before the registry hung and
        // came back, and a request of this reader's own may well be served.
        let mut theirs = None;
        for _ in 0..3 {
            let claim = self.claim(range.clone(), spans, Claimant::Read(deadline))?;
            if claim.is_empty() {
                return Ok(());
            }
            if !claim.mine.is_empty() {
                let (me, spans, mine) = (Arc::clone(self), spans.clone(), claim.mine.clone());
                submit(Box::new(move || {
                    for f in &mine {
                        if !me.drop_if_abandoned(f) {
                            me.fly(f, &spans);
                        }
                    }
                }));
            }
            for (i, f) in claim.mine.iter().chain(&claim.joined).enumerate() {
                match f.wait(deadline) {
                    Ok(()) => {}
                    // Dropped unsent (`drop_if_abandoned`): this reader's
                    // bound passed before a fetch thread was free.
                    Err(Some(FetchError::TimedOut { .. })) | Err(None) => {
                        return Err(self.timed_out(timeout));
                    }
                    Err(Some(e)) if i < claim.mine.len() => return Err(e),
                    Err(Some(e)) => theirs = Some(e),
                }
            }
        }
        match self.missing(range, spans)?.first() {
            None => Ok(()),
            Some(r) => Err(theirs.unwrap_or_else(|| self.short(r))),
        }
    }

    /// Fetches `runs` (as [`PartialBlob::missing`] gives them) on this
    /// thread, waiting as long as it takes for the parts readers are
    /// fetching already: the prefetch, behind the reads. A read's fetch
    /// that fails does not fail it: it asks for those bytes itself.
    pub fn fetch_runs(
        &self,
        runs: &[Range<u64>],
        spans: &SpanTable,
    ) -> std::result::Result<(), FetchError> {
        for run in runs {
            for _ in 0..3 {
                let claim = self.claim(run.clone(), spans, Claimant::Prefetch)?;
                if claim.is_empty() {
                    break;
                }
                for f in &claim.mine {
                    self.fly(f, spans);
                }
                for f in &claim.mine {
                    f.wait(None)
                        .map_err(|e| e.unwrap_or_else(|| self.short(&f.range)))?;
                }
                for f in &claim.joined {
                    let _ = f.wait(None);
                }
            }
            if let Some(r) = self.missing(run.clone(), spans)?.first() {
                return Err(self.short(r));
            }
        }
        Ok(())
    }

    /// The flights that make `range` local for `by`: the missing runs not
    /// in flight yet become flights of the caller's (listed before this
    /// returns), and the flights under way over the rest are joined, except
    /// that a read joins no prefetch flight.
    fn claim(
        &self,
        range: Range<u64>,
        spans: &SpanTable,
        by: Claimant,
    ) -> std::result::Result<Claim, FetchError> {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        // Under the flights lock: a flight gone from the list has stored
        // what it fetched, so what is missing now is not in the air.
        let runs = self.missing(range, spans)?;
        let mut claim = Claim {
            mine: Vec::new(),
            joined: Vec::new(),
        };
        for run in runs {
            let mut parts = vec![run];
            for f in flights.iter() {
                let r = &f.range;
                let joinable = !(f.prefetch && matches!(by, Claimant::Read(_)));
                if !joinable || !parts.iter().any(|p| p.start < r.end && r.start < p.end) {
                    continue;
                }
                if !claim.joined.iter().any(|j| Arc::ptr_eq(j, f)) {
                    f.wanted_by(by);
                    claim.joined.push(Arc::clone(f));
                }
                parts = parts.iter().flat_map(|p| subtract(p, r)).collect();
            }
            for part in parts {
                let f = Flight::new(part, by);
                flights.push(Arc::clone(&f));
                claim.mine.push(f);
            }
        }
        Ok(claim)
    }

    /// Runs flight `f`: fetches and stores its range, takes it off the
    /// list, then tells its waiters.
    fn fly(&self, f: &Arc<Flight>, spans: &SpanTable) {
        let got = self.fetch_run(&f.range, spans);
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|g| !Arc::ptr_eq(g, f));
        *f.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(got);
        f.done.notify_all();
    }

    /// Takes flight `f` off the list unsent when no one waits for it any
    /// more (see `Flight::wanted`); true when it did.
    fn drop_if_abandoned(&self, f: &Arc<Flight>) -> bool {
        // Under the flights lock, which a reader joining it takes too.
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if !f.abandoned() {
            return false;
        }
        flights.retain(|g| !Arc::ptr_eq(g, f));
        drop(flights);
        log::debug!(
            "layer {}: bytes {}..{} not fetched: no reader waits for them any more",
            self.digest,
            f.range.start,
            f.range.end
        );
        *f.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(FetchError::TimedOut {
            digest: self.digest,
            origin: self.origins().first().cloned().unwrap_or_default(),
            secs: 0,
        }));
        f.done.notify_all();
        true
    }

    fn timed_out(&self, timeout: Duration) -> FetchError {
        let origin = self.origins().first().cloned().unwrap_or_default();
        log::error!(
            "layer {}: no answer from {origin} within {} s",
            self.digest,
            timeout.as_secs()
        );
        FetchError::TimedOut {
            digest: self.digest,
            origin,
            secs: timeout.as_secs(),
        }
    }

    fn short(&self, r: &Range<u64>) -> FetchError {
        FetchError::Failed {
            origin: self.origins().first().cloned().unwrap_or_default(),
            why: format!(
                "layer {}: bytes {}..{} were asked for but not sent",
                self.digest, r.start, r.end
            ),
        }
    }

    /// Fetches one run from the first origin that answers.
    fn fetch_run(
        &self,
        run: &Range<u64>,
        spans: &SpanTable,
    ) -> std::result::Result<(), FetchError> {
        let mut last = FetchError::NoOrigin(self.digest);
        for origin in self.origins() {
            let Some(fetcher) = fetcher_for(origin) else {
                last = FetchError::NoFetcher(self.digest);
                continue;
            };
            log::debug!(
                "layer {}: fetching {}..{} from {origin}",
                self.digest,
                run.start,
                run.end
            );
            match fetcher.fetch_range(origin, &self.digest, run.start, run.end - run.start) {
                Ok(data) => {
                    self.store_verified(run.start, &data, spans, origin)?;
                    return Ok(());
                }
                Err(e) => {
                    log::error!("layer {}: fetching from {origin}: {e}", self.digest);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The local spans whose bytes no longer match their digest (damage on
    /// disk), for fsck; spans not local are not read.
    pub fn check(&self, spans: &SpanTable) -> std::result::Result<Vec<BlobSpan>, FetchError> {
        let local = self.lock().ranges.clone();
        let data = self.store.partial_path(&self.digest, "");
        let mut bad = Vec::new();
        let mut buf = Vec::new();
        for (i, s) in spans.spans().iter().enumerate() {
            if !local.contains(s.offset, s.end()) {
                continue;
            }
            buf.resize(s.len as usize, 0);
            self.file
                .read_exact_at(&mut buf, s.offset)
                .map_err(|e| StoreError::io(&data, e))?;
            if !spans.verifies(i, &buf) {
                bad.push(*s);
            }
        }
        Ok(bad)
    }

    /// When every byte is local: checks the whole blob against its digest and
    /// moves it into the blobs. Returns whether the blob is whole now. A blob
    /// whose bytes do not hash to its digest is removed (its spans lied).
    pub fn complete(&self) -> std::result::Result<bool, FetchError> {
        let _one = self.completing.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut st = self.lock();
            // Another process (a pull, another mount) may have completed it.
            if st.whole || self.store.has_blob(&self.digest) {
                st.whole = true;
                return Ok(true);
            }
            if !st.ranges.contains(0, self.info.size) {
                return Ok(false);
            }
        }
        // Hashed without the state lock, which every read takes: with every
        // span local nothing changes the data any more (a late fetch of a
        // span writes the very bytes its digest names).
        let data = self.store.partial_path(&self.digest, "");
        let (actual, len) = self.hash_data().map_err(|e| StoreError::io(&data, e))?;
        if actual != self.digest || len != self.info.size {
            self.store.remove_partial(&self.digest)?;
            return Err(StoreError::DigestMismatch {
                expected: self.digest,
                actual,
            }
            .into());
        }
        self.file.sync_all().map_err(|e| StoreError::io(&data, e))?;
        let dest = self.store.blob_path(&self.digest);
        let mut st = self.lock();
        fs::rename(&data, &dest).map_err(|e| StoreError::io(&dest, e))?;
        st.whole = true;
        drop(st);
        if let Some(dir) = dest.parent() {
            super::blobs::sync_dir(dir)?;
        }
        // A crash here leaves the records of a blob that is whole: open,
        // gc and fsck remove them (`Store::heal_partials`).
        for ext in [".json", ".ranges"] {
            let _ = fs::remove_file(self.store.partial_path(&self.digest, ext));
        }
        Ok(true)
    }

    /// The sha256 of the data file and its length.
    fn hash_data(&self) -> io::Result<(Digest, u64)> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut pos = 0u64;
        loop {
            #[cfg(test)]
            tests::while_hashing();
            let n = self.file.read_at(&mut buf, pos)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
        Ok((Digest::from_bytes(h.finalize().into()), pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    thread_local! {
        static WHILE_HASHING: RefCell<Option<Box<dyn Fn()>>> = RefCell::new(None);
    }

    /// Called by `complete` as it hashes the data, on its thread.
    pub(super) fn while_hashing() {
        WHILE_HASHING.with(|h| {
            if let Some(f) = h.borrow().as_ref() {
                f()
            }
        });
    }

    /// A registry that answers once `release` is set, counting requests.
    struct HeldFetcher {
        blob: Vec<u8>,
        calls: AtomicUsize,
        release: AtomicBool,
    }

    impl BlobFetcher for HeldFetcher {
        fn fetch_range(
            &self,
            _origin: &str,
            _digest: &Digest,
            offset: u64,
            len: u64,
        ) -> std::result::Result<Vec<u8>, FetchError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            for _ in 0..3000 {
                if self.release.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(self.blob[offset as usize..(offset + len) as usize].to_vec())
        }
    }

    fn table(blob: &[u8], span: u64) -> SpanTable {
        let digests = blob.chunks(span as usize).map(Digest::of).collect();
        SpanTable::fixed(blob.len() as u64, span, digests).unwrap()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    /// A blob of `len` bytes (from `mul`), in 1000-byte spans, that `store`
    /// holds in part with nothing local, fetched from `origin` through the
    /// fetcher `make` builds from its bytes: the bytes, spans, fetcher and
    /// the blob opened.
    fn lazy_blob<F: BlobFetcher + 'static>(
        store: &Store,
        len: u32,
        mul: u32,
        origin: &str,
        make: impl FnOnce(Vec<u8>) -> F,
    ) -> (Vec<u8>, SpanTable, Arc<F>, Arc<PartialBlob>) {
        let blob: Vec<u8> = (0..len).map(|i| i.wrapping_mul(mul) as u8).collect();
        let digest = Digest::of(&blob);
        let spans = table(&blob, 1000);
        let fetcher = Arc::new(make(blob.clone()));
        set_fetcher_for(origin, fetcher.clone());
        store.add_partial(&digest, len.into(), origin).unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        (blob, spans, fetcher, p)
    }

    /// A [`HeldFetcher`], released or not yet.
    fn held(blob: Vec<u8>, released: bool) -> HeldFetcher {
        HeldFetcher {
            blob,
            calls: AtomicUsize::new(0),
            release: AtomicBool::new(released),
        }
    }

    #[test]
    fn verified_ranges_survive_a_reopen_and_a_torn_record() {
        let (_d, store) = store();
        let blob: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let digest = Digest::of(&blob);
        let spans = table(&blob, 1000);
        assert!(
            store
                .add_partial(&digest, blob.len() as u64, "r/x")
                .unwrap()
        );
        let p = store.open_partial(&digest).unwrap().unwrap();
        // 500..2600 covers span 1 whole only: only it is stored.
        let got = p
            .store_verified(500, &blob[500..2600], &spans, "r/x")
            .unwrap();
        assert_eq!(got, 1000..2000);
        assert_eq!(p.local_bytes(), 1000);
        drop(p);
        // A record torn by a crash in the middle of its write.
        let log = store.partial_path(&digest, ".ranges");
        let mut f = OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        assert!(p.is_local(1000..2000));
        assert!(!p.is_local(0..1000));
        let mut buf = vec![0u8; 1000];
        p.file().read_exact_at(&mut buf, 1000).unwrap();
        assert_eq!(buf, &blob[1000..2000]);
        assert_eq!(
            p.missing(0..3500, &spans).unwrap(),
            vec![0..1000, 2000..4000]
        );
        // What is fetched after the torn record is kept too.
        p.store_verified(3000, &blob[3000..4000], &spans, "r/x")
            .unwrap();
        drop(p);
        let p = store.open_partial(&digest).unwrap().unwrap();
        assert!(p.is_local(1000..2000) && p.is_local(3000..4000));
        assert_eq!(store.partial_status(&digest).unwrap().unwrap().1, 2000);
    }

    #[test]
    fn what_one_opener_of_a_partial_blob_fetched_another_does_not_fetch_again() {
        let (_d, store) = store();
        let (blob, spans, fetcher, a) =
            lazy_blob(&store, 6000, 11, "held.test/two-openers", |b| held(b, true));
        // Two openers, as two mounts of images sharing the layer have.
        let b = store.open_partial(a.digest()).unwrap().unwrap();
        a.ensure(1000..2500, &spans, Duration::from_secs(120))
            .unwrap();
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
        b.ensure(1200..2200, &spans, Duration::from_secs(120))
            .unwrap();
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
        let mut buf = vec![0u8; 2000];
        b.file().read_exact_at(&mut buf, 1000).unwrap();
        assert_eq!(buf, &blob[1000..3000]);
        // What b lacks still comes: the runs either side, once each.
        b.ensure(0..6000, &spans, Duration::from_secs(120)).unwrap();
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 3);
        assert!(b.complete().unwrap());
        assert!(a.is_whole());
    }

    #[test]
    fn fetch_timeout_settings_are_read_without_panicking() {
        let cases = [
            (None, DEFAULT_FETCH_TIMEOUT),
            (Some("2"), Duration::from_secs(2)),
            (Some(" 0.5 "), Duration::from_millis(500)),
            (Some("0"), DEFAULT_FETCH_TIMEOUT),
            (Some("-3"), DEFAULT_FETCH_TIMEOUT),
            (Some("soon"), DEFAULT_FETCH_TIMEOUT),
            (Some("inf"), DEFAULT_FETCH_TIMEOUT),
            (Some("1e30"), Duration::MAX),
        ];
        for (v, want) in cases {
            assert_eq!(parse_fetch_timeout(v), want, "{v:?}");
        }
    }

    #[test]
    fn wrong_bytes_store_nothing() {
        let (_d, store) = store();
        let blob = vec![5u8; 4000];
        let digest = Digest::of(&blob);
        let spans = table(&blob, 1000);
        store.add_partial(&digest, 4000, "r/x").unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        let mut bad = blob.clone();
        bad[2500] = 6;
        let e = p.store_verified(0, &bad, &spans, "r/x").unwrap_err();
        assert!(
            matches!(e, FetchError::WrongBytes { offset: 2000, .. }),
            "{e}"
        );
        assert_eq!(p.local_bytes(), 0);
        assert_eq!(store.partial_status(&digest).unwrap().unwrap().1, 0);
    }

    #[test]
    fn a_whole_partial_blob_becomes_an_ordinary_blob() {
        let (_d, store) = store();
        let blob: Vec<u8> = (0..3333u32).map(|i| (i % 251) as u8).collect();
        let digest = Digest::of(&blob);
        let spans = table(&blob, 1000);
        store
            .add_partial(&digest, blob.len() as u64, "r/x")
            .unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        p.store_verified(0, &blob[..2000], &spans, "r/x").unwrap();
        assert!(!p.complete().unwrap());
        assert!(!store.has_blob(&digest));
        p.store_verified(2000, &blob[2000..], &spans, "r/x")
            .unwrap();
        assert!(p.complete().unwrap());
        assert!(store.has_blob(&digest));
        assert!(!store.has_partial(&digest));
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), blob);
        assert!(store.list_partials().unwrap().is_empty());
    }

    #[test]
    fn span_tables_find_the_spans_over_a_range_and_their_gaps() {
        let d = Digest::of(b"");
        let s = |offset, len| BlobSpan {
            offset,
            len,
            digest: d,
        };
        let t = SpanTable::new(vec![s(100, 50), s(0, 100), s(200, 10)]).unwrap();
        assert_eq!(t.covering(10..120).unwrap(), &[s(0, 100), s(100, 50)]);
        assert_eq!(t.covering(140..205), Err(150));
        assert_eq!(t.covering(200..210).unwrap(), &[s(200, 10)]);
        assert!(SpanTable::new(vec![s(0, 10), s(5, 10)]).is_err());
    }

    #[test]
    fn chunk_spans_are_checked_by_the_digest_of_what_they_inflate_to() {
        use std::io::Write as _;
        let gz = |data: &[u8], tail: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.write_all(tail).unwrap();
            e.finish().unwrap()
        };
        // Two members: a chunk followed by bytes that are not part of it (as
        // tar padding and the next header are in eStargz), then a chunk.
        let (c1, c2) = (vec![7u8; 5000], b"second chunk".to_vec());
        let (m1, m2) = (gz(&c1, &[0u8; 700]), gz(&c2, b""));
        let blob = [m1.clone(), m2.clone()].concat();
        let span = |offset: usize, len: usize, data: &[u8]| BlobSpan {
            offset: offset as u64,
            len: len as u64,
            digest: Digest::of(data),
        };
        let spans = SpanTable::chunks(vec![
            (span(m1.len(), m2.len(), &c2), Some(c2.len() as u64)),
            (span(0, m1.len(), &c1), Some(c1.len() as u64)),
        ])
        .unwrap();
        let (_d, store) = store();
        let digest = Digest::of(&blob);
        store
            .add_partial(&digest, blob.len() as u64, "r/x")
            .unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();

        // A wrong byte in the first member: refused, nothing stored.
        let mut bad = blob.clone();
        bad[m1.len() / 2] ^= 1;
        assert!(matches!(
            p.store_verified(0, &bad, &spans, "r/x"),
            Err(FetchError::WrongBytes { .. })
        ));
        assert_eq!(p.local_bytes(), 0);

        assert_eq!(
            p.store_verified(0, &blob, &spans, "r/x").unwrap(),
            0..blob.len() as u64
        );
        assert!(p.check(&spans).unwrap().is_empty());
        assert!(p.complete().unwrap());
    }

    #[test]
    fn readers_of_one_missing_span_share_one_fetch_and_each_keeps_its_bound() {
        let (_d, store) = store();
        let (blob, spans, fetcher, p) =
            lazy_blob(&store, 8000, 13, "held.test/one-fetch", |b| held(b, false));
        // Four readers of overlapping ranges while the registry does not
        // answer: each gives up at its own bound, and one request was sent.
        // The widest reader asks first, so the others find all they need
        // in flight (a narrower first one would leave them a part to ask for).
        let first = {
            let (p, spans) = (Arc::clone(&p), spans.clone());
            std::thread::spawn(move || p.ensure(0..2000, &spans, Duration::from_millis(300)))
        };
        while fetcher.calls.load(Ordering::SeqCst) == 0 && !first.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let waits: Vec<_> = [0..1500, 500..2000, 1000..1800]
            .into_iter()
            .map(|r| {
                let (p, spans) = (Arc::clone(&p), spans.clone());
                std::thread::spawn(move || p.ensure(r, &spans, Duration::from_millis(300)))
            })
            .collect();
        for w in std::iter::once(first).chain(waits) {
            let e = w.join().unwrap().unwrap_err();
            assert!(matches!(e, FetchError::TimedOut { .. }), "{e}");
        }
        // The registry answers: the fetch under way lands, and nothing is
        // asked for again.
        fetcher.release.store(true, Ordering::SeqCst);
        p.ensure(0..2000, &spans, Duration::from_secs(60)).unwrap();
        assert!(p.is_local(0..2000));
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
        let mut buf = vec![0u8; 2000];
        p.file().read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, &blob[..2000]);
        // The prefetch joins reads too: it fetches only what is left.
        let runs = p.missing(0..8000, &spans).unwrap();
        p.fetch_runs(&runs, &spans).unwrap();
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 2);
        assert!(p.complete().unwrap());
    }

    /// A registry that holds the requests `hangs` picks (by their number,
    /// from 0, and length) until `release` is set, then breaks them; it
    /// answers the others at once.
    struct Hangs {
        blob: Vec<u8>,
        hangs: fn(usize, u64) -> bool,
        calls: AtomicUsize,
        release: AtomicBool,
    }

    impl Hangs {
        fn new(blob: Vec<u8>, hangs: fn(usize, u64) -> bool) -> Hangs {
            Hangs {
                blob,
                hangs,
                calls: AtomicUsize::new(0),
                release: AtomicBool::new(false),
            }
        }
    }

    impl BlobFetcher for Hangs {
        fn fetch_range(
            &self,
            origin: &str,
            _digest: &Digest,
            offset: u64,
            len: u64,
        ) -> std::result::Result<Vec<u8>, FetchError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if !(self.hangs)(n, len) {
                return Ok(self.blob[offset as usize..(offset + len) as usize].to_vec());
            }
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(FetchError::Failed {
                origin: origin.to_string(),
                why: "the connection broke".into(),
            })
        }
    }

    #[test]
    fn a_read_never_waits_behind_the_prefetch_nor_shares_its_failure() {
        let (_d, store) = store();
        let (blob, spans, fetcher, p) =
            lazy_blob(&store, 8000, 31, "held.test/prefetch-first", |blob| {
                // The prefetch's long requests hang; reads are answered.
                Hangs::new(blob, |_, len| len >= 4000)
            });
        // The prefetch asks for the whole blob, and the registry holds it.
        let prefetch = {
            let (p, spans) = (Arc::clone(&p), spans.clone());
            std::thread::spawn(move || {
                let runs = p.missing(0..8000, &spans)?;
                p.fetch_runs(&runs, &spans)
            })
        };
        while fetcher.calls.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // A read of bytes in the prefetch's request, willing to wait long.
        let read = {
            let (p, spans) = (Arc::clone(&p), spans.clone());
            std::thread::spawn(move || p.ensure(2100..2600, &spans, Duration::from_secs(120)))
        };
        // It is served while the prefetch is still held; a read that had
        // joined the prefetch would still wait (then share its failure).
        for _ in 0..2000 {
            if read.is_finished() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        fetcher.release.store(true, Ordering::SeqCst);
        read.join().unwrap().unwrap();
        assert!(p.is_local(2000..3000));
        let mut buf = vec![0u8; 1000];
        p.file().read_exact_at(&mut buf, 2000).unwrap();
        assert_eq!(buf, &blob[2000..3000]);
        // The prefetch's request failed, and only the prefetch with it.
        assert!(prefetch.join().unwrap().is_err());
        // A read after it fetches afresh.
        p.ensure(6000..6500, &spans, Duration::from_secs(120))
            .unwrap();
        assert!(p.is_local(6000..7000));
    }

    #[test]
    fn a_reader_whose_shared_fetch_fails_asks_for_its_bytes_itself() {
        let (_d, store) = store();
        let (_, spans, fetcher, p) = lazy_blob(&store, 4000, 7, "held.test/first-hung", |blob| {
            Hangs::new(blob, |n, _| n == 0)
        });
        // A read sent while the registry hung gives up at its bound.
        let e = p
            .ensure(0..1000, &spans, Duration::from_millis(50))
            .unwrap_err();
        assert!(matches!(e, FetchError::TimedOut { .. }), "{e}");
        // The registry is back; a later reader finds that request still
        // under way and waits for it; when it breaks, the reader asks anew.
        let later = {
            let (p, spans) = (Arc::clone(&p), spans.clone());
            std::thread::spawn(move || p.ensure(0..1000, &spans, Duration::from_secs(120)))
        };
        let joined = || {
            let flights = p.flights.lock().unwrap();
            let wanted = *flights[0].wanted.lock().unwrap();
            wanted.is_some_and(|d| d > Instant::now() + Duration::from_secs(60))
        };
        while !joined() {
            std::thread::sleep(Duration::from_millis(1));
        }
        fetcher.release.store(true, Ordering::SeqCst);
        later.join().unwrap().unwrap();
        assert!(p.is_local(0..1000));
    }

    #[test]
    fn a_fetch_no_reader_waits_for_any_more_is_not_sent() {
        let (_d, store) = store();
        let (_, spans, fetcher, p) =
            lazy_blob(&store, 4000, 3, "held.test/abandoned", |b| held(b, true));
        // A reader whose bound has passed by the time a fetch thread is
        // free (here: at once) leaves nothing for the thread to send.
        let e = p.ensure(0..1000, &spans, Duration::ZERO).unwrap_err();
        assert!(matches!(e, FetchError::TimedOut { .. }), "{e}");
        while !p.flights.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 0);
        assert!(!p.is_local(0..1000));
        // The next reader sends its own request.
        p.ensure(0..1000, &spans, Duration::from_secs(120)).unwrap();
        assert_eq!(fetcher.calls.load(Ordering::SeqCst), 1);
        assert!(p.is_local(0..1000));
    }

    /// A partial blob of 3000 bytes (from `seed`) with every byte local.
    fn all_local(store: &Store, seed: u32) -> (Vec<u8>, Digest, SpanTable, Arc<PartialBlob>) {
        let blob: Vec<u8> = (0..3000u32).map(|i| (i % seed) as u8).collect();
        let digest = Digest::of(&blob);
        let spans = table(&blob, 1000);
        store.add_partial(&digest, 3000, "r/x").unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        p.store_verified(0, &blob, &spans, "r/x").unwrap();
        (blob, digest, spans, p)
    }

    #[test]
    fn complete_hashes_without_locking_out_readers() {
        let (_d, store) = store();
        let (blob, digest, _, p) = all_local(&store, 249);
        let free = Arc::new(AtomicUsize::new(0));
        let (p2, free2) = (Arc::clone(&p), Arc::clone(&free));
        WHILE_HASHING.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                if p2.state.try_lock().is_ok() {
                    free2.fetch_add(1, Ordering::SeqCst);
                }
            }))
        });
        let done = p.complete();
        WHILE_HASHING.with(|h| *h.borrow_mut() = None);
        assert!(done.unwrap());
        assert!(free.load(Ordering::SeqCst) > 0, "readers were locked out");
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), blob);
    }

    #[test]
    fn records_left_beside_a_whole_blob_by_a_crash_are_removed() {
        let (_d, store) = store();
        let (blob, digest, spans, p) = all_local(&store, 241);
        drop(p);
        let (json, ranges) = (
            store.partial_path(&digest, ".json"),
            store.partial_path(&digest, ".ranges"),
        );
        let crash = || {
            // What a crash after complete's rename leaves.
            fs::rename(store.partial_path(&digest, ""), store.blob_path(&digest)).unwrap();
            assert!(json.is_file() && ranges.is_file());
        };
        crash();
        assert!(!store.has_partial(&digest));
        assert!(store.list_partials().unwrap().is_empty());
        assert_eq!(store.local_bytes(&digest), 3000);
        assert_eq!(store.heal_partials().unwrap(), vec![digest]);
        assert!(!json.exists() && !ranges.exists());
        assert_eq!(fs::read(store.blob_path(&digest)).unwrap(), blob);

        // Opened again: the records go, the blob stays.
        fs::rename(store.blob_path(&digest), store.partial_path(&digest, "")).unwrap();
        store.remove_partial(&digest).unwrap();
        store.add_partial(&digest, 3000, "r/x").unwrap();
        let p = store.open_partial(&digest).unwrap().unwrap();
        p.store_verified(0, &blob, &spans, "r/x").unwrap();
        drop(p);
        crash();
        assert!(store.open_partial(&digest).unwrap().is_none());
        assert!(!json.exists() && !ranges.exists());
        assert!(store.has_blob(&digest));
    }
}
