//! Decoding a layer blob into its uncompressed tar stream, in two ways:
//!
//! - streaming, during ingest: gzip, zstd or plain bytes are decoded once
//!   while span checkpoints are recorded (for gzip, zran-style: at a deflate
//!   block boundary, with the bit offset and the 32 KiB window, as densely as
//!   the window budget allows: see `SpanTracker::wants_cut`), with a CRC32
//!   of each span (ingest hashes the stream, the diff_id, on another thread);
//! - randomly, when a mounted file is read: a span is decoded from its
//!   checkpoint and checked against its CRC, so damage on disk is detected;
//!   a gzip span only as far as a read needs (`inflate_to`), the inflater
//!   kept so that the next read continues where it stopped.
//!
//! zstd frames cannot be entered mid-way, so a zstd span is decoded from the
//! start of its frame (the spans passed on the way are returned for caching).

use super::compression::Compression;
use super::index::{Checkpoint, LayerIndex};
use super::zlib::{self, Inflater, Status};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;

/// Most uncompressed bytes between checkpoints. A gzip span is cut earlier,
/// down to `MIN_SPAN`, while the stored windows stay within `WINDOW_BUDGET`
/// of the compressed bytes read: a cold small read inflates from the
/// checkpoint before it, so the denser, the less it inflates.
pub const SPAN: u64 = 4 << 20;
/// Fewest uncompressed bytes between gzip checkpoints.
const MIN_SPAN: u64 = 256 << 10;
/// The stored (deflated) windows take at most 1/WINDOW_BUDGET of the
/// compressed layer (one window's worth more at worst): 2.5 %, which with the
/// entries keeps an index under 5 % of its layer.
const WINDOW_BUDGET: u64 = 40;
const IN_BUF: usize = 256 * 1024;

/// Splits the decoded stream into spans and hashes it.
pub struct SpanTracker {
    /// Uncompressed bytes between checkpoints: SPAN, or fewer for an index
    /// meant for lazy reads over a network.
    span: u64,
    checkpoints: Vec<Checkpoint>,
    open: Checkpoint,
    crc: u32,
    pos: u64,
    windows: Vec<u8>,
}

/// What the streaming pass learned.
pub struct Decoded {
    pub checkpoints: Vec<Checkpoint>,
    pub windows: Vec<u8>,
    pub uncompressed_size: u64,
}

impl SpanTracker {
    fn new(span: u64) -> Self {
        SpanTracker {
            span: span.max(64 << 10),
            checkpoints: Vec::new(),
            open: restart_at(0, 0),
            crc: 0,
            pos: 0,
            windows: Vec::new(),
        }
    }

    fn since_open(&self) -> u64 {
        self.pos - self.open.out_offset
    }

    /// Whether to cut a gzip checkpoint at a block boundary reached after
    /// `in_pos` compressed bytes: always after `span`; after `MIN_SPAN` while
    /// the windows stored so far are within budget.
    fn wants_cut(&self, in_pos: u64) -> bool {
        let len = self.since_open();
        len >= self.span
            || (len >= MIN_SPAN.min(self.span)
                && (self.windows.len() as u64).saturating_mul(WINDOW_BUDGET) <= in_pos)
    }

