//! eStargz: gzip layers that a lazy reader can open from their end. Every
//! regular file's data starts a new gzip member (large files a member per
//! 4 MiB chunk), a table of contents (`stargz.index.json`, a tar entry in
//! its own member) lists each entry with the compressed offset of its
//! chunks and their sha256, and a 51-byte footer (an empty gzip member whose
//! extra field holds the TOC's offset) ends the blob. Any gzip reader sees
//! one ordinary tar stream, whose only extra member is the TOC.
//!
//! ```text
//! [gz: headers of entries before f][gz: f chunk 0][gz: f chunk 1 + pad + next headers]...
//! [gz: tar header "stargz.index.json" + TOC JSON + end blocks][gz footer: 51 bytes]
//! ```
//!
//! Writing ([`write`]) keeps every byte of the source tar (headers as they
//! were, PAX and GNU extensions included) and only moves member boundaries,
//! so the files, their metadata and their order are the source's; the
//! diff_id differs from the plain layer's by the TOC entry. Reading
//! ([`parse_footer`], [`parse_toc`], [`Toc::chunks`], [`verify_chunk`])
//! works on byte ranges fetched from anywhere and checks everything it is
//! given: the TOC against the descriptor's TOC digest, each chunk against
//! its own digest.

use super::tar::{Kind, TarEntry, TarReader};
use crate::oci::{Digest, Sha256Writer};
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// The layer descriptor's annotation with the sha256 of the TOC JSON.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The layer descriptor's annotation with the size of the uncompressed stream.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
pub const TOC_NAME: &str = "stargz.index.json";
/// Files before this entry are the ones a workload reads first.
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
/// Marks an image that has no prefetch list.
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
pub const FOOTER_SIZE: u64 = 51;
/// Chunk size of large files, as stargz-snapshotter's writer uses.
pub const CHUNK_SIZE: u64 = 4 << 20;
/// Bound on the TOC's JSON: a TOC entry is ~200 bytes, so this is millions
/// of files, and a hostile footer cannot make a reader allocate more.
pub const MAX_TOC: u64 = 256 << 20;

pub use super::error::EstargzError;

/// The TOC, as stargz-snapshotter writes and reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Toc {
    pub version: u32,
    #[serde(default)]
    pub entries: Vec<TocEntry>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// One TOC entry: a tar member (`dir`, `reg`, `symlink`, `hardlink`, `char`,
/// `block`, `fifo`) or a further `chunk` of the regular file before it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub modtime: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mode: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uid: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub gid: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group_name: String,
    /// Compressed offset of the gzip member holding this entry's (chunk's) data.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub offset: u64,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dev_major: u32,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub dev_minor: u32,
    /// Values base64, as Go encodes `[]byte`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
    /// sha256 of the whole file (`reg` only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_offset: u64,
    /// 0: up to the end of the file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunk_size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chunk_digest: String,
}

/// One chunk of a regular file, located in the blob: its member is the
/// compressed bytes `[start, end)`, whose inflated stream begins with the
/// chunk's `size` bytes of file data at `file_offset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The entry's name as cleaned (`a/b`, no leading `./` or `/`).
    pub path: String,
    pub file_offset: u64,
    pub size: u64,
    pub start: u64,
    pub end: u64,
    pub digest: Digest,
    /// Before the prefetch landmark: read first.
    pub prefetch: bool,
}

