//! Ingest: one streaming pass over a layer blob that stores it (temp file,
//! fsync, rename, verified against its digest), computes its diff_id, records
//! decoding checkpoints and builds its index. The same pass, without storing,
//! rebuilds a missing or damaged index from a stored blob.

use super::LayerError;
use super::compression::Compression;
use super::decode::StreamDecoder;
use super::index::{EntryKind, IndexBuilder, IndexMeta, LayerIndex, NewEntry};
use super::tar::{Kind, TarEntry, TarReader};
use crate::oci::{Digest, Sha256Writer};
use crate::store::{BlobWriter, Store, StoreError};
use std::io::{self, Read, Write};

/// Uncompressed bytes between the checkpoints of an index published for
/// lazy reads over a network (a read decodes from the checkpoint before it).
pub const PUBLISH_SPAN: u64 = 2 << 20;

/// Checkpoint spacing of the indexes ingest builds: the read path's SPAN, or
/// PUBLISH_SPAN when that is denser, so `push` publishes the local index as
/// it is instead of inflating every layer again (the inflate ingest does
/// anyway is the only place the windows come for free).
pub const INDEX_SPAN: u64 = if super::SPAN < PUBLISH_SPAN {
    super::SPAN
} else {
    PUBLISH_SPAN
};

/// What ingest learned about a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerInfo {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub compression: Compression,
    pub uncompressed_size: u64,
    /// eStargz layers as written here: the sha256 of the TOC, for the
    /// descriptor's annotation.
    pub toc_digest: Option<Digest>,
}

impl LayerInfo {
    pub fn from_index(index: &LayerIndex) -> LayerInfo {
        let m = index.meta();
        LayerInfo {
            digest: m.digest,
            diff_id: m.diff_id,
            size: m.blob_size,
            compression: m.compression,
            uncompressed_size: m.uncompressed_size,
            toc_digest: None,
        }
    }
}

/// Where the compressed bytes go as they are read: into a blob being
/// stored (which hashes them), or only into a hash (re-indexing a stored
/// blob, which is never trusted unverified).
enum Sink {
    Store(BlobWriter),
    Hash(Sha256Writer),
}

impl Sink {
    fn take(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Sink::Store(w) => w.write_all(data),
            Sink::Hash(h) => {
                h.update(data);
                Ok(())
            }
        }
    }

    /// The hash of what a `Hash` sink took: (digest, bytes).
    fn finish_hash(self) -> Result<(Digest, u64), LayerError> {
        match self {
            Sink::Hash(h) => {
                let len = h.len();
                Ok((h.finish(), len))
            }
            Sink::Store(_) => Err(LayerError::Empty),
        }
    }
}

/// Stores and indexes a layer blob read from `src`. With `expected`, the
/// bytes must hash to it; a blob the store already has with a valid index is
/// not read again.
pub fn ingest(
    store: &Store,
    src: impl Read + Send,
    expected: Option<&Digest>,
) -> Result<LayerInfo, LayerError> {
    if let Some(d) = expected
        && store.has_blob(d)
        && let Ok(index) = LayerIndex::open(&store.layer_index_path(d), d)
    {
        return Ok(LayerInfo::from_index(&index));
    }
    let sink = Sink::Store(store.blob_writer()?);
    let (index_bytes, decoded, sink) = index_stream(src, sink, INDEX_SPAN, Some(store.tmp_dir()))?;
    let Sink::Store(blob) = sink else {
        return Err(LayerError::Empty);
    };
    let (digest, size) = blob.commit(expected)?;
    let meta = IndexMeta {
        digest,
        diff_id: decoded.0,
        compression: decoded.1,
        blob_size: size,
        uncompressed_size: decoded.2,
    };
    write_index(store, &meta, index_bytes)?;
    Ok(LayerInfo {
        digest,
        diff_id: meta.diff_id,
        size,
        compression: meta.compression,
        uncompressed_size: meta.uncompressed_size,
        toc_digest: None,
    })
}

/// The index of a stored layer, rebuilt from the blob when it is missing
/// or damaged (it is a cache: the blob is the truth).
pub fn open_index(store: &Store, digest: &Digest) -> Result<LayerIndex, LayerError> {
    match LayerIndex::open(&store.layer_index_path(digest), digest) {
        Ok(i) => Ok(i),
        Err(e) => {
            log::warn!("{e}; rebuilding it from the blob");
            index_blob(store, digest)
        }
    }
}