    /// Counts `data` into the open span; with `auto`, cuts a span every SPAN
    /// bytes (restartable there when `auto` says so).
    fn feed(&mut self, mut data: &[u8], auto: Option<bool>) -> io::Result<()> {
        while let Some(restart) = auto {
            let room = (self.span - self.since_open()) as usize;
            if data.len() < room {
                break;
            }
            self.crc = zlib::crc32(self.crc, &data[..room]);
            self.pos += room as u64;
            data = &data[room..];
            let next = if restart {
                restart_at(self.pos, self.pos)
            } else {
                continuation()
            };
            self.cut(next)?;
        }
        self.crc = zlib::crc32(self.crc, data);
        self.pos += data.len() as u64;
        if self.since_open() > u32::MAX as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a deflate block longer than 4 GiB",
            ));
        }
        Ok(())
    }

    /// Closes the open span at the current position and opens `next` there.
    fn cut(&mut self, mut next: Checkpoint) -> io::Result<()> {
        let len = self.since_open();
        next.out_offset = self.pos;
        if len == 0 {
            // An empty span (two cuts in a row) is replaced, keeping the
            // earlier restart ability if the new one has none.
            if self.open.restart && !next.restart {
                return Ok(());
            }
            self.open = next;
            return Ok(());
        }
        let mut closed = self.open;
        closed.out_len = len as u32;
        closed.crc = self.crc;
        self.checkpoints.push(closed);
        self.open = next;
        self.crc = 0;
        Ok(())
    }

    /// Stores `deflated`, a window as `deflate_window` made it, as the open
    /// checkpoint's.
    fn set_window(&mut self, deflated: &[u8]) {
        self.open.window_offset = self.windows.len() as u64;
        self.open.window_len = deflated.len() as u32;
        self.windows.extend_from_slice(deflated);
    }

    fn finish(mut self) -> io::Result<Decoded> {
        self.cut(continuation())?;
        Ok(Decoded {
            checkpoints: self.checkpoints,
            windows: self.windows,
            uncompressed_size: self.pos,
        })
    }
}

/// A window as the index stores it: deflated, fast (windows are made
/// during every pull; best made importing a 222 MB layer 2.6 s instead of
/// 2.0 s, and the index no smaller: the window budget sets its size).
fn deflate_window(window: &[u8]) -> io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(window)?;
    enc.finish()
}

fn restart_at(out: u64, input: u64) -> Checkpoint {
    Checkpoint {
        out_offset: out,
        out_len: 0,
        crc: 0,
        in_offset: input,
        bits: 0,
        restart: true,
        window_offset: 0,
        window_len: 0,
    }
}

fn continuation() -> Checkpoint {
    Checkpoint {
        restart: false,
        ..restart_at(0, 0)
    }
}

fn corrupt(kind: &str, msg: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt {kind} stream: {msg}"),
    )
}

fn truncated(kind: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("{kind} stream is truncated"),
    )
}

/// The window of a gzip checkpoint being trimmed: only the bytes that the
/// span's first 32 KiB of output copy from it are kept, the rest zeroed (a
/// deflate distance reaches 32 KiB back at most, so nothing later refers to
/// the window). A stored window of mostly zeros deflates to little, so the
/// window budget buys denser checkpoints; readers set it as any window.
///
/// Which bytes are referred to is found by inflating that output twice more
/// with made-up windows: byte k of one holds k's low 8 bits, of the other
/// 0x80 | k's high bits. An output byte copied from window byte k reads
/// differently in the two and spells k; a literal reads the same. The 128
/// window bytes whose two made-up values agree are kept always. The trimmed
/// window is then checked by a third inflate against the real output, and
/// the whole window kept if it differs.
struct WindowTrim {
    window: Vec<u8>,
    /// The span's output, its first 32 KiB.
    real: Vec<u8>,
    /// The compressed bytes from the checkpoint on, for the check.
    input: Vec<u8>,
    /// The bit offset and the byte before the checkpoint, to prime each.
    bits: u8,
    before: u8,
}

impl WindowTrim {
    fn new(window: Vec<u8>, bits: u8, before: u8) -> WindowTrim {
        WindowTrim {
            window,
            real: Vec::with_capacity(zlib::WINDOW),
            input: Vec::new(),
            bits,
            before,
        }
    }

    /// The span's first `out.len()` bytes inflated with `window`; None
    /// when they do not come out (an error, or the input ran short).
    fn inflate(&self, window: &[u8], out: &mut [u8]) -> Option<()> {
        let mut inf = Inflater::new(zlib::RAW).ok()?;
        if self.bits > 0 {
            let value = self.before >> (8 - self.bits);
            inf.prime(i32::from(self.bits), i32::from(value)).ok()?;
        }
        inf.set_dictionary(window).ok()?;
        let (mut used, mut made) = (0, 0);
        while made < out.len() {
            let (c, p, status) = inf
                .inflate(
                    &self.input[used..],
                    &mut out[made..],
                    libz_rs_sys::Z_NO_FLUSH,
                )
                .ok()?;
            used += c;
            made += p;
            if (c == 0 && p == 0) || status == Status::StreamEnd {
                break;
            }
        }
        (made == out.len()).then_some(())
    }