/// `./a/b/`, `/a/b` and `a/b` name the same entry.
pub fn clean_name(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The TOC's offset, from the blob's last [`FOOTER_SIZE`] bytes.
pub fn parse_footer(footer: &[u8]) -> Result<u64, EstargzError> {
    let f = footer;
    if f.len() != FOOTER_SIZE as usize {
        return Err(EstargzError::Footer("not 51 bytes"));
    }
    if f[0..4] != [0x1f, 0x8b, 8, 4] {
        return Err(EstargzError::Footer(
            "not a gzip header with an extra field",
        ));
    }
    if f[10..16] != [26, 0, b'S', b'G', 22, 0] {
        return Err(EstargzError::Footer("no STARGZ extra field"));
    }
    if &f[32..38] != b"STARGZ" {
        return Err(EstargzError::Footer("no STARGZ magic"));
    }
    let hex = std::str::from_utf8(&f[16..32]).map_err(|_| EstargzError::Footer("bad offset"))?;
    u64::from_str_radix(hex, 16).map_err(|_| EstargzError::Footer("bad offset"))
}

fn footer_bytes(toc_offset: u64) -> Vec<u8> {
    let mut f = vec![
        0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 26, 0, b'S', b'G', 22, 0,
    ];
    f.extend_from_slice(format!("{toc_offset:016x}STARGZ").as_bytes());
    // An empty final stored block, then CRC32 and ISIZE of nothing.
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    debug_assert_eq!(f.len() as u64, FOOTER_SIZE);
    f
}

/// Parses the TOC member (the blob's bytes from the footer's offset to the
/// footer): its tar header must name `stargz.index.json`; the JSON's
/// sha256 must be `expected` when the descriptor gives one. Returns the TOC
/// and the JSON's digest.
pub fn parse_toc(member: &[u8], expected: Option<&Digest>) -> Result<(Toc, Digest), EstargzError> {
    let bad = |why: &str| EstargzError::Toc(why.to_string());
    let mut gz = flate2::read::GzDecoder::new(member);
    let mut hdr = [0u8; 512];
    gz.read_exact(&mut hdr)
        .map_err(|e| EstargzError::Toc(format!("reading its tar header: {e}")))?;
    let name_end = hdr[..100].iter().position(|&b| b == 0).unwrap_or(100);
    if clean_name(&String::from_utf8_lossy(&hdr[..name_end])) != TOC_NAME {
        return Err(bad(
            "the member at the footer's offset is not stargz.index.json",
        ));
    }
    let size = octal(&hdr[124..136]).ok_or_else(|| bad("bad size in its tar header"))?;
    if size > MAX_TOC {
        return Err(bad("larger than 256 MiB"));
    }
    // Grows with what inflates, not with the size a header claims.
    let mut json = Vec::with_capacity(size.min(1 << 20) as usize);
    gz.take(size)
        .read_to_end(&mut json)
        .map_err(|e| EstargzError::Toc(format!("inflating: {e}")))?;
    if json.len() as u64 != size {
        return Err(bad("shorter than its tar header says"));
    }
    let actual = Digest::of(&json);
    if let Some(expected) = expected
        && *expected != actual
    {
        return Err(EstargzError::TocDigest {
            expected: *expected,
            actual,
        });
    }
    let toc: Toc = serde_json::from_slice(&json).map_err(|e| EstargzError::Toc(e.to_string()))?;
    Ok((toc, actual))
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).ok()
}

impl Toc {
    /// Every chunk of every regular file, in blob order, each checked: its
    /// member lies before the TOC, its range lies inside the file, and
    /// chunks of a file tile it without gaps. Chunks before
    /// `.prefetch.landmark` are marked `prefetch`.
    pub fn chunks(&self, toc_offset: u64) -> Result<Vec<Chunk>, EstargzError> {
        let bad = |name: &str, why: &str| EstargzError::Toc(format!("{name:?}: {why}"));
        let landmark = self
            .entries
            .iter()
            .find(|e| clean_name(&e.name) == PREFETCH_LANDMARK)
            .map(|e| e.offset);
        // Offsets of all members that start data, to find where each ends.
        let mut starts: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| e.offset > 0)
            .map(|e| e.offset)
            .collect();
        starts.push(toc_offset);
        starts.sort_unstable();
        starts.dedup();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        let mut chunks = Vec::new();
        let mut expect_next: HashMap<String, u64> = HashMap::new();
        for e in &self.entries {
            let name = clean_name(&e.name);
            let file_size = match e.kind.as_str() {
                "reg" => {
                    sizes.insert(name.clone(), e.size);
                    expect_next.insert(name.clone(), 0);
                    if e.size == 0 {
                        continue;
                    }
                    e.size
                }
                "chunk" => *sizes
                    .get(&name)
                    .ok_or_else(|| bad(&name, "a chunk of no regular file"))?,
                _ => continue,
            };
            let next = expect_next.get(&name).copied().unwrap_or(0);
            if e.chunk_offset != next || next >= file_size {
                return Err(bad(&name, "chunks do not tile the file"));
            }
            let size = match e.chunk_size {
                0 => file_size - e.chunk_offset,
                n if n <= file_size - e.chunk_offset => n,
                _ => return Err(bad(&name, "a chunk runs past the end of the file")),
            };
            expect_next.insert(name.clone(), e.chunk_offset + size);
            if e.offset == 0 || e.offset >= toc_offset {
                return Err(bad(&name, "a chunk's offset is outside the blob's data"));
            }
            let end = starts
                .iter()
                .find(|&&s| s > e.offset)
                .copied()
                .unwrap_or(toc_offset);
            let digest = e
                .chunk_digest
                .parse()
                .map_err(|_| bad(&name, "a chunk has no valid chunkDigest"))?;
            chunks.push(Chunk {
                prefetch: landmark.is_some_and(|l| e.offset < l),
                path: name,
                file_offset: e.chunk_offset,
                size,
                start: e.offset,
                end,
                digest,
            });
        }
        for (name, next) in &expect_next {
            if sizes.get(name).is_some_and(|&s| s != 0 && *next != s) {
                return Err(bad(name, "chunks do not cover the whole file"));
            }
        }
        chunks.sort_by_key(|c| c.start);
        Ok(chunks)
    }
}