/// Rebuilds the index of a stored blob, verifying the blob on the way.
pub fn index_blob(store: &Store, digest: &Digest) -> Result<LayerIndex, LayerError> {
    index_blob_with_span(store, digest, INDEX_SPAN)
}

/// Rebuilds the index of a stored blob with a checkpoint every `span`
/// uncompressed bytes: an index to publish for lazy reads wants them denser
/// (a read fetches from the checkpoint before it), at the cost of a larger
/// index (a 32 KiB window each, deflated).
pub fn index_blob_with_span(
    store: &Store,
    digest: &Digest,
    span: u64,
) -> Result<LayerIndex, LayerError> {
    // Keeps gc from removing the temp file of the index being written.
    let _lock = store.lock_shared()?;
    let file = store.open_blob(digest)?;
    let size = file
        .metadata()
        .map_err(|e| LayerError::io(&store.blob_path(digest), e))?
        .len();
    let sink = Sink::Hash(Sha256Writer::new());
    let (index_bytes, decoded, sink) = index_stream(file, sink, span, Some(store.tmp_dir()))?;
    let (actual, _) = sink.finish_hash()?;
    if actual != *digest {
        return Err(StoreError::DigestMismatch {
            expected: *digest,
            actual,
        }
        .into());
    }
    let meta = IndexMeta {
        digest: *digest,
        diff_id: decoded.0,
        compression: decoded.1,
        blob_size: size,
        uncompressed_size: decoded.2,
    };
    write_index(store, &meta, index_bytes)?;
    LayerIndex::open(&store.layer_index_path(digest), digest)
}

/// Indexes a layer blob read from `src` without storing it (`index push`
/// reads a layer of a registry once, streaming), with a checkpoint every
/// `span` uncompressed bytes. The bytes must hash to `expected`. Returns
/// the layer and its index file's bytes.
pub fn index_only(
    src: impl Read + Send,
    expected: &Digest,
    span: u64,
) -> Result<(LayerInfo, Vec<u8>), LayerError> {
    let (parts, decoded, sink) = index_stream(src, Sink::Hash(Sha256Writer::new()), span, None)?;
    let (actual, size) = sink.finish_hash()?;
    if actual != *expected {
        return Err(StoreError::DigestMismatch {
            expected: *expected,
            actual,
        }
        .into());
    }
    let meta = IndexMeta {
        digest: actual,
        diff_id: decoded.0,
        compression: decoded.1,
        blob_size: size,
        uncompressed_size: decoded.2,
    };
    let bytes = index_file(&meta, parts)?;
    let info = LayerInfo {
        digest: actual,
        diff_id: meta.diff_id,
        size,
        compression: meta.compression,
        uncompressed_size: meta.uncompressed_size,
        toc_digest: None,
    };
    Ok((info, bytes))
}

fn write_index(store: &Store, meta: &IndexMeta, parts: IndexParts) -> Result<(), LayerError> {
    let path = store.layer_index_path(&meta.digest);
    let mut w = store.blob_writer()?;
    let (builder, checkpoints, windows, blob_spans) = parts;
    let spans = span_table(meta, blob_spans);
    builder.finish_to(meta, &checkpoints, &windows, &spans, &mut w, &path)?;
    // Index files are named by the blob they describe, not by their own hash.
    w.commit_to(&path)?;
    Ok(())
}

/// The span digests of a blob as an index records them.
fn span_table(meta: &IndexMeta, blob_spans: Vec<Digest>) -> crate::store::SpanTable {
    // Spans that do not add up to the blob (never seen) only cost lazy reads.
    crate::store::SpanTable::fixed(meta.blob_size, super::index::BLOB_SPAN, blob_spans)
        .unwrap_or_else(|why| {
            log::warn!("layer {}: no span digests in its index: {why}", meta.digest);
            crate::store::SpanTable::default()
        })
}

/// The bytes of the index file for what one pass collected.
fn index_file(meta: &IndexMeta, index_bytes: IndexParts) -> Result<Vec<u8>, LayerError> {
    let (builder, checkpoints, windows, blob_spans) = index_bytes;
    let spans = span_table(meta, blob_spans);
    builder.finish(meta, &checkpoints, &windows, &spans)
}

type IndexParts = (
    IndexBuilder,
    Vec<super::index::Checkpoint>,
    Vec<u8>,
    Vec<Digest>,
);