    /// Takes the compressed bytes the main inflater consumed and what it
    /// produced from them; true once the first 32 KiB of output are known.
    fn feed(&mut self, input: &[u8], output: &[u8]) -> bool {
        let room = zlib::WINDOW - self.real.len();
        self.real
            .extend_from_slice(&output[..output.len().min(room)]);
        self.input.extend_from_slice(input);
        self.real.len() == zlib::WINDOW
    }

    /// The window to store: trimmed when that inflates the same output as
    /// the whole one did over what is known (`real`), else whole.
    fn finish(self) -> Vec<u8> {
        self.trimmed().unwrap_or(self.window)
    }

    fn trimmed(&self) -> Option<Vec<u8>> {
        let want = self.real.len();
        let made_up = |f: fn(usize) -> u8| (0..self.window.len()).map(f).collect::<Vec<u8>>();
        let mut outs = [vec![0u8; want], vec![0u8; want]];
        self.inflate(&made_up(|k| k as u8), &mut outs[0])?;
        self.inflate(&made_up(|k| 0x80 | (k >> 8) as u8), &mut outs[1])?;
        let mut keep = vec![false; self.window.len()];
        for high in 0..128usize {
            if let Some(k) = keep.get_mut(high << 8 | 0x80 | high) {
                *k = true;
            }
        }
        for (&a, &b) in outs[0].iter().zip(&outs[1]) {
            if a != b {
                *keep.get_mut(usize::from(b & 0x7f) << 8 | usize::from(a))? = true;
            }
        }
        let trimmed: Vec<u8> = self
            .window
            .iter()
            .zip(&keep)
            .map(|(&w, &k)| if k { w } else { 0 })
            .collect();
        let mut out = vec![0u8; want];
        self.inflate(&trimmed, &mut out)?;
        (out == self.real).then_some(trimmed)
    }
}

/// The streaming decoder used by ingest: reads the blob, yields tar bytes.
pub struct StreamDecoder<R: Read> {
    src: R,
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Compressed bytes consumed by the decoder.
    in_pos: u64,
    eof: bool,
    done: bool,
    kind: Kind,
    tracker: SpanTracker,
    /// The last compressed byte consumed (a checkpoint's bits are in it).
    last_byte: u8,
    /// The open gzip checkpoint's window while the output that shows its
    /// trim comes; then trimmed and deflated by `trimmer`.
    trim: Option<WindowTrim>,
    /// A window was handed to `trimmer` and its result is not taken yet.
    trimming: bool,
    /// Gzip only; None where no thread could be started (trims run here).
    trimmer: Option<Trimmer>,
}

/// The thread that trims and deflates a decoder's checkpoint windows, one
/// at a time, beside the decoding thread (the longest of a pull). It ends
/// when its decoder drops.
struct Trimmer {
    jobs: mpsc::Sender<WindowTrim>,
    done: mpsc::Receiver<io::Result<Vec<u8>>>,
}