/// The chunk's file data from its member's compressed bytes (the blob's
/// `[chunk.start, chunk.end)`), checked against the chunk's digest.
pub fn verify_chunk(member: &[u8], chunk: &Chunk) -> Result<Vec<u8>, EstargzError> {
    let fail = |why: String| EstargzError::Chunk {
        path: chunk.path.clone(),
        offset: chunk.file_offset,
        why,
    };
    let mut data = Vec::with_capacity(chunk.size.min(1 << 20) as usize);
    flate2::read::GzDecoder::new(member)
        .take(chunk.size)
        .read_to_end(&mut data)
        .map_err(|e| fail(format!("inflating: {e}")))?;
    if data.len() as u64 != chunk.size {
        return Err(fail(format!(
            "inflates to {} bytes, the TOC says {}",
            data.len(),
            chunk.size
        )));
    }
    let actual = Digest::of(&data);
    if actual != chunk.digest {
        return Err(EstargzError::ChunkDigest {
            path: chunk.path.clone(),
            offset: chunk.file_offset,
            expected: chunk.digest,
            actual,
        });
    }
    Ok(data)
}

/// What [`write`] made.
#[derive(Clone, Debug)]
pub struct Written {
    /// sha256 of the TOC JSON: the descriptor's [`TOC_DIGEST_ANNOTATION`].
    pub toc_digest: Digest,
    pub toc_offset: u64,
    /// The blob's size.
    pub size: u64,
    /// sha256 and size of the uncompressed stream (the TOC entry included).
    pub diff_id: Digest,
    pub uncompressed_size: u64,
}

/// Gzip members written one after another, each compressed in memory (a
/// member holds at most one chunk plus tar headers).
struct Members<W: Write> {
    out: W,
    written: u64,
    open: Option<GzEncoder<Vec<u8>>>,
    diff: Sha256Writer,
}

impl<W: Write> Members<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.diff.update(data);
        let gz = self.open.get_or_insert_with(|| {
            flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::new(6))
        });
        gz.write_all(data)
    }
    /// Ends the open member; the next write starts one at `self.written`.
    fn close(&mut self) -> io::Result<()> {
        if let Some(gz) = self.open.take() {
            let bytes = gz.finish()?;
            self.out.write_all(&bytes)?;
            self.written += bytes.len() as u64;
        }
        Ok(())
    }
}