/// The sha256 of each BLOB_SPAN bytes of the compressed blob, as it passes.
#[derive(Default)]
struct SpanHasher {
    hash: Sha256Writer,
    done: Vec<Digest>,
}

impl SpanHasher {
    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = (super::index::BLOB_SPAN - self.hash.len()) as usize;
            let n = room.min(data.len());
            self.hash.update(&data[..n]);
            data = &data[n..];
            if self.hash.len() == super::index::BLOB_SPAN {
                let full = std::mem::take(&mut self.hash);
                self.done.push(full.finish());
            }
        }
    }

    fn finish(mut self) -> Vec<Digest> {
        if !self.hash.is_empty() {
            self.done.push(self.hash.finish());
        }
        self.done
    }
}
type DecodedMeta = (Digest, Compression, u64);

/// Bytes per message between the threads of one ingest pass.
const CHUNK: usize = 256 * 1024;
/// Compressed chunks read ahead of the decoder.
const CHUNKS_AHEAD: usize = 8;
/// Decoded chunks waiting for the diff_id hash.
const DECODED_AHEAD: usize = 4;

/// A chunk passed between threads: a buffer of CHUNK bytes and how many of
/// them hold data. Buffers go back to their sender to be filled again.
type Chunk = (Vec<u8>, usize);

/// The single pass over a layer blob, on three threads: one reads the
/// compressed bytes, stores or hashes them and hashes their spans; this one
/// inflates, parses the tar headers and indexes; one hashes the decoded
/// stream (the diff_id). On 2 cores this keeps the inflating thread, the
/// longest, to the inflate alone.
fn index_stream(
    src: impl Read + Send,
    sink: Sink,
    span: u64,
    spill_dir: Option<std::path::PathBuf>,
) -> Result<(IndexParts, DecodedMeta, Sink), LayerError> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Chunk>>(CHUNKS_AHEAD);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let producer = scope.spawn(move || read_blob(src, sink, &tx, &free_rx));
        let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Chunk>(DECODED_AHEAD);
        let (hashed_tx, hashed_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let hasher = scope.spawn(move || {
            let mut diff = Sha256Writer::new();
            for (buf, n) in hash_rx {
                diff.update(&buf[..n]);
                // The parser gone: the buffer is no longer wanted.
                let _ = hashed_tx.send(buf);
            }
            diff.finish()
        });
        let chunks = ChunkReader {
            rx,
            free: free_tx,
            chunk: (Vec::new(), 0),
            pos: 0,
        };
        let parsed = parse_stream(chunks, span, spill_dir, hash_tx, hashed_rx);
        let diff_id = hasher
            .join()
            .map_err(|_| LayerError::Stream(io::Error::other("the hashing thread failed")))?;
        let (sink, blob_spans, write_error) = producer
            .join()
            .map_err(|_| LayerError::Stream(io::Error::other("the reading thread failed")))?;
        // A failed blob write (a full disk) is reported as such, not as
        // whatever the decoder made of the stream ending there.
        if let Some((path, e)) = write_error {
            return Err(LayerError::Store(StoreError::io(&path, e)));
        }
        let ((builder, checkpoints, windows), (compression, size)) = parsed?;
        Ok((
            (builder, checkpoints, windows, blob_spans),
            (diff_id, compression, size),
            sink,
        ))
    })
}