impl Trimmer {
    fn start() -> Option<Trimmer> {
        let (jobs, todo) = mpsc::channel::<WindowTrim>();
        let (finished, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("window-trim".into())
            .spawn(move || {
                for t in todo {
                    if finished.send(deflate_window(&t.finish())).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        Some(Trimmer { jobs, done })
    }
}

enum Kind {
    Plain,
    Gzip(Inflater),
    Zstd {
        dctx: zstd::zstd_safe::DCtx<'static>,
        frame_start: bool,
        frame_open: bool,
    },
}

impl<R: Read> StreamDecoder<R> {
    /// A decoder cutting a checkpoint every `span` bytes of output.
    pub fn with_span(src: R, compression: Compression, span: u64) -> io::Result<Self> {
        let kind = match compression {
            Compression::None => Kind::Plain,
            Compression::Gzip => {
                Kind::Gzip(Inflater::new(zlib::GZIP).map_err(|e| corrupt("gzip", e))?)
            }
            Compression::Zstd => {
                let mut dctx = zstd::zstd_safe::DCtx::create();
                // Allow long-distance windows as `zstd --long` writes them.
                dctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(31))
                    .map_err(|c| corrupt("zstd", zstd::zstd_safe::get_error_name(c)))?;
                Kind::Zstd {
                    dctx,
                    frame_start: true,
                    frame_open: false,
                }
            }
        };
        Ok(StreamDecoder {
            src,
            inbuf: vec![0u8; IN_BUF],
            in_start: 0,
            in_end: 0,
            in_pos: 0,
            eof: false,
            done: false,
            tracker: SpanTracker::new(span),
            last_byte: 0,
            trimmer: matches!(kind, Kind::Gzip(_)).then(Trimmer::start).flatten(),
            kind,
            trim: None,
            trimming: false,
        })
    }

    /// Reads the rest of the source, so that it is hashed whole, and returns
    /// what the pass recorded. Call after the tar stream has been read to its end.
    pub fn finish(mut self) -> io::Result<(Decoded, R)> {
        let mut sink = vec![0u8; 64 * 1024];
        while self.read(&mut sink)? > 0 {}
        while !self.eof {
            self.refill()?;
            self.in_start = self.in_end;
        }
        self.settle_trim()?;
        Ok((self.tracker.finish()?, self.src))
    }

    /// Stores the open checkpoint's window, trimmed as far as what followed
    /// it shows; before any other cut, and at the end.
    fn settle_trim(&mut self) -> io::Result<()> {
        let deflated = if let Some(t) = self.trim.take() {
            deflate_window(&t.finish())?
        } else if std::mem::take(&mut self.trimming) {
            let trimmed = self.trimmer.as_ref().and_then(|t| t.done.recv().ok());
            trimmed.ok_or_else(|| io::Error::other("the window trimming thread failed"))??
        } else {
            return Ok(());
        };
        self.tracker.set_window(&deflated);
        Ok(())
    }

    /// Hands the open checkpoint's window to the trimming thread (it stays
    /// for `settle_trim` to trim here where there is none).
    fn start_trim(&mut self) {
        let Some(trimmer) = &self.trimmer else {
            return;
        };
        let Some(t) = self.trim.take() else {
            return;
        };
        match trimmer.jobs.send(t) {
            Ok(()) => self.trimming = true,
            Err(mpsc::SendError(t)) => self.trim = Some(t),
        }
    }

    fn refill(&mut self) -> io::Result<()> {
        if self.in_start < self.in_end || self.eof {
            return Ok(());
        }
        loop {
            match self.src.read(&mut self.inbuf) {
                Ok(0) => {
                    self.eof = true;
                    self.in_start = 0;
                    self.in_end = 0;
                    return Ok(());
                }
                Ok(n) => {
                    self.in_start = 0;
                    self.in_end = n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.src.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r?,
            }
        };
        if n == 0 {
            self.done = true;
            self.eof = true;
        }
        self.in_pos += n as u64;
        self.tracker.feed(&buf[..n], Some(true))?;
        Ok(n)
    }

    fn read_gzip(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.refill()?;
            let Kind::Gzip(inf) = &mut self.kind else {
                unreachable!()
            };
            let input = &self.inbuf[self.in_start..self.in_end];
            let (c, p, status) = inf
                .inflate(input, buf, libz_rs_sys::Z_BLOCK)
                .map_err(|e| corrupt("gzip", e))?;
            let dt = inf.data_type();
            let consumed = &self.inbuf[self.in_start..self.in_start + c];
            if let Some(&b) = consumed.last() {
                self.last_byte = b;
            }
            if let Some(t) = &mut self.trim
                && t.feed(consumed, &buf[..p])
            {
                self.start_trim();
            }
            self.in_start += c;
            self.in_pos += c as u64;
            self.tracker.feed(&buf[..p], None)?;
            match status {
                Status::StreamEnd => {
                    self.settle_trim()?;
                    self.next_gzip_member()?;
                }
                _ => {
                    let block_end = dt & 128 != 0 && dt & 64 == 0;
                    if block_end && self.tracker.since_open() >= MIN_SPAN.min(self.tracker.span) {
                        // The budget counts the open checkpoint's window.
                        self.settle_trim()?;
                    }
                    if block_end && self.tracker.wants_cut(self.in_pos) {
                        let Kind::Gzip(inf) = &mut self.kind else {
                            unreachable!()
                        };
                        let bits = (dt & 7) as u8;
                        self.trim = Some(WindowTrim::new(inf.dictionary(), bits, self.last_byte));
                        let cp = Checkpoint {
                            in_offset: self.in_pos,
                            bits,
                            restart: true,
                            ..continuation()
                        };
                        self.tracker.cut(cp)?;
                    }
                    if p == 0 && c == 0 && self.eof {
                        return Err(truncated("gzip"));
                    }
                }
            }
            if p > 0 || self.done {
                return Ok(p);
            }
        }
    }

    /// After a gzip member: another member follows, or the stream is done
    /// (trailing zero padding or garbage is ignored, as gzip does).
    fn next_gzip_member(&mut self) -> io::Result<()> {
        while self.in_end - self.in_start < 2 && !self.eof {
            // Keep what is left and read more behind it.
            let left = self.in_end - self.in_start;
            self.inbuf.copy_within(self.in_start..self.in_end, 0);
            self.in_start = 0;
            self.in_end = left;
            let n = self.src.read(&mut self.inbuf[left..])?;
            if n == 0 {
                self.eof = true;
            }
            self.in_end += n;
        }
        let rest = &self.inbuf[self.in_start..self.in_end];
        if rest.starts_with(&[0x1f, 0x8b]) {
            let Kind::Gzip(inf) = &mut self.kind else {
                unreachable!()
            };
            inf.reset().map_err(|e| corrupt("gzip", e))?;
            self.tracker.cut(restart_at(0, self.in_pos))?;
        } else {
            self.done = true;
        }
        Ok(())
    }

    fn read_zstd(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            self.refill()?;
            let Kind::Zstd {
                dctx,
                frame_start,
                frame_open,
            } = &mut self.kind
            else {
                unreachable!()
            };
            if self.in_start == self.in_end {
                if *frame_open {
                    return Err(truncated("zstd"));
                }
                self.done = true;
                return Ok(0);
            }
            if *frame_start {
                *frame_start = false;
                self.tracker.cut(restart_at(0, self.in_pos))?;
            }
            let mut inb =
                zstd::zstd_safe::InBuffer::around(&self.inbuf[self.in_start..self.in_end]);
            let mut outb = zstd::zstd_safe::OutBuffer::around(&mut buf[..]);
            let hint = dctx
                .decompress_stream(&mut outb, &mut inb)
                .map_err(|c| corrupt("zstd", zstd::zstd_safe::get_error_name(c)))?;
            let (c, p) = (inb.pos(), outb.pos());
            *frame_open = hint != 0;
            if hint == 0 {
                *frame_start = true;
            }
            self.in_start += c;
            self.in_pos += c as u64;
            self.tracker.feed(&buf[..p], Some(false))?;
            if p > 0 {
                return Ok(p);
            }
        }
    }
}

impl<R: Read> Read for StreamDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.kind {
            Kind::Plain => self.read_plain(buf),
            Kind::Gzip(_) => self.read_gzip(buf),
            Kind::Zstd { .. } => self.read_zstd(buf),
        }
    }
}