/// Copies bytes `[from, to)` of the source tar into the members.
fn copy_range<R: Read + Seek, W: Write>(
    src: &mut R,
    from: u64,
    to: u64,
    m: &mut Members<W>,
) -> Result<(), EstargzError> {
    src.seek(SeekFrom::Start(from))?;
    let mut left = to.saturating_sub(from);
    let mut buf = vec![0u8; (left.min(1 << 20)) as usize];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n])?;
        m.write(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

struct Member {
    toc: TocEntry,
    /// Where the member's headers begin, its data begins and it ends (padding included).
    data_offset: u64,
    end: u64,
    /// Regular files: the data's length.
    data_len: u64,
}

/// Writes the uncompressed tar `src` (read twice: once for its headers,
/// once for its bytes) to `out` as eStargz.
pub fn write<R: Read + Seek, W: Write>(mut src: R, out: W) -> Result<Written, EstargzError> {
    let members = scan(&mut src)?;
    let mut m = Members {
        out,
        written: 0,
        open: None,
        diff: Sha256Writer::new(),
    };
    let mut toc = Toc {
        version: 1,
        entries: Vec::new(),
    };
    let mut pos = 0u64;
    for member in members {
        copy_range(&mut src, pos, member.data_offset, &mut m)?;
        pos = member.data_offset;
        let mut entry = member.toc;
        if entry.kind != "reg" || member.data_len == 0 {
            toc.entries.push(entry);
            continue;
        }
        let mut file_digest = Sha256Writer::new();
        let first = toc.entries.len();
        let mut done = 0u64;
        while done < member.data_len {
            m.close()?;
            let n = CHUNK_SIZE.min(member.data_len - done);
            let mut chunk = if done == 0 {
                std::mem::take(&mut entry)
            } else {
                TocEntry {
                    name: toc.entries[first].name.clone(),
                    kind: "chunk".into(),
                    ..Default::default()
                }
            };
            chunk.offset = m.written;
            chunk.chunk_offset = done;
            chunk.chunk_size = if n == CHUNK_SIZE && done + n < member.data_len {
                n
            } else {
                0
            };
            src.seek(SeekFrom::Start(pos))?;
            let mut data = vec![0u8; n as usize];
            src.read_exact(&mut data)?;
            m.write(&data)?;
            file_digest.update(&data);
            chunk.chunk_digest = Digest::of(&data).to_string();
            toc.entries.push(chunk);
            pos += n;
            done += n;
        }
        toc.entries[first].digest = file_digest.finish().to_string();
        copy_range(&mut src, pos, member.end, &mut m)?;
        pos = member.end;
    }
    // The source's end-of-archive blocks give way to the TOC entry's own.
    m.close()?;
    let toc_offset = m.written;
    let json = serde_json::to_vec(&toc).map_err(|e| EstargzError::Toc(e.to_string()))?;
    m.write(&ustar_header(TOC_NAME, json.len() as u64))?;
    m.write(&json)?;
    let pad = super::tar::padded(json.len() as u64) - json.len() as u64;
    m.write(&vec![0u8; pad as usize + 1024])?;
    m.close()?;
    m.out.write_all(&footer_bytes(toc_offset))?;
    m.out.flush()?;
    let uncompressed_size = m.diff.len();
    Ok(Written {
        toc_digest: Digest::of(&json),
        toc_offset,
        size: m.written + FOOTER_SIZE,
        diff_id: m.diff.finish(),
        uncompressed_size,
    })
}

/// The source's members with their TOC entries (offsets still unset).
fn scan<R: Read + Seek>(src: &mut R) -> Result<Vec<Member>, EstargzError> {
    src.seek(SeekFrom::Start(0))?;
    let mut tar = TarReader::new(io::BufReader::with_capacity(1 << 20, &mut *src));
    let mut out = Vec::new();
    while let Some(e) = tar.next_entry()? {
        let name = String::from_utf8_lossy(&e.path).into_owned();
        if e.sparse.is_some() {
            return Err(EstargzError::Sparse { path: name });
        }
        let end = tar.position();
        let kind = match e.kind {
            Kind::Regular => "reg",
            Kind::HardLink => "hardlink",
            Kind::Symlink => "symlink",
            Kind::CharDevice => "char",
            Kind::BlockDevice => "block",
            Kind::Directory => "dir",
            Kind::Fifo => "fifo",
        };
        let data_len = if e.kind == Kind::Regular { e.size } else { 0 };
        let xattrs = e
            .xattrs
            .iter()
            .map(|(k, v)| {
                use base64::Engine as _;
                (
                    String::from_utf8_lossy(k).into_owned(),
                    base64::engine::general_purpose::STANDARD.encode(v),
                )
            })
            .collect();
        out.push(Member {
            toc: TocEntry {
                name,
                kind: kind.into(),
                size: data_len,
                modtime: crate::oci::time::format_rfc3339(e.mtime),
                link_name: String::from_utf8_lossy(&e.link).into_owned(),
                mode: e.mode as u64,
                uid: e.uid,
                gid: e.gid,
                dev_major: e.dev_major,
                dev_minor: e.dev_minor,
                xattrs,
                ..Default::default()
            },
            data_offset: e.data_offset,
            end,
            data_len,
        });
    }
    Ok(out)
}

/// A plain ustar header for a regular file owned by root, mode 0644.
fn ustar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let field = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    field(&mut h, 100, 8, 0o644);
    field(&mut h, 108, 8, 0);
    field(&mut h, 116, 8, 0);
    field(&mut h, 124, 12, size);
    field(&mut h, 136, 12, 0);
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// What the bytes of an eStargz layer around its chunks hold, fetched by
/// range: `head` the blob's bytes before the first chunk (tar headers),
/// `toc_member` those from the TOC's offset to the footer, and the footer.
pub struct TocParts<'a> {
    pub toc: &'a Toc,
    pub toc_offset: u64,
    pub head: &'a [u8],
    pub toc_member: &'a [u8],
    pub footer: &'a [u8],
}