/// The reading thread: fills chunks from `src`, passes each to `sink` and
/// the span hasher, and sends it on. Returns the sink, the span digests,
/// and a failed write to the blob with the file it was for.
#[allow(clippy::type_complexity)]
fn read_blob(
    mut src: impl Read,
    mut sink: Sink,
    tx: &std::sync::mpsc::SyncSender<io::Result<Chunk>>,
    free: &std::sync::mpsc::Receiver<Vec<u8>>,
) -> (Sink, Vec<Digest>, Option<(std::path::PathBuf, io::Error)>) {
    let mut spans = SpanHasher::default();
    loop {
        // Buffers come back from the decoder once read; a new one only
        // while those ahead are all in flight.
        let mut buf = free.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let mut n = 0;
        let mut failed = None;
        while n < buf.len() {
            match src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failed {
            let _ = tx.send(Err(e));
            break;
        }
        if n == 0 {
            break;
        }
        if let Err(e) = sink.take(&buf[..n]) {
            let _ = tx.send(Err(io::Error::new(e.kind(), "writing the blob failed")));
            let path = match &sink {
                Sink::Store(w) => w.path().to_path_buf(),
                Sink::Hash(_) => std::path::PathBuf::new(),
            };
            return (sink, spans.finish(), Some((path, e)));
        }
        spans.update(&buf[..n]);
        // A closed channel: the decoder stopped (bad data); stop reading too.
        if tx.send(Ok((buf, n))).is_err() {
            break;
        }
    }
    (sink, spans.finish(), None)
}

/// Reads the chunks the reading thread sends, and sends their buffers back.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Chunk>>,
    free: std::sync::mpsc::Sender<Vec<u8>>,
    chunk: Chunk,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.1 {
            match self.rx.recv() {
                Ok(Ok(c)) => {
                    let used = std::mem::replace(&mut self.chunk, c);
                    if !used.0.is_empty() {
                        // The reading thread gone: the buffer is just dropped.
                        let _ = self.free.send(used.0);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.1 - self.pos);
        buf[..n].copy_from_slice(&self.chunk.0[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The decoded (tar) stream as the parser reads it: filled in chunks, each
/// also sent to the thread hashing the diff_id.
struct HashedStream<R> {
    src: R,
    chunk: Chunk,
    pos: usize,
    hash: std::sync::mpsc::SyncSender<Chunk>,
    free: std::sync::mpsc::Receiver<Vec<u8>>,
}

impl<R: Read> HashedStream<R> {
    /// Sends the chunk read and fills the next; false at the end.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let buf = self.free.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
        let full = std::mem::replace(&mut self.chunk, (buf, 0));
        if full.1 > 0 {
            self.hash
                .send(full)
                .map_err(|_| io::Error::other("the hashing thread failed"))?;
        }
        self.pos = 0;
        let mut n = 0;
        let buf = &mut self.chunk.0;
        while n < buf.len() {
            match self.src.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(got) => n += got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.chunk.1 = n;
        Ok(n > 0)
    }

    /// Reads the stream to its end, so that it is hashed whole, and
    /// returns the source.
    fn finish(mut self) -> io::Result<R> {
        while self.next_chunk()? {}
        Ok(self.src)
    }
}

impl<R: Read> Read for HashedStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.1 && !self.next_chunk()? {
            return Ok(0);
        }
        let n = buf.len().min(self.chunk.1 - self.pos);
        buf[..n].copy_from_slice(&self.chunk.0[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

type Parsed = (IndexBuilder, Vec<super::index::Checkpoint>, Vec<u8>);

fn parse_stream(
    mut src: impl Read,
    span: u64,
    spill_dir: Option<std::path::PathBuf>,
    hash: std::sync::mpsc::SyncSender<Chunk>,
    hashed: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<(Parsed, (Compression, u64)), LayerError> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match src.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LayerError::Stream(e)),
        }
    }
    if got == 0 {
        return Err(LayerError::Empty);
    }
    let compression = Compression::detect(&head[..got]);
    let chained = io::Cursor::new(head[..got].to_vec()).chain(src);
    let decoder =
        StreamDecoder::with_span(chained, compression, span).map_err(LayerError::Stream)?;
    let mut tar = TarReader::new(HashedStream {
        src: decoder,
        chunk: (Vec::new(), 0),
        pos: 0,
        hash,
        free: hashed,
    });
    let mut builder = IndexBuilder::spilling_to(spill_dir);
    let parsed: Result<(), LayerError> = (|| {
        while let Some(e) = tar.next_entry()? {
            add_entry(&mut builder, e)?;
        }
        builder.prepare()
    })();
    if let Err(e) = parsed {
        let e = match e {
            LayerError::Tar(super::tar::TarError::Io(io)) => LayerError::Stream(io),
            other => other,
        };
        return Err(e);
    }
    let decoder = tar.into_inner().finish().map_err(LayerError::Stream)?;
    let (decoded, _) = decoder.finish().map_err(LayerError::Stream)?;
    Ok((
        (builder, decoded.checkpoints, decoded.windows),
        (compression, decoded.uncompressed_size),
    ))
}

/// The kernel's NAME_MAX: a longer name can never be listed or exported.
pub const NAME_MAX: usize = 255;
/// The kernel's PATH_MAX less its NUL: the longest path a file can be opened by.
pub const PATH_MAX: usize = 4095;

/// Normalizes a member path: no `./`, no empty or `.` components, no trailing
/// `/`; the root is `""`. Paths with `..` or a leading `/` are refused, and
/// so are names and paths longer than the kernel's limits (which also bounds
/// the depth, and so what a path's implicit parents cost).
pub fn normalize_path(raw: &[u8]) -> Result<Vec<u8>, LayerError> {
    let bad = |why| Err(LayerError::bad_path(raw, why));
    if raw.starts_with(b"/") && raw.iter().any(|&c| c != b'/') {
        return bad("absolute paths are not allowed in a layer");
    }
    let mut out = Vec::with_capacity(raw.len().min(PATH_MAX + 1));
    for comp in raw.split(|&c| c == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return bad("'..' is not allowed in a layer"),
            c if c.len() > NAME_MAX => return bad("a name is longer than 255 bytes"),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
                if out.len() > PATH_MAX {
                    return bad("the path is longer than 4095 bytes");
                }
            }
        }
    }
    Ok(out)
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

pub(super) fn add_entry(builder: &mut IndexBuilder, e: TarEntry) -> Result<(), LayerError> {
    let path = normalize_path(&e.path)?;
    let (parent, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&path[..0], &path[..]),
    };
    if name == OPAQUE_MARKER {
        return builder.add_opaque(parent);
    }
    let whiteout = name.strip_prefix(WHITEOUT_PREFIX);
    let id = |v: u64, what: &'static str| {
        u32::try_from(v).map_err(|_| LayerError::bad_path(&e.path, what))
    };
    let (kind, path) = match whiteout {
        Some(hidden) => {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(LayerError::bad_path(&e.path, "whiteout of nothing"));
            }
            let mut p = parent.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(hidden);
            (EntryKind::Whiteout, p)
        }
        None => {
            let kind = match e.kind {
                Kind::Regular => EntryKind::Regular,
                Kind::HardLink => EntryKind::HardLink,
                Kind::Symlink => EntryKind::Symlink,
                Kind::CharDevice => EntryKind::CharDevice,
                Kind::BlockDevice => EntryKind::BlockDevice,
                Kind::Directory => EntryKind::Directory,
                Kind::Fifo => EntryKind::Fifo,
            };
            (kind, path)
        }
    };
    if path.is_empty() && kind != EntryKind::Directory {
        return Err(LayerError::bad_path(
            &e.path,
            "the root of a layer must be a directory",
        ));
    }
    let link = match kind {
        EntryKind::HardLink => {
            let target = normalize_path(&e.link)?;
            if target.is_empty() {
                return Err(LayerError::bad_path(&e.path, "hard link to the root"));
            }
            target
        }
        EntryKind::Symlink if e.link.len() > PATH_MAX => {
            return Err(LayerError::bad_path(
                &e.path,
                "symlink target longer than 4095 bytes",
            ));
        }
        EntryKind::Symlink => e.link.clone(),
        _ => Vec::new(),
    };
    // The kernel's limits: anything larger could never be set on a real file.
    for (name, value) in &e.xattrs {
        let why = if name.is_empty() || name.len() > 255 {
            "xattr name empty or longer than 255 bytes"
        } else if value.len() > 65536 {
            "xattr value larger than 64 KiB"
        } else {
            continue;
        };
        return Err(LayerError::BadXattr {
            path: super::error::short_name(&e.path),
            why,
        });
    }
    builder.add(NewEntry {
        path,
        kind,
        flags: 0,
        mode: e.mode,
        uid: id(e.uid, "uid does not fit in 32 bits")?,
        gid: id(e.gid, "gid does not fit in 32 bits")?,
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
        size: if kind == EntryKind::Regular {
            e.size
        } else {
            0
        },
        data_offset: e.data_offset,
        link,
        rdev_major: e.dev_major,
        rdev_minor: e.dev_minor,
        xattrs: e.xattrs,
        sparse: e.sparse.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"./", b""),
            (b".", b""),
            (b"./etc/passwd", b"etc/passwd"),
            (b"etc//x/./y/", b"etc/x/y"),
            (b"/", b""),
            (b"caf\xe9", b"caf\xe9"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_path(raw).unwrap(), *want);
        }
        for bad in [&b"../x"[..], b"a/../../b", b"/etc/passwd"] {
            assert!(
                normalize_path(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