/// Why a span could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("span at uncompressed offset {offset}: {why}")]
    Damaged { offset: u64, why: String },
}

/// Decodes span `i` (and, for zstd, the spans from its frame start up to it).
/// Returns (span id, bytes) pairs, each checked against its CRC.
pub fn decode_spans(
    index: &LayerIndex,
    blob: &File,
    i: u32,
    zstd: &std::sync::Mutex<Option<ZstdCursor>>,
) -> Result<Vec<(u32, Vec<u8>)>, SpanError> {
    let cp = index.checkpoint(i);
    let damaged = |why: String| SpanError::Damaged {
        offset: cp.out_offset,
        why,
    };
    let out = match index.compression() {
        Compression::None => vec![(i, read_span(blob, &cp).map_err(damaged)?)],
        Compression::Gzip => vec![(i, inflate_span(index, blob, &cp).map_err(damaged)?)],
        Compression::Zstd => {
            let mut saved = zstd.lock().unwrap_or_else(|p| p.into_inner());
            zstd_spans(index, blob, i, &mut saved).map_err(damaged)?
        }
    };
    for (id, data) in &out {
        let c = index.checkpoint(*id);
        let crc_ok = !index.has_crcs() || zlib::crc32(0, data) == c.crc;
        if !crc_ok || data.len() != c.out_len as usize {
            return Err(SpanError::Damaged {
                offset: c.out_offset,
                why: "checksum mismatch: the blob is damaged".into(),
            });
        }
    }
    Ok(out)
}