/// The layerfs index of an eStargz layer, from its TOC alone (the layer
/// need not be local). The index's uncompressed stream is not the tar's,
/// whose offsets a TOC does not give: it is the chunks one after another,
/// each a checkpoint at its gzip member (no window needed, no CRC known),
/// then the TOC file's member. Its blob spans are the chunks, verified by
/// their digests, and the bytes around them (head, TOC, footer) by the
/// sha256 of what `parts` holds, so a lazy read can fetch the whole layer.
pub fn index_from_toc(
    parts: &TocParts<'_>,
    meta: &super::index::IndexMeta,
) -> Result<Vec<u8>, super::LayerError> {
    use super::index::{Checkpoint, IndexBuilder};
    use crate::store::{BlobSpan, SpanTable};
    let toc_err = |why: String| super::LayerError::Estargz(Box::new(EstargzError::Toc(why)));
    let chunks = parts
        .toc
        .chunks(parts.toc_offset)
        .map_err(|e| super::LayerError::Estargz(Box::new(e)))?;
    let first = chunks.first().map_or(parts.toc_offset, |c| c.start);
    let footer_at = meta.blob_size.saturating_sub(FOOTER_SIZE);
    if parts.head.len() as u64 != first
        || parts.toc_member.len() as u64 != footer_at.saturating_sub(parts.toc_offset)
        || parts.footer.len() as u64 != FOOTER_SIZE
    {
        return Err(toc_err(
            "the bytes around the chunks do not fit the blob".into(),
        ));
    }
    let mut checkpoints = Vec::with_capacity(chunks.len() + 1);
    let mut spans = Vec::with_capacity(chunks.len() + 3);
    let mut data_at: HashMap<&str, u64> = HashMap::new();
    let mut pos = 0u64;
    let checkpoint = |out_offset: u64, out_len: u64, in_offset: u64| {
        let out_len =
            u32::try_from(out_len).map_err(|_| toc_err("a chunk larger than 4 GiB".into()))?;
        Ok::<_, super::LayerError>(Checkpoint {
            out_offset,
            out_len,
            crc: 0,
            in_offset,
            bits: 0,
            restart: true,
            window_offset: 0,
            window_len: 0,
        })
    };
    for (i, c) in chunks.iter().enumerate() {
        // A span runs to the next chunk, over any member between (none in
        // the layers seen): the spans then tile the blob, and a prefetch
        // can fetch all of it. Inflating checks the chunk's member only.
        let end = chunks.get(i + 1).map_or(parts.toc_offset, |n| n.start);
        // A file's chunks must follow each other, so its data is one run.
        let start = *data_at.entry(&c.path).or_insert(pos);
        if start + c.file_offset != pos {
            return Err(toc_err(format!(
                "{:?}: its chunks are not in order",
                c.path
            )));
        }
        checkpoints.push(checkpoint(pos, c.size, c.start)?);
        spans.push((
            BlobSpan {
                offset: c.start,
                len: end.saturating_sub(c.start),
                digest: c.digest,
            },
            Some(c.size),
        ));
        pos += c.size;
    }

    // The TOC is a file of the tar too: its member is its 512-byte header
    // and its data, a chunk of its own.
    let mut toc_file = Vec::new();
    flate2::read::GzDecoder::new(parts.toc_member)
        .read_to_end(&mut toc_file)
        .map_err(|e| toc_err(format!("inflating: {e}")))?;
    let field = |r: std::ops::Range<usize>| toc_file.get(r).and_then(octal);
    let toc_len = field(124..136).ok_or_else(|| toc_err("bad tar header".into()))?;
    let chunk_len = 512 + toc_len;
    let toc_bytes = toc_file
        .get(..chunk_len as usize)
        .ok_or_else(|| toc_err("shorter than its tar header says".into()))?;
    checkpoints.push(checkpoint(pos, chunk_len, parts.toc_offset)?);
    spans.push((
        BlobSpan {
            offset: parts.toc_offset,
            len: parts.toc_member.len() as u64,
            digest: Digest::of(toc_bytes),
        },
        Some(chunk_len),
    ));
    let toc_entry = TarEntry {
        path: TOC_NAME.as_bytes().to_vec(),
        kind: Kind::Regular,
        mode: field(100..108).unwrap_or(0o644) as u32,
        uid: field(108..116).unwrap_or(0),
        gid: field(116..124).unwrap_or(0),
        mtime: field(136..148).unwrap_or(0) as i64,
        mtime_nsec: 0,
        size: toc_len,
        data_offset: pos + 512,
        link: Vec::new(),
        dev_major: 0,
        dev_minor: 0,
        xattrs: Vec::new(),
        sparse: None,
    };
    for (offset, bytes) in [(0, parts.head), (footer_at, parts.footer)] {
        if !bytes.is_empty() {
            let digest = Digest::of(bytes);
            let len = bytes.len() as u64;
            spans.push((
                BlobSpan {
                    offset,
                    len,
                    digest,
                },
                None,
            ));
        }
    }

    let mut builder = IndexBuilder::new();
    for e in &parts.toc.entries {
        let kind = match e.kind.as_str() {
            "dir" => Kind::Directory,
            "reg" => Kind::Regular,
            "symlink" => Kind::Symlink,
            "hardlink" => Kind::HardLink,
            "char" => Kind::CharDevice,
            "block" => Kind::BlockDevice,
            "fifo" => Kind::Fifo,
            "chunk" => continue,
            other => return Err(toc_err(format!("{:?}: unknown type {other:?}", e.name))),
        };
        let name = clean_name(&e.name);
        let data_offset = match kind {
            Kind::Regular if e.size > 0 => *data_at
                .get(name.as_str())
                .ok_or_else(|| toc_err(format!("{name:?}: no chunk")))?,
            _ => 0,
        };
        let mut xattrs = Vec::with_capacity(e.xattrs.len());
        for (k, v) in &e.xattrs {
            use base64::Engine as _;
            let v = base64::engine::general_purpose::STANDARD
                .decode(v)
                .map_err(|_| toc_err(format!("{name:?}: an xattr value is not base64")))?;
            xattrs.push((k.as_bytes().to_vec(), v));
        }
        let mtime = match e.modtime.as_str() {
            "" => 0,
            t => crate::oci::time::parse_rfc3339(t)
                .ok_or_else(|| toc_err(format!("{name:?}: bad modtime")))?,
        };
        super::ingest::add_entry(
            &mut builder,
            TarEntry {
                path: e.name.as_bytes().to_vec(),
                kind,
                mode: (e.mode & 0o7777) as u32,
                uid: e.uid,
                gid: e.gid,
                mtime,
                mtime_nsec: 0,
                size: if kind == Kind::Regular { e.size } else { 0 },
                data_offset,
                link: e.link_name.as_bytes().to_vec(),
                dev_major: e.dev_major,
                dev_minor: e.dev_minor,
                xattrs,
                sparse: None,
            },
        )?;
    }
    super::ingest::add_entry(&mut builder, toc_entry)?;
    let spans = SpanTable::chunks(spans).map_err(toc_err)?;
    builder.finish(meta, &checkpoints, &[], &spans)
}

#[cfg(test)]
mod tests;