/// Makes room in `out` for more of a span of `want` bytes once `produced`
/// fill it. The index's length is believed up to one ordinary span; past
/// that the buffer doubles with what the blob actually yields, so a damaged
/// index cannot make a read reserve gigabytes.
fn grow_span(out: &mut Vec<u8>, produced: usize, want: usize) {
    if produced == out.len() {
        let next = if out.is_empty() {
            SPAN as usize + IN_BUF
        } else {
            out.len() * 2
        };
        out.resize(next.min(want), 0);
    }
}

/// A span of an uncompressed layer, read as far as the blob has it.
fn read_span(blob: &File, cp: &Checkpoint) -> Result<Vec<u8>, String> {
    let want = cp.out_len as usize;
    let mut out = Vec::new();
    let mut produced = 0;
    while produced < want {
        grow_span(&mut out, produced, want);
        let n = blob
            .read_at(&mut out[produced..], cp.in_offset + produced as u64)
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("blob ends inside the span".into());
        }
        produced += n;
    }
    Ok(out)
}

/// Makes a range of a blob held in part local before it is read: (offset, len).
pub type Ensure<'a> = &'a dyn Fn(u64, u64) -> io::Result<()>;

/// Compressed bytes a lazy decode makes local at a time, past what the
/// read's first request brought: one span digest's worth.
const LAZY_FILL: usize = super::index::BLOB_SPAN as usize;

/// Reads compressed input for span decoding, from `offset` on.
struct BlobCursor<'a> {
    blob: &'a File,
    offset: u64,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    ensure: Option<Ensure<'a>>,
    /// Compressed bytes the decode expects to read yet (lazy reads only).
    expect: usize,
}

impl<'a> BlobCursor<'a> {
    fn new(blob: &'a File, offset: u64) -> Self {
        BlobCursor {
            blob,
            offset,
            buf: vec![0u8; 128 * 1024],
            start: 0,
            end: 0,
            ensure: None,
            expect: 0,
        }
    }
    fn fill(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end {
            let mut len = self.buf.len();
            if let Some(ensure) = self.ensure {
                // Fetched bytes the inflater does not reach are wasted: ask
                // for about what the decode expects to read.
                len = self.expect.clamp(LAZY_FILL, len);
                ensure(self.offset, len as u64)?;
            }
            let n = self.blob.read_at(&mut self.buf[..len], self.offset)?;
            self.offset += n as u64;
            self.start = 0;
            self.end = n;
        }
        Ok(&self.buf[self.start..self.end])
    }
    fn consume(&mut self, n: usize) {
        self.start += n;
    }
    /// The offset of the next byte not yet consumed.
    fn position(&self) -> u64 {
        self.offset - (self.end - self.start) as u64
    }
}

fn inflate_span(index: &LayerIndex, blob: &File, cp: &Checkpoint) -> Result<Vec<u8>, String> {
    inflate_upto(index, blob, cp, cp.out_len as usize, None)
}

/// The first `want` bytes of gzip span `i`, the compressed input made local
/// by `ensure` as the inflater reaches it (a lazy read of a few KiB need not
/// fetch the whole span). Checked against the span's CRC when whole; a
/// prefix relies on the verified compressed bytes.
pub fn inflate_prefix(
    index: &LayerIndex,
    blob: &File,
    i: u32,
    want: usize,
    ensure: Ensure<'_>,
) -> Result<Vec<u8>, SpanError> {
    let cp = index.checkpoint(i);
    let damaged = |why: String| SpanError::Damaged {
        offset: cp.out_offset,
        why,
    };
    let want = want.min(cp.out_len as usize);
    let out = inflate_upto(index, blob, &cp, want, Some(ensure)).map_err(damaged)?;
    if want == cp.out_len as usize && index.has_crcs() && zlib::crc32(0, &out) != cp.crc {
        return Err(damaged("checksum mismatch: the blob is damaged".into()));
    }
    Ok(out)
}

fn inflate_upto(
    index: &LayerIndex,
    blob: &File,
    cp: &Checkpoint,
    want: usize,
    ensure: Option<Ensure<'_>>,
) -> Result<Vec<u8>, String> {
    let mut inf = start_inflater(index, blob, cp, ensure)?;
    let mut cursor = BlobCursor::new(blob, cp.in_offset);
    cursor.ensure = ensure;
    let mut out = Vec::new();
    inflate_into(&mut inf, &mut cursor, &mut out, 0, want)?;
    Ok(out)
}

/// An inflater ready to decode the span of checkpoint `cp` from `cp.in_offset`.
fn start_inflater(
    index: &LayerIndex,
    blob: &File,
    cp: &Checkpoint,
    ensure: Option<Ensure<'_>>,
) -> Result<Inflater, String> {
    if cp.window_len == 0 {
        return Inflater::new(zlib::GZIP);
    }
    let mut inf = Inflater::new(zlib::RAW)?;
    if cp.bits > 7 {
        return Err(format!("a bit offset of {} within a byte", cp.bits));
    }
    if cp.bits > 0 {
        let mut b = [0u8; 1];
        let at = cp
            .in_offset
            .checked_sub(1)
            .ok_or("a bit offset before the blob")?;
        if let Some(ensure) = ensure {
            ensure(at, 1).map_err(|e| e.to_string())?;
        }
        blob.read_exact_at(&mut b, at).map_err(|e| e.to_string())?;
        inf.prime(cp.bits as i32, (b[0] >> (8 - cp.bits)) as i32)?;
    }
    let deflated = index.window(cp).map_err(|e| e.to_string())?;
    let mut window = Vec::with_capacity(zlib::WINDOW);
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_end(&mut window)
        .map_err(|e| format!("stored window: {e}"))?;
    inf.set_dictionary(&window)?;
    Ok(inf)
}

/// Inflates into `out`, which holds `produced` bytes of the span already,
/// until it holds `want`; `out` is left exactly that long.
fn inflate_into(
    inf: &mut Inflater,
    cursor: &mut BlobCursor<'_>,
    out: &mut Vec<u8>,
    mut produced: usize,
    want: usize,
) -> Result<(), String> {
    let (in_from, out_from) = (cursor.position(), produced);
    while produced < want {
        grow_span(out, produced, want);
        // At the ratio so far, an eighth more: what a lazy read fetches next.
        let (read, made) = (cursor.position() - in_from, (produced - out_from) as u64);
        if let Some(left) = ((want - produced) as u64)
            .saturating_mul(read)
            .checked_div(made)
        {
            cursor.expect = usize::try_from(left.saturating_add(left / 8)).unwrap_or(usize::MAX);
        }
        let input = cursor.fill().map_err(|e| e.to_string())?;
        let at_eof = input.is_empty();
        let (c, p, status) = inf.inflate(input, &mut out[produced..], libz_rs_sys::Z_NO_FLUSH)?;
        cursor.consume(c);
        produced += p;
        if status == Status::StreamEnd && produced < want {
            return Err("gzip member ends inside the span".into());
        }
        if c == 0 && p == 0 && at_eof {
            return Err("blob ends inside the span".into());
        }
    }
    out.truncate(produced);
    Ok(())
}

/// Where the last partial decode of a gzip span stopped: the inflater after
/// `produced` bytes of span `span`, and the compressed offset it reads next.
pub struct GzipCursor {
    inf: Inflater,
    span: u32,
    produced: usize,
    in_offset: u64,
}

/// Gzip span `i` decoded as far as its first `want` bytes (all of it at
/// most), extending `have`, a prefix of it decoded before: continued from
/// `saved` when that stopped at the end of `have`, else decoded again from
/// the checkpoint. Returns the prefix and the bytes inflated for it; a
/// whole span is checked against its CRC (a prefix relies on the inflater
/// noticing damage, as a lazy read's does). `saved` is left where this
/// decode stopped, when it stopped inside the span.
pub fn inflate_to(
    index: &LayerIndex,
    blob: &File,
    i: u32,
    have: Option<&[u8]>,
    want: usize,
    saved: &mut Option<GzipCursor>,
) -> Result<(Vec<u8>, u64), SpanError> {
    let cp = index.checkpoint(i);
    let damaged = |why: String| SpanError::Damaged {
        offset: cp.out_offset,
        why,
    };
    let full = cp.out_len as usize;
    let want = want.min(full);
    let (mut inf, mut cursor, mut out, from) = match (saved.take(), have) {
        (Some(c), Some(h)) if c.span == i && c.produced == h.len() && h.len() < want => {
            let mut out = Vec::with_capacity(want);
            out.extend_from_slice(h);
            (c.inf, BlobCursor::new(blob, c.in_offset), out, h.len())
        }
        _ => (
            start_inflater(index, blob, &cp, None).map_err(damaged)?,
            BlobCursor::new(blob, cp.in_offset),
            Vec::new(),
            0,
        ),
    };
    inflate_into(&mut inf, &mut cursor, &mut out, from, want).map_err(damaged)?;
    if out.len() == full {
        if index.has_crcs() && zlib::crc32(0, &out) != cp.crc {
            return Err(damaged("checksum mismatch: the blob is damaged".into()));
        }
    } else {
        *saved = Some(GzipCursor {
            inf,
            span: i,
            produced: out.len(),
            in_offset: cursor.position(),
        });
    }
    if out.capacity() > out.len() + out.len() / 8 {
        out.shrink_to_fit();
    }
    Ok((out, (want - from) as u64))
}

/// Where a zstd decode of a layer stopped: the decoder, positioned before
/// span `next_span`, and the compressed offset it reads next. A sequential
/// read continues from it instead of decoding the frame again from its start.
pub struct ZstdCursor {
    dctx: zstd::zstd_safe::DCtx<'static>,
    next_span: u32,
    in_offset: u64,
}

fn zstd_spans(
    index: &LayerIndex,
    blob: &File,
    i: u32,
    saved: &mut Option<ZstdCursor>,
) -> Result<Vec<(u32, Vec<u8>)>, String> {
    let mut start = i;
    while !index.checkpoint(start).restart {
        if start == 0 {
            return Err("no frame start before the span".into());
        }
        start -= 1;
    }
    let (mut dctx, from, in_offset) = match saved.take() {
        Some(c) if c.next_span >= start && c.next_span <= i => (c.dctx, c.next_span, c.in_offset),
        _ => {
            let mut dctx = zstd::zstd_safe::DCtx::create();
            dctx.set_parameter(zstd::zstd_safe::DParameter::WindowLogMax(31))
                .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
            (dctx, start, index.checkpoint(start).in_offset)
        }
    };
    let mut cursor = BlobCursor::new(blob, in_offset);
    let mut out = Vec::new();
    for id in from..=i {
        let cp = index.checkpoint(id);
        let want = cp.out_len as usize;
        let mut data = Vec::new();
        let mut produced = 0;
        while produced < want {
            grow_span(&mut data, produced, want);
            let input = cursor.fill().map_err(|e| e.to_string())?;
            if input.is_empty() {
                return Err("blob ends inside the span".into());
            }
            let mut inb = zstd::zstd_safe::InBuffer::around(input);
            let mut outb = zstd::zstd_safe::OutBuffer::around(&mut data[produced..]);
            dctx.decompress_stream(&mut outb, &mut inb)
                .map_err(|c| zstd::zstd_safe::get_error_name(c).to_string())?;
            let (c, p) = (inb.pos(), outb.pos());
            cursor.consume(c);
            produced += p;
        }
        out.push((id, data));
    }
    *saved = Some(ZstdCursor {
        dctx,
        next_span: i + 1,
        in_offset: cursor.position(),
    });
    Ok(out)
}
