//! The layer index: a table of every entry of one layer (path, kind, owner,
//! mode, mtime, size, link target, xattrs, hardlink target, whiteout and
//! opaque flags, and the offset of its data in the uncompressed stream) plus
//! the checkpoints that let any byte range be decoded from the nearest one.
//!
//! It is derived data, written beside the blob and mapped, never read whole,
//! so opening it costs the same for any layer size. A sha256 over all of it
//! but the inflate windows, and the layer's digest in its header, make a
//! damaged or foreign index detectable when it is opened; it is then rebuilt
//! from the blob. The windows, most of the file, are checked only when a
//! span decode uses one: each `WINDOW_BLOCK` of them has its sha256 in the
//! last section (covered by the file's sha256), and a window is read with
//! pread and checked block by block, so opening an index does not read them
//! and they take no room in a mount's memory. A damaged window fails the
//! reads that need it with an error naming the index (`fsck` rebuilds it);
//! it must never pass for a damaged blob, nor give wrong bytes.
//!
//! ```text
//! header (192 bytes)
//! entries      n_entries × 48 bytes (see `Writer::record`), grouped by parent
//!              directory, each group sorted by name (a whiteout before a real
//!              entry of the same name); entry 0 is the layer's root directory
//! dirs         n_dirs × 24 bytes, sorted by full path: path, own entry,
//!              range of child entries, flags (opaque)
//! groups       n_groups × 8: range into `members` (hardlink groups)
//! members      u32 entry ids
//! externals    u32 ids of hard links whose target is in a lower layer
//! sparse       n_sparse × 16: (offset in file, length) extents
//! checkpoints  n_checkpoints × 40
//! strings      names, dir paths, link targets
//! extras       per entry with any: what its record has no room for (hardlink
//!              group, sparse extents, big sizes, odd mtimes, xattrs)
//! windows      deflated 32 KiB inflate windows of gzip checkpoints
//! blob spans   n_blob_spans × 48: (offset, len, sha256) of spans of the
//!              compressed blob (BLOB_SPAN bytes each when ingest made them;
//!              eStargz chunks when made from a TOC), so a range fetched from
//!              a registry is verified before it is stored or served
//! window sums  ceil(windows / WINDOW_BLOCK) × 32: sha256 of each block of
//!              the windows section
//! ```
//!
//! Header byte 13 = 1 marks an index made from an eStargz TOC: its spans
//! that start a checkpoint are chunks, verified by the chunk's digest of
//! inflated bytes, and its checkpoints carry no CRC.

use super::LayerError;
use super::compression::Compression;
use super::error::short_name;
use crate::oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LFSIDX\0\x01";
/// 2: the checksum covers the header and the windows.
/// 3: the sha256 of each span of the compressed blob (lazy images).
/// 4: the checksum leaves out the windows; each block of them has its own.
/// 5: entry records of 48 bytes, rare fields in per-entry extras.
const VERSION: u32 = 5;
/// Bytes of the windows section per sha256 in the window sums.
const WINDOW_BLOCK: usize = 16 << 10;
/// Bytes of compressed blob per span digest: the unit a lazy read fetches
/// (a read rounds out to it at both ends). The spans are listed with their
/// offsets and lengths, so indexes made with another size read the same.
pub const BLOB_SPAN: u64 = 32 << 10;
const BLOB_SPAN_LEN: usize = 48;
/// Where the header holds the sha256 of the file but its windows (these
/// bytes as zeros).
const HASH_AT: std::ops::Range<usize> = 152..184;
const HEADER_LEN: usize = 192;
const ENTRY_LEN: usize = 48;
const DIR_LEN: usize = 24;
const GROUP_LEN: usize = 8;
const SPARSE_LEN: usize = 16;
const CHECKPOINT_LEN: usize = 40;
pub const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    Regular,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    Fifo,
    Socket,
    /// `.wh.NAME`: hides NAME in lower layers.
    Whiteout,
    /// A hard link; `target()` is the entry it names in this layer, or NONE
    /// when the target lives in a lower layer (`link()` holds its path).
    HardLink,
}

impl EntryKind {
    fn to_u8(self) -> u8 {
        match self {
            EntryKind::Regular => 1,
            EntryKind::Directory => 2,
            EntryKind::Symlink => 3,
            EntryKind::CharDevice => 4,
            EntryKind::BlockDevice => 5,
            EntryKind::Fifo => 6,
            EntryKind::Socket => 7,
            EntryKind::Whiteout => 8,
            EntryKind::HardLink => 9,
        }
    }
    fn from_u8(v: u8) -> EntryKind {
        match v {
            2 => EntryKind::Directory,
            3 => EntryKind::Symlink,
            4 => EntryKind::CharDevice,
            5 => EntryKind::BlockDevice,
            6 => EntryKind::Fifo,
            7 => EntryKind::Socket,
            8 => EntryKind::Whiteout,
            9 => EntryKind::HardLink,
            _ => EntryKind::Regular,
        }
    }
}

pub const FLAG_IMPLICIT: u8 = 1;
const DIR_OPAQUE: u32 = 1;
const CP_RESTART: u8 = 1;
const CP_WINDOW: u8 = 2;

/// Where decoding can start: the uncompressed span `[out_offset, out_offset+out_len)`
/// and its CRC32, and for gzip the compressed position and inflate window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub out_offset: u64,
    pub out_len: u32,
    pub crc: u32,
    pub in_offset: u64,
    /// Bits of the byte before `in_offset` that belong to this span (gzip).
    pub bits: u8,
    /// Decoding can begin here: a gzip member or zstd frame starts, or a
    /// window is stored; otherwise decoding starts at an earlier checkpoint.
    pub restart: bool,
    pub window_offset: u64,
    pub window_len: u32,
}

/// An entry as the builder collects it.
#[derive(Clone, Debug)]
pub struct NewEntry {
    pub path: Vec<u8>,
    pub kind: EntryKind,
    pub flags: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub size: u64,
    pub data_offset: u64,
    pub link: Vec<u8>,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub sparse: Vec<(u64, u64)>,
}

impl NewEntry {
    fn implicit_dir(path: Vec<u8>) -> NewEntry {
        NewEntry {
            path,
            kind: EntryKind::Directory,
            flags: FLAG_IMPLICIT,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            size: 0,
            data_offset: 0,
            link: Vec::new(),
            rdev_major: 0,
            rdev_minor: 0,
            xattrs: Vec::new(),
            sparse: Vec::new(),
        }
    }
}

/// One directory of the layer as the builder sees it: a trie node, so a
/// path is found or added in one walk over its bytes and a parent shared by
/// many entries exists once, however deep. Its name is in the builder's
/// name arena and its children are a list; a node is found by the hash of
/// (parent, name). Only directories are nodes: every other entry is a
/// record in `Leaves`, sorted on disk, so what the builder holds grows with
/// the directories, not the files.
struct Node {
    parent: u32,
    name_off: u32,
    name_len: u16,
    opaque: bool,
    /// Replaced by a non-directory: never found again, nor anything under it.
    detached: bool,
    /// Made by a path through it rather than by its own directory entry;
    /// a non-directory listed at its path before then is an error.
    implicit: bool,
    /// The directory entry at this path (the last one listed wins).
    real: u32,
    first_child: u32,
    next_sibling: u32,
    /// The next node whose (parent, name) hashes alike.
    next_same_hash: u32,
}

impl Node {
    fn new(parent: u32, name_off: u32, name_len: u16, implicit: bool) -> Node {
        Node {
            parent,
            name_off,
            name_len,
            opaque: false,
            detached: false,
            implicit,
            real: NONE,
            first_child: NONE,
            next_sibling: NONE,
            next_same_hash: NONE,
        }
    }
}

const ROOT_NODE: u32 = 0;

/// Bytes of leaf records sorted in memory before they go to disk as a run.
const RUN_AT: usize = 2 << 20;
/// A leaf record's fixed part: directory node u32, entry id u32, whiteout
/// u8, name length u16; the name follows.
const LEAF_HDR: usize = 11;

/// A non-directory entry (or a whiteout) as the builder sorts it: under
/// directory node `node`, named `name`, the entry `id` (ids grow in archive
/// order, so among equal names the last listed comes last).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Leaf {
    node: u32,
    name: Vec<u8>,
    id: u32,
    whiteout: bool,
}

fn leaf_bytes(out: &mut Vec<u8>, node: u32, id: u32, whiteout: bool, name: &[u8]) {
    out.extend_from_slice(&node.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.push(u8::from(whiteout));
    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
    out.extend_from_slice(name);
}

/// The leaves: appended in archive order, sorted by (node, name, id) in
/// runs of RUN_AT bytes spilled to temp files, then merged into one
/// sequence in which each directory's leaves are contiguous and in order.
/// Memory stays at a run and a read buffer per run however many there are.
struct Leaves {
    dir: Option<PathBuf>,
    buf: Vec<u8>,
    runs: Vec<(File, u64)>,
}

/// The merged leaves: in memory when they fit one run, else a temp file.
enum Sorted {
    Mem(Vec<u8>),
    File(File, u64),
}

impl Sorted {
    fn len(&self) -> u64 {
        match self {
            Sorted::Mem(b) => b.len() as u64,
            Sorted::File(_, len) => *len,
        }
    }
    fn read_at(&self, off: u64, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Sorted::Mem(b) => {
                let src = b.get(off as usize..).unwrap_or_default();
                let n = src.len().min(out.len());
                out[..n].copy_from_slice(&src[..n]);
                Ok(n)
            }
            Sorted::File(f, _) => f.read_at(out, off),
        }
    }
}

/// Reads leaf records in order from `pos` of a sorted sequence.
struct LeafReader<'a> {
    src: &'a Sorted,
    pos: u64,
    buf: Vec<u8>,
    lo: usize,
    hi: usize,
    peeked: Option<Leaf>,
}

impl<'a> LeafReader<'a> {
    fn new(src: &'a Sorted, pos: u64) -> LeafReader<'a> {
        LeafReader {
            src,
            pos,
            buf: vec![0; 64 << 10],
            lo: 0,
            hi: 0,
            peeked: None,
        }
    }

    /// Makes `n` bytes readable at `lo`; false at the end.
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        while self.hi - self.lo < n {
            if self.lo > 0 {
                self.buf.copy_within(self.lo..self.hi, 0);
                self.hi -= self.lo;
                self.lo = 0;
            }
            if self.pos >= self.src.len() {
                return Ok(false);
            }
            let got = self.src.read_at(self.pos, &mut self.buf[self.hi..])?;
            if got == 0 {
                return Err(io::Error::other("sorted leaves end early"));
            }
            self.pos += got as u64;
            self.hi += got;
        }
        Ok(true)
    }

    fn peek(&mut self) -> io::Result<Option<&Leaf>> {
        if self.peeked.is_none() && self.fill(LEAF_HDR)? {
            let h = &self.buf[self.lo..self.lo + LEAF_HDR];
            let (node, id, whiteout) = (rd_u32(h, 0), rd_u32(h, 4), h[8] != 0);
            let len = rd_u16(h, 9) as usize;
            self.lo += LEAF_HDR;
            if !self.fill(len)? {
                return Err(io::Error::other("sorted leaves end in a record"));
            }
            let name = self.buf[self.lo..self.lo + len].to_vec();
            self.lo += len;
            self.peeked = Some(Leaf {
                node,
                name,
                id,
                whiteout,
            });
        }
        Ok(self.peeked.as_ref())
    }

    fn next(&mut self) -> io::Result<Option<Leaf>> {
        self.peek()?;
        Ok(self.peeked.take())
    }
}

impl Leaves {
    fn new(dir: Option<PathBuf>) -> Leaves {
        Leaves {
            dir,
            buf: Vec::new(),
            runs: Vec::new(),
        }
    }

    fn temp(&self) -> io::Result<File> {
        match &self.dir {
            Some(d) => tempfile::tempfile_in(d),
            None => tempfile::tempfile(),
        }
    }

    fn push(&mut self, node: u32, id: u32, whiteout: bool, name: &[u8]) -> io::Result<()> {
        leaf_bytes(&mut self.buf, node, id, whiteout, name);
        if self.buf.len() >= RUN_AT {
            let run = self.temp()?;
            let len = self.write_sorted(&run)?;
            self.runs.push((run, len));
        }
        Ok(())
    }

    /// The buffered records, sorted, written to `out`; the buffer is emptied.
    fn write_sorted(&mut self, out: &File) -> io::Result<u64> {
        let mut w = io::BufWriter::with_capacity(64 << 10, out);
        for (at, len) in sorted_records(&self.buf) {
            w.write_all(&self.buf[at..at + len])?;
        }
        w.flush()?;
        let total = self.buf.len() as u64;
        self.buf.clear();
        Ok(total)
    }

    /// All leaves in order, and where each directory node's leaves start.
    fn sort(mut self) -> io::Result<(Sorted, HashMap<u32, u64>)> {
        let sorted = if self.runs.is_empty() {
            let mut mem = Vec::with_capacity(self.buf.len());
            for (at, len) in sorted_records(&self.buf) {
                mem.extend_from_slice(&self.buf[at..at + len]);
            }
            Sorted::Mem(mem)
        } else {
            if !self.buf.is_empty() {
                let run = self.temp()?;
                let len = self.write_sorted(&run)?;
                self.runs.push((run, len));
            }
            let out = self.temp()?;
            let len = merge_runs(&self.runs, &out)?;
            Sorted::File(out, len)
        };
        let mut starts = HashMap::new();
        let mut r = LeafReader::new(&sorted, 0);
        let mut at = 0u64;
        while let Some(l) = r.next()? {
            starts.entry(l.node).or_insert(at);
            at += (LEAF_HDR + l.name.len()) as u64;
        }
        Ok((sorted, starts))
    }
}

/// (start, length) of each leaf record in `b`, in (node, name, id) order.
fn sorted_records(b: &[u8]) -> Vec<(usize, usize)> {
    let mut recs: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at + LEAF_HDR <= b.len() {
        let len = LEAF_HDR + rd_u16(b, at + 9) as usize;
        recs.push((at, len));
        at += len;
    }
    let key = |&(at, len): &(usize, usize)| {
        (
            rd_u32(b, at),
            &b[at + LEAF_HDR..at + len],
            rd_u32(b, at + 4),
        )
    };
    recs.sort_unstable_by(|x, y| key(x).cmp(&key(y)));
    recs
}

/// Merges sorted runs into `out`; returns its length.
fn merge_runs(runs: &[(File, u64)], out: &File) -> io::Result<u64> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let srcs: Vec<Sorted> = runs
        .iter()
        .map(|(f, len)| f.try_clone().map(|f| Sorted::File(f, *len)))
        .collect::<io::Result<_>>()?;
    let mut readers: Vec<LeafReader<'_>> = srcs.iter().map(|s| LeafReader::new(s, 0)).collect();
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(l) = r.next()? {
            heap.push(Reverse((l, i)));
        }
    }
    let mut w = io::BufWriter::with_capacity(64 << 10, out);
    let mut rec = Vec::new();
    let mut total = 0u64;
    while let Some(Reverse((l, i))) = heap.pop() {
        rec.clear();
        leaf_bytes(&mut rec, l.node, l.id, l.whiteout, &l.name);
        w.write_all(&rec)?;
        total += rec.len() as u64;
        if let Some(next) = readers[i].next()? {
            heap.push(Reverse((next, i)));
        }
    }
    w.flush()?;
    Ok(total)
}

/// Bytes kept in memory by a spill before they go to its temp file.
const SPILL_AT: usize = 1 << 20;

/// Bytes appended in order and read back by offset: in memory up to
/// SPILL_AT, then in an unnamed temp file, so what the builder holds does
/// not grow with the layer. An append lands whole in memory or on disk.
struct Spill {
    dir: Option<PathBuf>,
    file: Option<File>,
    on_disk: u64,
    buf: Vec<u8>,
}

impl Spill {
    fn new(dir: Option<PathBuf>) -> Spill {
        Spill {
            dir,
            file: None,
            on_disk: 0,
            buf: Vec::new(),
        }
    }

    fn len(&self) -> u64 {
        self.on_disk + self.buf.len() as u64
    }

    fn append(&mut self, b: &[u8]) -> io::Result<u64> {
        let off = self.len();
        self.buf.extend_from_slice(b);
        if self.buf.len() >= SPILL_AT {
            self.flush()?;
        }
        Ok(off)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = match &self.dir {
                    Some(d) => tempfile::tempfile_in(d)?,
                    None => tempfile::tempfile()?,
                };
                self.file.insert(f)
            }
        };
        file.write_all_at(&self.buf, self.on_disk)?;
        self.on_disk += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn file(&self) -> io::Result<&File> {
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("spilled bytes without a file"))
    }

    /// Overwrites bytes appended earlier in one piece.
    fn write_at(&mut self, off: u64, b: &[u8]) -> io::Result<()> {
        if off >= self.on_disk {
            let at = (off - self.on_disk) as usize;
            self.buf[at..at + b.len()].copy_from_slice(b);
            Ok(())
        } else {
            self.file()?.write_all_at(b, off)
        }
    }

    /// Reads bytes appended earlier in one piece.
    fn read_at(&self, off: u64, out: &mut [u8]) -> io::Result<()> {
        if off >= self.on_disk {
            let at = (off - self.on_disk) as usize;
            let src = self
                .buf
                .get(at..at + out.len())
                .ok_or_else(|| io::Error::other("read past the spilled bytes"))?;
            out.copy_from_slice(src);
            Ok(())
        } else {
            self.file()?.read_exact_at(out, off)
        }
    }

    /// Every byte, in order, a chunk at a time.
    fn for_each_chunk(&self, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
        let mut chunk = vec![0u8; SPILL_AT.min(self.on_disk as usize)];
        let mut at = 0;
        while at < self.on_disk {
            let n = chunk.len().min((self.on_disk - at) as usize);
            self.file()?.read_exact_at(&mut chunk[..n], at)?;
            f(&chunk[..n])?;
            at += n as u64;
        }
        if !self.buf.is_empty() {
            f(&self.buf)?;
        }
        Ok(())
    }
}

/// Bytes of an entry's fixed record in the builder's spill.
const REC_LEN: usize = 80;

/// The entries as the builder collects them: a fixed record each, by id,
/// and their link, xattrs and sparse extents in a heap.
struct EntryStore {
    records: Spill,
    heap: Spill,
    count: u32,
}

impl EntryStore {
    fn encode(&mut self, e: &NewEntry) -> io::Result<[u8; REC_LEN]> {
        let mut heap = Vec::new();
        heap.extend_from_slice(&e.link);
        for (k, v) in &e.xattrs {
            heap.extend_from_slice(&(k.len() as u32).to_le_bytes());
            heap.extend_from_slice(k);
            heap.extend_from_slice(&(v.len() as u32).to_le_bytes());
            heap.extend_from_slice(v);
        }
        let x_len = heap.len() - e.link.len();
        for (o, l) in &e.sparse {
            heap.extend_from_slice(&o.to_le_bytes());
            heap.extend_from_slice(&l.to_le_bytes());
        }
        let heap_off = match heap.is_empty() {
            true => 0,
            false => self.heap.append(&heap)?,
        };
        let mut r = [0u8; REC_LEN];
        r[0] = e.kind.to_u8();
        r[1] = e.flags;
        let words = [
            e.mode,
            e.uid,
            e.gid,
            e.mtime_nsec,
            e.rdev_major,
            e.rdev_minor,
            e.link.len() as u32,
            x_len as u32,
            e.sparse.len() as u32,
        ];
        for (i, w) in words.iter().enumerate() {
            r[4 + 4 * i..8 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        for (i, w) in [e.mtime as u64, e.size, e.data_offset, heap_off]
            .iter()
            .enumerate()
        {
            r[40 + 8 * i..48 + 8 * i].copy_from_slice(&w.to_le_bytes());
        }
        Ok(r)
    }

    fn push(&mut self, e: &NewEntry) -> io::Result<u32> {
        let r = self.encode(e)?;
        self.records.append(&r)?;
        self.count += 1;
        Ok(self.count - 1)
    }

    fn set(&mut self, id: u32, e: &NewEntry) -> io::Result<()> {
        let r = self.encode(e)?;
        self.records.write_at(u64::from(id) * REC_LEN as u64, &r)
    }

    /// The entry `id` (its path left empty: the node knows it).
    fn get(&self, id: u32) -> io::Result<NewEntry> {
        let mut r = [0u8; REC_LEN];
        self.records
            .read_at(u64::from(id) * REC_LEN as u64, &mut r)?;
        let word = |i: usize| rd_u32(&r, 4 + 4 * i);
        let long = |i: usize| rd_u64(&r, 40 + 8 * i);
        let (link_len, x_len, n_sparse) = (word(6) as usize, word(7) as usize, word(8) as usize);
        let mut heap = vec![0u8; link_len + x_len + n_sparse * 16];
        if !heap.is_empty() {
            self.heap.read_at(long(3), &mut heap)?;
        }
        let mut xattrs = Vec::new();
        let mut x = &heap[link_len..link_len + x_len];
        while x.len() >= 4 {
            let kl = rd_u32(x, 0) as usize;
            let k = x.get(4..4 + kl).unwrap_or_default().to_vec();
            let vl = rd_u32(x, 4 + kl) as usize;
            let v = x.get(8 + kl..8 + kl + vl).unwrap_or_default().to_vec();
            x = x.get(8 + kl + vl..).unwrap_or_default();
            xattrs.push((k, v));
        }
        let sparse = heap[link_len + x_len..]
            .chunks_exact(16)
            .map(|c| (rd_u64(c, 0), rd_u64(c, 8)))
            .collect();
        Ok(NewEntry {
            path: Vec::new(),
            kind: EntryKind::from_u8(r[0]),
            flags: r[1],
            mode: word(0),
            uid: word(1),
            gid: word(2),
            mtime: long(0) as i64,
            mtime_nsec: word(3),
            size: long(1),
            data_offset: long(2),
            link: heap[..link_len].to_vec(),
            rdev_major: word(4),
            rdev_minor: word(5),
            xattrs,
            sparse,
        })
    }
}

/// Collects the entries of one layer in stream order and lays out the index.
/// What it keeps in memory grows with the directories: their trie nodes and
/// names, and the hard links. Every entry's record is spilled, the other
/// entries are sorted on disk by directory (`Leaves`), and the index is
/// written out section by section.
pub struct IndexBuilder {
    entries: EntryStore,
    nodes: Vec<Node>,
    names: Vec<u8>,
    /// The first node of each hash of (parent, name).
    by_name: HashMap<u64, u32>,
    leaves: Leaves,
    /// Hard links: the entry and its own path.
    links: Vec<(u32, Vec<u8>)>,
    dir: Option<PathBuf>,
    prepared: Option<Prepared>,
}

/// The layout `IndexBuilder::prepare` found, for `finish_to` to write.
struct Prepared {
    /// Full path and node of each directory, by dir id.
    dirs: Vec<(Vec<u8>, u32)>,
    dir_of_node: Vec<u32>,
    sorted: Sorted,
    starts: HashMap<u32, u64>,
    /// The target of each hard link in this layer, by index id.
    target: HashMap<u32, u32>,
    group_list: Vec<(u32, Vec<u32>)>,
    group_of: HashMap<u32, u32>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder::spilling_to(None)
    }
}

fn name_hash(parent: u32, name: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

/// `path` split into its parent's path and its name.
fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&c| c == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// One entry of the index in the order it is laid out.
struct Laid<'a> {
    /// The entry's id in the builder's store.
    id: u32,
    /// Its directory's node and dir id (NONE for the root).
    parent_node: u32,
    parent_dir: u32,
    name: &'a [u8],
    /// A directory's own node.
    node: Option<u32>,
    whiteout: bool,
    /// The first entry listed at this path (to tell a hard link naming a
    /// later entry).
    first_at_path: u32,
}

impl IndexBuilder {
    /// A builder spilling to the system's temp dir.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder spilling to `dir` (None: the system's temp dir).
    pub fn spilling_to(dir: Option<PathBuf>) -> Self {
        IndexBuilder {
            entries: EntryStore {
                records: Spill::new(dir.clone()),
                heap: Spill::new(dir.clone()),
                count: 0,
            },
            nodes: vec![Node::new(NONE, 0, 0, true)],
            names: Vec::new(),
            by_name: HashMap::new(),
            leaves: Leaves::new(dir.clone()),
            links: Vec::new(),
            dir,
            prepared: None,
        }
    }

    fn spill_error(&self, e: io::Error) -> LayerError {
        let dir = self.dir.clone().unwrap_or_else(std::env::temp_dir);
        LayerError::io(&dir, e)
    }

    fn name(&self, n: u32) -> &[u8] {
        let node = &self.nodes[n as usize];
        let start = node.name_off as usize;
        &self.names[start..start + node.name_len as usize]
    }

    /// Adds an entry whose path is already normalized (no `./`, no leading or
    /// trailing `/`, `""` for the root). An entry under a path the archive
    /// made a non-directory (extracting it would write through a symlink or
    /// fail) and a hard link whose target comes after it are refused by
    /// `finish`, which sees every entry at a path.
    pub fn add(&mut self, e: NewEntry) -> Result<(), LayerError> {
        if e.kind == EntryKind::Directory {
            let n = self.walk(&e.path, false)? as usize;
            match self.nodes[n].real {
                // A directory listed twice keeps its children: only its metadata changes.
                NONE => {
                    let id = self.entries.push(&e).map_err(|x| self.spill_error(x))?;
                    self.nodes[n].real = id;
                }
                old => self.entries.set(old, &e).map_err(|x| self.spill_error(x))?,
            }
            return Ok(());
        }
        if e.path.is_empty() {
            return Err(LayerError::bad_path(b"/", "the root is not a directory"));
        }
        let (parent, name) = split_path(&e.path);
        if name.len() > u16::MAX as usize {
            return Err(LayerError::bad_path(
                &e.path,
                "a name is longer than 255 bytes",
            ));
        }
        let p = self.walk(parent, true)?;
        let whiteout = e.kind == EntryKind::Whiteout;
        if !whiteout && let Some(c) = self.child(p, name) {
            // What was under this path is gone, as extracting would lose it.
            self.nodes[c as usize].detached = true;
        }
        let id = self.entries.push(&e).map_err(|x| self.spill_error(x))?;
        self.leaves
            .push(p, id, whiteout, name)
            .map_err(|x| self.spill_error(x))?;
        if e.kind == EntryKind::HardLink {
            self.links.push((id, e.path));
        }
        Ok(())
    }

    /// Marks directory `path` opaque (`path/.wh..wh..opq`).
    pub fn add_opaque(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let n = self.walk(path, true)?;
        self.nodes[n as usize].opaque = true;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.entries.count == 0
    }

    /// The child of `parent` named `name`, if any.
    fn child(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let mut cur = *self.by_name.get(&name_hash(parent, name))?;
        while cur != NONE {
            let node = &self.nodes[cur as usize];
            if node.parent == parent && !node.detached && self.name(cur) == name {
                return Some(cur);
            }
            cur = node.next_same_hash;
        }
        None
    }

    /// The directory node of `path`, made with its parents if missing
    /// (`implicit`: by a path through it, not its own entry).
    fn walk(&mut self, path: &[u8], implicit: bool) -> Result<u32, LayerError> {
        let mut cur = ROOT_NODE;
        if path.is_empty() {
            return Ok(cur);
        }
        let mut rest = path.split(|&c| c == b'/').peekable();
        while let Some(comp) = rest.next() {
            cur = match self.child(cur, comp) {
                Some(c) => c,
                None => {
                    let id = self.nodes.len() as u32;
                    let len = u16::try_from(comp.len()).map_err(|_| {
                        LayerError::bad_path(path, "a name is longer than 255 bytes")
                    })?;
                    let at = u32::try_from(self.names.len()).map_err(|_| {
                        LayerError::bad_path(path, "more than 4 GiB of names in one layer")
                    })?;
                    let own = rest.peek().is_none() && !implicit;
                    let mut node = Node::new(cur, at, len, !own);
                    self.names.extend_from_slice(comp);
                    node.next_sibling = self.nodes[cur as usize].first_child;
                    let head = self.by_name.entry(name_hash(cur, comp)).or_insert(NONE);
                    node.next_same_hash = *head;
                    *head = id;
                    self.nodes[cur as usize].first_child = id;
                    self.nodes.push(node);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// The directory node at `path`, if there is one.
    fn find_dir(&self, path: &[u8]) -> Option<u32> {
        let mut cur = ROOT_NODE;
        if !path.is_empty() {
            for comp in path.split(|&c| c == b'/') {
                cur = self.child(cur, comp)?;
            }
        }
        Some(cur)
    }

    /// The directories under node `n` that are still there.
    fn children(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        let mut c = self.nodes[n as usize].first_child;
        std::iter::from_fn(move || {
            while c != NONE {
                let cur = c;
                c = self.nodes[cur as usize].next_sibling;
                if !self.nodes[cur as usize].detached {
                    return Some(cur);
                }
            }
            None
        })
    }

    /// The path of node `n`.
    fn node_path(&self, mut n: u32) -> Vec<u8> {
        let mut parts = Vec::new();
        while n != ROOT_NODE && n != NONE {
            parts.push(self.name(n));
            n = self.nodes[n as usize].parent;
        }
        parts.reverse();
        parts.join(&b'/')
    }

    /// The name of something under directory node `n`, for an error.
    fn first_under(
        &self,
        n: u32,
        leaves: &Sorted,
        starts: &HashMap<u32, u64>,
    ) -> io::Result<Vec<u8>> {
        if let Some(c) = self.children(n).next() {
            return Ok(self.name(c).to_vec());
        }
        if let Some(&at) = starts.get(&n)
            && let Some(l) = LeafReader::new(leaves, at).next()?
        {
            return Ok(l.name);
        }
        Ok(b".wh..wh..opq".to_vec())
    }

    /// Every entry of the index in its order: the root, then each directory's
    /// (in `dirs` order) by name, a whiteout before a real entry of the same
    /// name. Of the entries at one path the last listed wins; a directory
    /// wins over non-directories listed before it, unless it was made by a
    /// path through it after one (an entry under a non-directory).
    fn lay_out(
        &self,
        dirs: &[(Vec<u8>, u32)],
        leaves: &Sorted,
        starts: &HashMap<u32, u64>,
        each: &mut dyn FnMut(&Laid<'_>) -> Result<(), LayerError>,
    ) -> Result<(), LayerError> {
        let spill = |e: io::Error| self.spill_error(e);
        let root = self.nodes[ROOT_NODE as usize].real;
        each(&Laid {
            id: root,
            parent_node: NONE,
            parent_dir: NONE,
            name: b"",
            node: Some(ROOT_NODE),
            whiteout: false,
            first_at_path: root,
        })?;
        let mut kids: Vec<u32> = Vec::new();
        for (d, &(_, n)) in dirs.iter().enumerate() {
            kids.clear();
            kids.extend(self.children(n));
            kids.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
            let mut kids = kids.iter().copied().peekable();
            let mut r = starts.get(&n).map(|&at| LeafReader::new(leaves, at));
            loop {
                let leaf_name = match &mut r {
                    Some(r) => r
                        .peek()
                        .map_err(spill)?
                        .filter(|l| l.node == n)
                        .map(|l| l.name.clone()),
                    None => None,
                };
                let kid = kids.peek().copied();
                let name: Vec<u8> = match (kid, &leaf_name) {
                    (None, None) => break,
                    (Some(k), None) => self.name(k).to_vec(),
                    (None, Some(l)) => l.clone(),
                    (Some(k), Some(l)) => self.name(k).min(l.as_slice()).to_vec(),
                };
                let (mut whiteout, mut first, mut last) = (NONE, NONE, NONE);
                while let Some(r) = &mut r {
                    match r.peek().map_err(spill)? {
                        Some(l) if l.node == n && l.name == name => {}
                        _ => break,
                    }
                    let Some(l) = r.next().map_err(spill)? else {
                        break;
                    };
                    if l.whiteout {
                        whiteout = l.id;
                    } else {
                        first = first.min(l.id);
                        last = l.id;
                    }
                }
                let kid = kid.filter(|&k| self.name(k) == name.as_slice());
                if kid.is_some() {
                    kids.next();
                }
                let laid = |id, node, whiteout, first_at_path| Laid {
                    id,
                    parent_node: n,
                    parent_dir: d as u32,
                    name: &name,
                    node,
                    whiteout,
                    first_at_path,
                };
                if whiteout != NONE {
                    each(&laid(whiteout, None, true, whiteout))?;
                }
                match kid {
                    Some(k) if last != NONE && self.nodes[k as usize].implicit => {
                        let dir = self.node_path(k);
                        let under = self.first_under(k, leaves, starts).map_err(spill)?;
                        return Err(LayerError::UnderNonDir {
                            path: short_name(&[&dir[..], b"/", &under].concat()),
                            parent: short_name(&dir),
                        });
                    }
                    Some(k) => {
                        let real = self.nodes[k as usize].real;
                        each(&laid(real, Some(k), false, first.min(real)))?;
                    }
                    None if last != NONE => each(&laid(last, None, false, first))?,
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Lays the entries out and checks them: an entry under a non-directory
    /// of the layer and a hard link naming a later entry are refused here,
    /// once every entry is in (ingest calls it before it keeps the blob).
    pub fn prepare(&mut self) -> Result<(), LayerError> {
        if self.prepared.is_none() {
            self.prepared = Some(self.lay_out_all()?);
        }
        Ok(())
    }

    fn lay_out_all(&mut self) -> Result<Prepared, LayerError> {
        // Every node still there is a directory; those the tar did not list
        // become implicit ones (their metadata does not override a lower
        // layer's). Directories get their ids sorted by full path.
        let first_implicit = self.entries.count;
        let mut dirs: Vec<(Vec<u8>, u32)> = Vec::new();
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(ROOT_NODE, Vec::new())];
        while let Some((n, path)) = stack.pop() {
            for c in self.children(n) {
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(self.name(c));
                stack.push((c, p));
            }
            if self.nodes[n as usize].real == NONE {
                let id = self
                    .entries
                    .push(&NewEntry::implicit_dir(Vec::new()))
                    .map_err(|e| self.spill_error(e))?;
                self.nodes[n as usize].real = id;
            }
            dirs.push((path, n));
        }
        dirs.sort_unstable();
        let mut dir_of_node = vec![NONE; self.nodes.len()];
        for (d, &(_, n)) in dirs.iter().enumerate() {
            dir_of_node[n as usize] = d as u32;
        }
        let leaves = std::mem::replace(&mut self.leaves, Leaves::new(None));
        let (sorted, starts) = leaves.sort().map_err(|e| self.spill_error(e))?;

        // Hard links: what each names, found as the layout goes by.
        struct Named {
            node: u32,
            name: Vec<u8>,
            /// (index id, builder id, first listed at its path, directory)
            laid: Option<(u32, u32, u32, bool)>,
        }
        let mut named: Vec<Named> = Vec::with_capacity(self.links.len());
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut link_of_id: HashMap<u32, usize> = HashMap::new();
        for (i, (id, _)) in self.links.iter().enumerate() {
            link_of_id.insert(*id, i);
            let link = self.entries.get(*id).map_err(|e| self.spill_error(e))?.link;
            let (dir, name) = split_path(&link);
            let node = match link.is_empty() {
                true => None,
                false => self.find_dir(dir),
            };
            if let Some(node) = node {
                by_hash.entry(name_hash(node, name)).or_default().push(i);
            }
            named.push(Named {
                node: node.unwrap_or(NONE),
                name: name.to_vec(),
                laid: None,
            });
        }
        let mut index_id_of_link: HashMap<u32, u32> = HashMap::new();
        let mut n = 0u32;
        self.lay_out(&dirs, &sorted, &starts, &mut |l| {
            if !l.whiteout {
                for &i in by_hash
                    .get(&name_hash(l.parent_node, l.name))
                    .into_iter()
                    .flatten()
                {
                    let t = &mut named[i];
                    if t.node == l.parent_node && t.name == l.name {
                        t.laid = Some((n, l.id, l.first_at_path, l.node.is_some()));
                    }
                }
                if link_of_id.contains_key(&l.id) {
                    index_id_of_link.insert(l.id, n);
                }
            }
            n += 1;
            Ok(())
        })?;
        // A hard link must not name an entry that first comes after it.
        for (i, (id, path)) in self.links.iter().enumerate() {
            if let Some((_, _, first, _)) = named[i].laid
                && first != NONE
                && first < first_implicit
                && first > *id
            {
                let link = self.entries.get(*id).map_err(|e| self.spill_error(e))?.link;
                return Err(LayerError::LinkForward {
                    path: short_name(path),
                    target: short_name(&link),
                });
            }
        }
        // Each hard link laid out resolved to its final target in this layer.
        let mut target: HashMap<u32, u32> = HashMap::new();
        for (i, (id, _)) in self.links.iter().enumerate() {
            let Some(&own) = index_id_of_link.get(id) else {
                continue;
            };
            let mut cur = named[i].laid;
            let mut seen = 0;
            while let Some((_, r, _, _)) = cur
                && let Some(&next) = link_of_id.get(&r)
                && seen <= 64
            {
                seen += 1;
                cur = named[next].laid;
            }
            if let Some((to, r, _, is_dir)) = cur
                && !is_dir
                && !link_of_id.contains_key(&r)
                && r != *id
            {
                target.insert(own, to);
            }
        }
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&link, &t) in &target {
            groups.entry(t).or_insert_with(|| vec![t]).push(link);
        }
        let mut group_list: Vec<(u32, Vec<u32>)> = groups.into_iter().collect();
        group_list.sort_unstable();
        let mut group_of: HashMap<u32, u32> = HashMap::new();
        for (g, (_, members)) in group_list.iter_mut().enumerate() {
            members[1..].sort_unstable();
            for &m in members.iter() {
                group_of.insert(m, g as u32);
            }
        }

        Ok(Prepared {
            dirs,
            dir_of_node,
            sorted,
            starts,
            target,
            group_list,
            group_of,
        })
    }

    /// Lays out and serializes the index into memory.
    pub fn finish(
        self,
        meta: &IndexMeta,
        checkpoints: &[Checkpoint],
        windows: &[u8],
        blob_spans: &crate::store::SpanTable,
    ) -> Result<Vec<u8>, LayerError> {
        let mut out = Vec::new();
        self.finish_to(
            meta,
            checkpoints,
            windows,
            blob_spans,
            &mut out,
            Path::new("index"),
        )?;
        Ok(out)
    }

    /// Lays out the index and writes it to `out` (the file at `out_path`),
    /// section by section.
    pub fn finish_to(
        mut self,
        meta: &IndexMeta,
        checkpoints: &[Checkpoint],
        windows: &[u8],
        blob_spans: &crate::store::SpanTable,
        out: &mut dyn Write,
        out_path: &Path,
    ) -> Result<(), LayerError> {
        let p = match self.prepared.take() {
            Some(p) => p,
            None => self.lay_out_all()?,
        };
        let spill = |b: &IndexBuilder, e: io::Error| b.spill_error(e);
        // Serialize.
        let mut w = Writer::new(self.dir.clone());
        let mut dirs_out: Vec<[u32; 6]> = vec![[0, 0, NONE, 0, 0, 0]; p.dirs.len()];
        let mut externals = Vec::new();
        let mut n = 0u32;
        self.lay_out(&p.dirs, &p.sorted, &p.starts, &mut |l| {
            let e = self.entries.get(l.id).map_err(|e| spill(&self, e))?;
            if l.parent_dir != NONE {
                let d = &mut dirs_out[l.parent_dir as usize];
                if d[4] == 0 {
                    d[3] = n;
                }
                d[4] += 1;
            }
            let target = p.target.get(&n).copied().unwrap_or(NONE);
            if e.kind == EntryKind::HardLink && target == NONE {
                externals.extend_from_slice(&n.to_le_bytes());
            }
            let slot = match l.node {
                Some(node) => p.dir_of_node[node as usize],
                None => target,
            };
            let group = p.group_of.get(&n).copied().unwrap_or(NONE);
            let res: io::Result<()> = (|| {
                let name = w.string(l.name)?;
                let rec = w.record(&e, name, l.parent_dir, slot, group)?;
                w.entries.append(&rec)?;
                Ok(())
            })();
            res.map_err(|e| spill(&self, e))?;
            if let Some(node) = l.node {
                dirs_out[p.dir_of_node[node as usize] as usize][2] = n;
            }
            n += 1;
            Ok(())
        })?;
        // A directory's path is a prefix of its subdirectories' paths, so it
        // is stored once, in the deepest one: the strings grow with the
        // entries, not with the square of the depth.
        let mut by_depth: Vec<usize> = (0..p.dirs.len()).collect();
        by_depth.sort_unstable_by_key(|&d| std::cmp::Reverse(p.dirs[d].0.len()));
        let mut in_child: HashMap<u32, u32> = HashMap::new();
        for d in by_depth {
            let (path, node) = (&p.dirs[d].0, p.dirs[d].1);
            let off = match in_child.get(&node) {
                Some(&off) => off,
                None => w.string(path).map_err(|e| spill(&self, e))?.0,
            };
            let parent = self.nodes[node as usize].parent;
            if parent != NONE {
                in_child.entry(parent).or_insert(off);
            }
            let rec = &mut dirs_out[d];
            rec[0] = off;
            rec[1] = path.len() as u32;
            rec[5] = if self.nodes[node as usize].opaque {
                DIR_OPAQUE
            } else {
                0
            };
        }
        let mut dir_bytes = Vec::with_capacity(dirs_out.len() * DIR_LEN);
        for rec in &dirs_out {
            for v in rec {
                dir_bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut groups_bytes = Vec::new();
        let mut members = Vec::new();
        for (_, m) in &p.group_list {
            groups_bytes.extend_from_slice(&((members.len() / 4) as u32).to_le_bytes());
            groups_bytes.extend_from_slice(&(m.len() as u32).to_le_bytes());
            for id in m {
                members.extend_from_slice(&id.to_le_bytes());
            }
        }
        let mut cps = Vec::with_capacity(checkpoints.len() * CHECKPOINT_LEN);
        for c in checkpoints {
            cps.extend_from_slice(&c.out_offset.to_le_bytes());
            cps.extend_from_slice(&c.in_offset.to_le_bytes());
            cps.extend_from_slice(&c.window_offset.to_le_bytes());
            cps.extend_from_slice(&c.out_len.to_le_bytes());
            cps.extend_from_slice(&c.crc.to_le_bytes());
            cps.extend_from_slice(&c.window_len.to_le_bytes());
            let flags = if c.restart { CP_RESTART } else { 0 }
                | if c.window_len > 0 { CP_WINDOW } else { 0 };
            cps.extend_from_slice(&[c.bits, flags, 0, 0]);
        }
        let counts = Counts {
            externals: externals.len() / 4,
            entries: n as usize,
            dirs: p.dirs.len(),
            groups: p.group_list.len(),
            members: members.len() / 4,
            sparse: (w.sparse.len() / SPARSE_LEN as u64) as usize,
            checkpoints: checkpoints.len(),
            strings: w.strings.len() as usize,
            xattrs: w.extras.len() as usize,
            windows: windows.len(),
            blob_spans: blob_spans.spans().len(),
            chunk_spans: blob_spans.is_chunks(),
        };
        let mut span_bytes = Vec::with_capacity(blob_spans.spans().len() * BLOB_SPAN_LEN);
        for s in blob_spans.spans() {
            span_bytes.extend_from_slice(&s.offset.to_le_bytes());
            span_bytes.extend_from_slice(&s.len.to_le_bytes());
            span_bytes.extend_from_slice(s.digest.as_bytes());
        }
        let window_sums = window_sums(windows);
        enum Section<'a> {
            Mem(&'a [u8]),
            Spilled(&'a Spill),
        }
        // The windows are the only section the checksum leaves out.
        let windows_at = 9;
        let sections = [
            Section::Spilled(&w.entries),
            Section::Mem(&dir_bytes),
            Section::Mem(&groups_bytes),
            Section::Mem(&members),
            Section::Mem(&externals),
            Section::Spilled(&w.sparse),
            Section::Mem(&cps),
            Section::Spilled(&w.strings),
            Section::Spilled(&w.extras),
            Section::Mem(windows),
            Section::Mem(&span_bytes),
            Section::Mem(&window_sums),
        ];
        let each = |hashing: bool, f: &mut dyn FnMut(&[u8]) -> io::Result<()>| -> io::Result<()> {
            for (i, s) in sections.iter().enumerate() {
                if hashing && i == windows_at {
                    continue;
                }
                match s {
                    Section::Mem(b) => f(b)?,
                    Section::Spilled(sp) => sp.for_each_chunk(&mut *f)?,
                }
            }
            Ok(())
        };
        // The checksum covers the sections, so they are read twice: once
        // to hash, once to write after the header that holds it.
        let mut header = encode_header(meta, &counts);
        let mut h = Sha256::new();
        h.update(&header);
        each(true, &mut |b| {
            h.update(b);
            Ok(())
        })
        .map_err(|e| spill(&self, e))?;
        header[HASH_AT].copy_from_slice(&h.finalize());
        let write_err = |e: io::Error| LayerError::io(out_path, e);
        out.write_all(&header).map_err(write_err)?;
        each(false, &mut |b| out.write_all(b)).map_err(write_err)?;
        Ok(())
    }
}

/// What the header records about the layer itself.
#[derive(Clone, Copy, Debug)]
pub struct IndexMeta {
    pub digest: Digest,
    pub diff_id: Digest,
    pub compression: Compression,
    pub blob_size: u64,
    pub uncompressed_size: u64,
}

struct Counts {
    externals: usize,
    entries: usize,
    dirs: usize,
    groups: usize,
    members: usize,
    sparse: usize,
    checkpoints: usize,
    strings: usize,
    xattrs: usize,
    windows: usize,
    blob_spans: usize,
    chunk_spans: bool,
}

/// The sha256 of an index file but its windows section (`windows`), its
/// own header field read as zeros.
fn checksum(file: &[u8], windows: std::ops::Range<usize>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&file[..HASH_AT.start]);
    h.update([0u8; HASH_AT.end - HASH_AT.start]);
    h.update(&file[HASH_AT.end..windows.start]);
    h.update(&file[windows.end..]);
    h.finalize().into()
}

/// `checksum` of the index file `file` (`len` bytes), read with pread in
/// large pieces: through the mapping, without readahead, it would be read a
/// page at a time.
fn checksum_of_file(
    file: &File,
    len: usize,
    windows: std::ops::Range<usize>,
) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; (1 << 20).min(len)];
    for part in [0..windows.start, windows.end..len] {
        let mut at = part.start;
        while at < part.end {
            let n = (part.end - at).min(buf.len());
            let piece = &mut buf[..n];
            file.read_exact_at(piece, at as u64)?;
            // The checksum's own field reads as zeros.
            for i in HASH_AT.clone().filter(|i| (at..at + n).contains(i)) {
                piece[i - at] = 0;
            }
            h.update(&*piece);
            at += n;
        }
    }
    Ok(h.finalize().into())
}

/// The sha256 of each `WINDOW_BLOCK` of a windows section.
fn window_sums(windows: &[u8]) -> Vec<u8> {
    windows
        .chunks(WINDOW_BLOCK)
        .flat_map(|b| <[u8; 32]>::from(Sha256::digest(b)))
        .collect()
}

/// Recomputes the window sums and the checksum of index file `data` whose
/// header is sound, as a writer would have (the fuzz targets reseal
/// mutated indexes with it). False when the header's sizes do not fit.
pub fn reseal(data: &mut [u8]) -> bool {
    let Ok(l) = Layout::of(data) else {
        return false;
    };
    let sums = window_sums(&data[l.windows.clone()]);
    data[l.window_sums..].copy_from_slice(&sums);
    let sum = checksum(data, l.windows);
    data[HASH_AT].copy_from_slice(&sum);
    true
}

/// The sections of index file `data` by name, in file order (tests damage
/// each one).
#[cfg(test)]
pub fn sections(data: &[u8]) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let Ok(l) = Layout::of(data) else {
        return Vec::new();
    };
    let names = [
        "entries",
        "dirs",
        "groups",
        "members",
        "externals",
        "sparse",
        "checkpoints",
        "strings",
        "xattrs",
        "windows",
        "blob spans",
        "window sums",
    ];
    let mut out = vec![("header", 0..HEADER_LEN)];
    out.extend((0..names.len()).map(|i| (names[i], l.offs[i]..l.offs[i + 1])));
    out
}

/// Where each section of an index file lies, from its header's counts.
struct Layout {
    /// Offsets of the sections in file order: entries, dirs, groups,
    /// members, externals, sparse, checkpoints, strings, xattrs, windows,
    /// blob spans, window sums; and the end of the file.
    offs: [usize; 13],
    windows: std::ops::Range<usize>,
    window_sums: usize,
}

impl Layout {
    fn of(b: &[u8]) -> Result<Layout, &'static str> {
        if b.len() < HEADER_LEN {
            return Err("not a layerfs index");
        }
        let n = |i: usize| rd_u32(b, 96 + 4 * i) as usize;
        let windows_len = rd_u64(b, 144) as usize;
        let sizes = [
            n(0).checked_mul(ENTRY_LEN),
            n(1).checked_mul(DIR_LEN),
            n(2).checked_mul(GROUP_LEN),
            n(3).checked_mul(4),
            n(6).checked_mul(4),
            n(4).checked_mul(SPARSE_LEN),
            n(5).checked_mul(CHECKPOINT_LEN),
            Some(rd_u64(b, 128) as usize),
            Some(rd_u64(b, 136) as usize),
            Some(windows_len),
            (rd_u32(b, 184) as usize).checked_mul(BLOB_SPAN_LEN),
            Some(windows_len.div_ceil(WINDOW_BLOCK) * 32),
        ];
        let mut offs = [0usize; 13];
        offs[0] = HEADER_LEN;
        for (i, s) in sizes.iter().enumerate() {
            offs[i + 1] = s
                .and_then(|s| offs[i].checked_add(s))
                .ok_or("section sizes overflow")?;
        }
        if offs[12] != b.len() {
            return Err("truncated or oversized");
        }
        Ok(Layout {
            windows: offs[9]..offs[10],
            window_sums: offs[11],
            offs,
        })
    }
}

fn encode_header(meta: &IndexMeta, c: &Counts) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&[meta.compression.as_u8(), u8::from(c.chunk_spans), 0, 0]);
    h.extend_from_slice(&meta.blob_size.to_le_bytes());
    h.extend_from_slice(&meta.uncompressed_size.to_le_bytes());
    h.extend_from_slice(meta.digest.as_bytes());
    h.extend_from_slice(meta.diff_id.as_bytes());
    for n in [
        c.entries,
        c.dirs,
        c.groups,
        c.members,
        c.sparse,
        c.checkpoints,
        c.externals,
    ] {
        h.extend_from_slice(&(n as u32).to_le_bytes());
    }
    h.extend_from_slice(&[0u8; 4]); // keeps the u64 counts aligned
    for n in [c.strings, c.xattrs, c.windows] {
        h.extend_from_slice(&(n as u64).to_le_bytes());
    }
    h.resize(HASH_AT.end, 0); // the checksum goes at HASH_AT once the file is laid out
    h.extend_from_slice(&(c.blob_spans as u32).to_le_bytes());
    h.resize(HEADER_LEN, 0);
    h
}

/// The sections that grow with the entries, spilled as they are written.
struct Writer {
    entries: Spill,
    strings: Spill,
    extras: Spill,
    sparse: Spill,
}

/// Where an entry record keeps each field (ENTRY_LEN bytes, little-endian):
///
/// ```text
///  0 name offset u32     4 parent dir u32     8 name length u16
/// 10 kind u8            11 flags u8          12 mode (0o7777) u16
/// 14 extras mask u16    16 uid u32           20 gid u32
/// 24 mtime u64: seconds << 30 | nanoseconds
/// 32 12 bytes by kind:  regular      size u48, data offset u48
///                       directory    dir id u32
///                       (sym|hard)link  link offset u32, length u32, target u32
///                       char/block   major u32, minor u32
/// 44 extras offset u32: where the fields the mask names are
/// ```
///
/// What is rare or does not fit (a hardlink group, sparse extents, xattrs,
/// a size or offset past 2^48, an mtime outside 1697..2242 or with odd
/// nanoseconds) goes to the entry's extras, in the order of the mask bits.
mod rec {
    pub const NAME_OFF: usize = 0;
    pub const PARENT: usize = 4;
    pub const NAME_LEN: usize = 8;
    pub const KIND: usize = 10;
    pub const FLAGS: usize = 11;
    pub const MODE: usize = 12;
    pub const MASK: usize = 14;
    pub const UID: usize = 16;
    pub const GID: usize = 20;
    pub const MTIME: usize = 24;
    pub const A: usize = 32;
    pub const B: usize = 38;
    pub const SLOT: usize = 32;
    pub const LINK_OFF: usize = 32;
    pub const LINK_LEN: usize = 36;
    pub const TARGET: usize = 40;
    pub const MAJOR: usize = 32;
    pub const MINOR: usize = 36;
    pub const EXTRAS: usize = 44;
}

/// Mask bits of an entry's extras, in the order their fields are stored.
const X_GROUP: u16 = 1; // u32
const X_SPARSE: u16 = 2; // u32 first extent, u32 count
const X_SIZE: u16 = 4; // u64
const X_DATA: u16 = 8; // u64
const X_MTIME: u16 = 16; // i64 seconds, u32 nanoseconds
const X_XATTRS: u16 = 32; // u32 length, then (u16 name len, u32 value len, name, value)*
/// Bytes of each field in mask order (the xattrs' own length comes after).
const X_FIELD_LEN: [(u16, usize); 6] = [
    (X_GROUP, 4),
    (X_SPARSE, 8),
    (X_SIZE, 8),
    (X_DATA, 8),
    (X_MTIME, 12),
    (X_XATTRS, 4),
];
const U48_END: u64 = 1 << 48;
/// Seconds an mtime may have and still be packed beside its nanoseconds.
const PACKED_SECS: std::ops::Range<i64> = -(1 << 33)..(1 << 33);
const NSEC_BITS: u32 = 30;

impl Writer {
    fn new(dir: Option<PathBuf>) -> Writer {
        Writer {
            entries: Spill::new(dir.clone()),
            strings: Spill::new(dir.clone()),
            extras: Spill::new(dir.clone()),
            sparse: Spill::new(dir),
        }
    }

    fn string(&mut self, s: &[u8]) -> io::Result<(u32, u32)> {
        let off = u32::try_from(self.strings.append(s)?)
            .map_err(|_| io::Error::other("more than 4 GiB of names and links in one layer"))?;
        Ok((off, s.len() as u32))
    }

    /// The entry's record, its link, sparse extents and extras written out.
    fn record(
        &mut self,
        e: &NewEntry,
        (name_off, name_len): (u32, u32),
        parent: u32,
        slot: u32,
        group: u32,
    ) -> io::Result<[u8; ENTRY_LEN]> {
        let mut r = [0u8; ENTRY_LEN];
        let mut mask = 0u16;
        let mut extras = Vec::new();
        r[rec::NAME_OFF..][..4].copy_from_slice(&name_off.to_le_bytes());
        r[rec::PARENT..][..4].copy_from_slice(&parent.to_le_bytes());
        r[rec::NAME_LEN..][..2].copy_from_slice(&(name_len as u16).to_le_bytes());
        r[rec::KIND] = e.kind.to_u8();
        r[rec::FLAGS] = e.flags;
        r[rec::MODE..][..2].copy_from_slice(&((e.mode & 0o7777) as u16).to_le_bytes());
        r[rec::UID..][..4].copy_from_slice(&e.uid.to_le_bytes());
        r[rec::GID..][..4].copy_from_slice(&e.gid.to_le_bytes());
        let packs_mtime = PACKED_SECS.contains(&e.mtime) && e.mtime_nsec < 1 << NSEC_BITS;
        if packs_mtime {
            let packed = ((e.mtime as u64) << NSEC_BITS) | u64::from(e.mtime_nsec);
            r[rec::MTIME..][..8].copy_from_slice(&packed.to_le_bytes());
        }
        let is_file = e.kind == EntryKind::Regular;
        let packs_size = e.size < U48_END && e.data_offset < U48_END;
        let put = |r: &mut [u8; ENTRY_LEN], at: usize, v: u32| {
            r[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        match e.kind {
            EntryKind::Regular if packs_size => {
                r[rec::A..][..6].copy_from_slice(&e.size.to_le_bytes()[..6]);
                r[rec::B..][..6].copy_from_slice(&e.data_offset.to_le_bytes()[..6]);
            }
            EntryKind::Directory => put(&mut r, rec::SLOT, slot),
            EntryKind::Symlink | EntryKind::HardLink => {
                let (off, len) = self.string(&e.link)?;
                put(&mut r, rec::LINK_OFF, off);
                put(&mut r, rec::LINK_LEN, len);
                put(&mut r, rec::TARGET, slot);
            }
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                put(&mut r, rec::MAJOR, e.rdev_major);
                put(&mut r, rec::MINOR, e.rdev_minor);
            }
            _ => {}
        }
        if group != NONE {
            mask |= X_GROUP;
            extras.extend_from_slice(&group.to_le_bytes());
        }
        if is_file && !e.sparse.is_empty() {
            mask |= X_SPARSE;
            let first = u32::try_from(self.sparse.len() / SPARSE_LEN as u64)
                .map_err(|_| io::Error::other("more than 4 billion sparse extents"))?;
            for (o, l) in &e.sparse {
                self.sparse
                    .append(&[o.to_le_bytes(), l.to_le_bytes()].concat())?;
            }
            extras.extend_from_slice(&first.to_le_bytes());
            extras.extend_from_slice(&(e.sparse.len() as u32).to_le_bytes());
        }
        if is_file && !packs_size {
            mask |= X_SIZE | X_DATA;
            extras.extend_from_slice(&e.size.to_le_bytes());
            extras.extend_from_slice(&e.data_offset.to_le_bytes());
        }
        if !packs_mtime {
            mask |= X_MTIME;
            extras.extend_from_slice(&e.mtime.to_le_bytes());
            extras.extend_from_slice(&e.mtime_nsec.to_le_bytes());
        }
        if !e.xattrs.is_empty() {
            mask |= X_XATTRS;
            let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = e.xattrs.iter().collect();
            sorted.sort();
            let at = extras.len();
            extras.extend_from_slice(&[0; 4]);
            for (k, v) in sorted {
                extras.extend_from_slice(&(k.len() as u16).to_le_bytes());
                extras.extend_from_slice(&(v.len() as u32).to_le_bytes());
                extras.extend_from_slice(k);
                extras.extend_from_slice(v);
            }
            let len = (extras.len() - at - 4) as u32;
            extras[at..at + 4].copy_from_slice(&len.to_le_bytes());
        }
        if mask != 0 {
            let off = u32::try_from(self.extras.append(&extras)?)
                .map_err(|_| io::Error::other("more than 4 GiB of xattrs in one layer"))?;
            r[rec::MASK..][..2].copy_from_slice(&mask.to_le_bytes());
            put(&mut r, rec::EXTRAS, off);
        }
        Ok(r)
    }
}

/// A layer index opened for reading. The file is mapped; nothing is copied
/// but the windows, which are read as decodes need them.
pub struct LayerIndex {
    map: memmap2::Mmap,
    file: File,
    path: PathBuf,
    meta: IndexMeta,
    n_entries: u32,
    n_dirs: u32,
    n_checkpoints: u32,
    n_externals: u32,
    entries: usize,
    dirs: usize,
    groups: usize,
    members: usize,
    externals: usize,
    sparse: usize,
    checkpoints: usize,
    strings: usize,
    xattrs: usize,
    windows: usize,
    windows_len: usize,
    window_sums: usize,
    blob_spans: usize,
    n_blob_spans: u32,
    /// The blob spans are eStargz chunks (made from a TOC): each is a gzip
    /// member starting at a checkpoint whose span is the chunk, verified by
    /// the chunk's digest; those checkpoints carry no CRC.
    chunk_spans: bool,
}

impl std::fmt::Debug for LayerIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LayerIndex({}, {} entries)",
            self.meta.digest, self.n_entries
        )
    }
}

fn rd_u16(b: &[u8], off: usize) -> u16 {
    b.get(off..off + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
fn rd_u32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn rd_u64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8).map_or(0, |s| {
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        u64::from_le_bytes(a)
    })
}

impl LayerIndex {
    /// Opens and checks an index: magic, version, section sizes, the sha256
    /// of the file but its windows, and that it belongs to blob `digest`.
    /// The windows are checked as they are read (`window`), or all at once
    /// by `check_windows`.
    pub fn open(path: &Path, digest: &Digest) -> Result<LayerIndex, LayerError> {
        let bad = |why: &str| LayerError::BadIndex {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let file = File::open(path).map_err(|e| LayerError::io(path, e))?;
        // No readahead: it would read the windows (most of the file) along
        // with the tables opening reads; each window is read when used.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_RANDOM,
        );
        // SAFETY: index files are only ever replaced by rename, never written in
        // place, so the mapped bytes cannot change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LayerError::io(path, e))?;
        let _ = map.advise(memmap2::Advice::Random);
        let b = &map[..];
        if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
            return Err(bad("not a layerfs index"));
        }
        if rd_u32(b, 8) != VERSION {
            let v = rd_u32(b, 8);
            return Err(bad(&format!(
                "index version {v}, this layerfs reads version {VERSION} only"
            )));
        }
        let compression = Compression::from_u8(b[12]).ok_or_else(|| bad("unknown compression"))?;
        let mut d = [0u8; 32];
        d.copy_from_slice(&b[32..64]);
        let mut diff = [0u8; 32];
        diff.copy_from_slice(&b[64..96]);
        let meta = IndexMeta {
            digest: Digest::from_bytes(d),
            diff_id: Digest::from_bytes(diff),
            compression,
            blob_size: rd_u64(b, 16),
            uncompressed_size: rd_u64(b, 24),
        };
        if meta.digest != *digest {
            return Err(bad("index belongs to another blob"));
        }
        let layout = Layout::of(b).map_err(bad)?;
        let sum = checksum_of_file(&file, b.len(), layout.windows.clone())
            .map_err(|e| LayerError::io(path, e))?;
        if sum[..] != b[HASH_AT] {
            return Err(bad("checksum mismatch"));
        }
        let n = |i: usize| rd_u32(b, 96 + 4 * i);
        let (n_entries, n_dirs) = (n(0), n(1));
        if n_entries == 0 || n_dirs == 0 {
            return Err(bad("has no root directory"));
        }
        let offs = layout.offs;
        Ok(LayerIndex {
            meta,
            n_entries,
            n_dirs,
            n_checkpoints: n(5),
            n_externals: n(6),
            entries: offs[0],
            dirs: offs[1],
            groups: offs[2],
            members: offs[3],
            externals: offs[4],
            sparse: offs[5],
            checkpoints: offs[6],
            strings: offs[7],
            xattrs: offs[8],
            windows: offs[9],
            windows_len: layout.windows.len(),
            blob_spans: offs[10],
            n_blob_spans: rd_u32(b, 184),
            window_sums: layout.window_sums,
            chunk_spans: b[13] == 1,
            map,
            file,
            path: path.to_path_buf(),
        })
    }

    /// Opens an index and checks all of it, its windows too (`fsck`, and
    /// an index fetched from a registry before it is kept).
    pub fn open_checked(path: &Path, digest: &Digest) -> Result<LayerIndex, LayerError> {
        let index = LayerIndex::open(path, digest)?;
        index.check_windows()?;
        Ok(index)
    }

    /// Checks every block of the windows against its sha256.
    pub fn check_windows(&self) -> Result<(), LayerError> {
        let mut block = vec![0u8; WINDOW_BLOCK];
        for (i, start) in (0..self.windows_len).step_by(WINDOW_BLOCK).enumerate() {
            let len = WINDOW_BLOCK.min(self.windows_len - start);
            self.read_window_block(i, &mut block[..len])?;
        }
        Ok(())
    }

    /// Reads block `i` of the windows section into `out` (its length) and
    /// checks it against its sha256.
    fn read_window_block(&self, i: usize, out: &mut [u8]) -> Result<(), LayerError> {
        let at = self.windows + i * WINDOW_BLOCK;
        self.file
            .read_exact_at(out, at as u64)
            .map_err(|e| LayerError::io(&self.path, e))?;
        let sum = self.window_sums + 32 * i;
        if self.bytes().get(sum..sum + 32) != Some(&Sha256::digest(&*out)[..]) {
            return Err(LayerError::BadIndex {
                path: self.path.clone(),
                why: format!(
                    "inflate windows damaged (bytes {at}..{}); `layerfs fsck` rebuilds the index",
                    at + out.len()
                ),
            });
        }
        Ok(())
    }

    pub fn meta(&self) -> &IndexMeta {
        &self.meta
    }

    /// The digests of the blob's compressed spans, which verify ranges
    /// fetched lazily; None for an index made without them.
    pub fn span_table(&self) -> Option<crate::store::SpanTable> {
        if self.n_blob_spans == 0 {
            return None;
        }
        let b = self.bytes();
        let spans = (0..self.n_blob_spans as usize)
            .map(|i| {
                let at = self.blob_spans + BLOB_SPAN_LEN * i;
                let mut d = [0u8; 32];
                d.copy_from_slice(b.get(at + 16..at + 48)?);
                Some(crate::store::BlobSpan {
                    offset: rd_u64(b, at),
                    len: rd_u64(b, at + 8),
                    digest: Digest::from_bytes(d),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        if !self.chunk_spans {
            return crate::store::SpanTable::new(spans).ok();
        }
        // A span that starts a checkpoint is its chunk; the others (the
        // headers before the first chunk, the footer) have digests of
        // their compressed bytes.
        let chunk_len: HashMap<u64, u64> = (0..self.checkpoints())
            .map(|i| self.checkpoint(i))
            .filter(|c| c.restart)
            .map(|c| (c.in_offset, u64::from(c.out_len)))
            .collect();
        let paired = spans
            .into_iter()
            .map(|s| (s, chunk_len.get(&s.offset).copied()))
            .collect();
        crate::store::SpanTable::chunks(paired).ok()
    }

    /// Whether the checkpoints carry CRCs of their spans (not those made
    /// from an eStargz TOC, whose chunks are checked by digest when fetched).
    pub fn has_crcs(&self) -> bool {
        !self.chunk_spans
    }
    pub fn digest(&self) -> &Digest {
        &self.meta.digest
    }
    pub fn diff_id(&self) -> &Digest {
        &self.meta.diff_id
    }
    pub fn compression(&self) -> Compression {
        self.meta.compression
    }
    pub fn len(&self) -> u32 {
        self.n_entries
    }
    pub fn is_empty(&self) -> bool {
        self.n_entries <= 1
    }
    /// Bytes of the index file.
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    fn bytes(&self) -> &[u8] {
        &self.map
    }

    fn string(&self, off: u32, len: u32) -> &[u8] {
        let start = self.strings + off as usize;
        self.bytes().get(start..start + len as usize).unwrap_or(&[])
    }

    pub fn entry(&self, id: u32) -> Entry<'_> {
        let id = if id < self.n_entries { id } else { 0 };
        Entry {
            index: self,
            id,
            base: self.entries + id as usize * ENTRY_LEN,
        }
    }

    pub fn root(&self) -> Dir<'_> {
        self.dir(0)
    }

    pub fn dir(&self, id: u32) -> Dir<'_> {
        let id = if id < self.n_dirs { id } else { 0 };
        Dir {
            index: self,
            id,
            base: self.dirs + id as usize * DIR_LEN,
        }
    }

    /// The directory at `path` (`""` for the root), by binary search.
    pub fn find_dir(&self, path: &[u8]) -> Option<Dir<'_>> {
        let (mut lo, mut hi) = (0u32, self.n_dirs);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let d = self.dir(mid);
            match d.path().cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(d),
            }
        }
        None
    }

    /// All entries of hardlink group `g`.
    pub fn group_members(&self, g: u32) -> impl Iterator<Item = u32> + '_ {
        let base = self.groups + g as usize * GROUP_LEN;
        // Only members inside the member section, whatever the group says.
        let in_section = (self.externals - self.members) / 4;
        let start = (rd_u32(self.bytes(), base) as usize).min(in_section);
        let len = (rd_u32(self.bytes(), base + 4) as usize).min(in_section - start);
        (start..start + len).map(move |i| rd_u32(self.bytes(), self.members + 4 * i))
    }

    /// Hard links whose target lives in a lower layer (resolved by the union).
    pub fn external_links(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.n_externals as usize).map(move |i| rd_u32(self.bytes(), self.externals + 4 * i))
    }

    pub fn checkpoints(&self) -> u32 {
        self.n_checkpoints
    }

    pub fn checkpoint(&self, i: u32) -> Checkpoint {
        let b = self.bytes();
        let base = self.checkpoints + i as usize * CHECKPOINT_LEN;
        let flags = b.get(base + 37).copied().unwrap_or(0);
        Checkpoint {
            out_offset: rd_u64(b, base),
            in_offset: rd_u64(b, base + 8),
            window_offset: rd_u64(b, base + 16),
            out_len: rd_u32(b, base + 24),
            crc: rd_u32(b, base + 28),
            window_len: rd_u32(b, base + 32),
            bits: b.get(base + 36).copied().unwrap_or(0),
            restart: flags & CP_RESTART != 0,
        }
    }

    /// The checkpoint whose span holds uncompressed offset `off`.
    pub fn checkpoint_for(&self, off: u64) -> Option<u32> {
        if self.n_checkpoints == 0 {
            return None;
        }
        let (mut lo, mut hi) = (0u32, self.n_checkpoints);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.checkpoint(mid).out_offset <= off {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let c = self.checkpoint(lo);
        (off >= c.out_offset && off < c.out_offset + c.out_len as u64).then_some(lo)
    }

    /// The deflated inflate window stored for a checkpoint, checked. It is
    /// read from the file, not the mapping: a window is used once per span
    /// decode, so the copy costs nothing beside the inflating, and its pages
    /// stay out of the process's memory.
    pub fn window(&self, c: &Checkpoint) -> Result<Vec<u8>, LayerError> {
        let start = c.window_offset as usize;
        let end = start.saturating_add(c.window_len as usize);
        if end > self.windows_len {
            return Err(LayerError::BadIndex {
                path: self.path.clone(),
                why: format!("a window past the windows section ({start}..{end})"),
            });
        }
        let first = start / WINDOW_BLOCK;
        let last = end.div_ceil(WINDOW_BLOCK).max(first + 1);
        let span_end = (last * WINDOW_BLOCK).min(self.windows_len);
        let mut buf = vec![0u8; span_end - first * WINDOW_BLOCK];
        for (k, block) in buf.chunks_mut(WINDOW_BLOCK).enumerate() {
            self.read_window_block(first + k, block)?;
        }
        let from = start - first * WINDOW_BLOCK;
        buf.truncate(from + (end - start));
        buf.drain(..from);
        Ok(buf)
    }
}

/// One directory of a layer.
#[derive(Clone, Copy)]
pub struct Dir<'a> {
    index: &'a LayerIndex,
    id: u32,
    base: usize,
}

impl<'a> Dir<'a> {
    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn path(&self) -> &'a [u8] {
        let b = self.index.bytes();
        self.index
            .string(rd_u32(b, self.base), rd_u32(b, self.base + 4))
    }
    pub fn entry(&self) -> Entry<'a> {
        self.index.entry(rd_u32(self.index.bytes(), self.base + 8))
    }
    pub fn is_opaque(&self) -> bool {
        rd_u32(self.index.bytes(), self.base + 20) & DIR_OPAQUE != 0
    }
    /// Child entry ids, sorted by name (whiteouts before real entries).
    pub fn children(&self) -> std::ops::Range<u32> {
        let b = self.index.bytes();
        let first = rd_u32(b, self.base + 12);
        let count = rd_u32(b, self.base + 16);
        first..first.saturating_add(count).min(self.index.n_entries)
    }

    /// The real entry and whether a whiteout for `name` is in this directory.
    pub fn lookup(&self, name: &[u8]) -> (Option<Entry<'a>>, bool) {
        let r = self.children();
        let (mut lo, mut hi) = (r.start, r.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.index.entry(mid).name() < name {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut real = None;
        let mut whiteout = false;
        let mut i = lo;
        while i < r.end {
            let e = self.index.entry(i);
            if e.name() != name {
                break;
            }
            if e.kind() == EntryKind::Whiteout {
                whiteout = true;
            } else {
                real = Some(e);
            }
            i += 1;
        }
        (real, whiteout)
    }
}

/// One entry of a layer: a view into the mapped index.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    index: &'a LayerIndex,
    id: u32,
    base: usize,
}

impl<'a> Entry<'a> {
    fn u16_at(&self, off: usize) -> u16 {
        rd_u16(self.index.bytes(), self.base + off)
    }
    fn u32_at(&self, off: usize) -> u32 {
        rd_u32(self.index.bytes(), self.base + off)
    }
    fn u48_at(&self, off: usize) -> u64 {
        let mut a = [0u8; 8];
        if let Some(s) = self.index.bytes().get(self.base + off..self.base + off + 6) {
            a[..6].copy_from_slice(s);
        }
        u64::from_le_bytes(a)
    }
    fn mask(&self) -> u16 {
        self.u16_at(rec::MASK)
    }
    /// The field `bit` of this entry's extras (its bytes run to the end of
    /// the section), or None without one.
    fn extra(&self, bit: u16) -> Option<&'a [u8]> {
        let mask = self.mask();
        if mask & bit == 0 {
            return None;
        }
        let skip: usize = X_FIELD_LEN
            .iter()
            .take_while(|&&(b, _)| b != bit)
            .filter(|&&(b, _)| mask & b != 0)
            .map(|&(_, len)| len)
            .sum();
        let start = self.index.xattrs + self.u32_at(rec::EXTRAS) as usize + skip;
        self.index.bytes().get(start..self.index.windows)
    }
    fn extra_u32(&self, bit: u16, at: usize) -> Option<u32> {
        self.extra(bit).map(|x| rd_u32(x, at))
    }
    fn extra_u64(&self, bit: u16, at: usize) -> Option<u64> {
        self.extra(bit).map(|x| rd_u64(x, at))
    }
    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn name(&self) -> &'a [u8] {
        self.index.string(
            self.u32_at(rec::NAME_OFF),
            u32::from(self.u16_at(rec::NAME_LEN)),
        )
    }
    /// The id of the directory holding this entry (NONE for the root).
    pub fn parent(&self) -> u32 {
        self.u32_at(rec::PARENT)
    }
    pub fn kind(&self) -> EntryKind {
        let b = self.index.bytes().get(self.base + rec::KIND).copied();
        EntryKind::from_u8(b.unwrap_or(1))
    }
    pub fn is_implicit(&self) -> bool {
        let b = self.index.bytes().get(self.base + rec::FLAGS).copied();
        b.unwrap_or(0) & FLAG_IMPLICIT != 0
    }
    pub fn mode(&self) -> u32 {
        u32::from(self.u16_at(rec::MODE))
    }
    pub fn uid(&self) -> u32 {
        self.u32_at(rec::UID)
    }
    pub fn gid(&self) -> u32 {
        self.u32_at(rec::GID)
    }
    pub fn mtime(&self) -> (i64, u32) {
        if let Some(x) = self.extra(X_MTIME) {
            return (rd_u64(x, 0) as i64, rd_u32(x, 8));
        }
        let packed = rd_u64(self.index.bytes(), self.base + rec::MTIME);
        (
            (packed as i64) >> NSEC_BITS,
            (packed & ((1 << NSEC_BITS) - 1)) as u32,
        )
    }
    /// Bytes of a regular file (0 for anything else).
    pub fn size(&self) -> u64 {
        match self.kind() {
            EntryKind::Regular => self
                .extra_u64(X_SIZE, 0)
                .unwrap_or_else(|| self.u48_at(rec::A)),
            _ => 0,
        }
    }
    /// Where a regular file's data starts in the uncompressed stream.
    pub fn data_offset(&self) -> u64 {
        match self.kind() {
            EntryKind::Regular => self
                .extra_u64(X_DATA, 0)
                .unwrap_or_else(|| self.u48_at(rec::B)),
            _ => 0,
        }
    }
    /// Symlink target, or the path a hard link names.
    pub fn link(&self) -> &'a [u8] {
        match self.kind() {
            EntryKind::Symlink | EntryKind::HardLink => self
                .index
                .string(self.u32_at(rec::LINK_OFF), self.u32_at(rec::LINK_LEN)),
            _ => &[],
        }
    }
    /// For a hard link, the entry it names in this layer (NONE if in a lower one).
    pub fn target(&self) -> u32 {
        match self.kind() {
            EntryKind::HardLink => self.u32_at(rec::TARGET),
            _ => NONE,
        }
    }
    /// For a directory, its `Dir`.
    pub fn as_dir(&self) -> Option<Dir<'a>> {
        (self.kind() == EntryKind::Directory).then(|| self.index.dir(self.u32_at(rec::SLOT)))
    }
    /// The hardlink group this entry belongs to, if any.
    pub fn group(&self) -> Option<u32> {
        self.extra_u32(X_GROUP, 0).filter(|&g| g != NONE)
    }
    pub fn rdev(&self) -> (u32, u32) {
        match self.kind() {
            EntryKind::CharDevice | EntryKind::BlockDevice => {
                (self.u32_at(rec::MAJOR), self.u32_at(rec::MINOR))
            }
            _ => (0, 0),
        }
    }
    pub fn has_xattrs(&self) -> bool {
        self.mask() & X_XATTRS != 0
    }
    /// Extended attributes as (name, value) byte pairs, sorted by name.
    pub fn xattrs(&self) -> XattrIter<'a> {
        let data = self.extra(X_XATTRS).map_or(&[][..], |x| {
            let len = rd_u32(x, 0) as usize;
            x.get(4..).map_or(&[][..], |x| &x[..len.min(x.len())])
        });
        XattrIter { data }
    }
    /// Stored extents of a sparse file: (offset in file, length).
    pub fn sparse(&self) -> Vec<(u64, u64)> {
        let Some(x) = self.extra(X_SPARSE) else {
            return Vec::new();
        };
        // Only extents inside the sparse section: a damaged count must not
        // make a read collect billions of them.
        let in_section = (self.index.checkpoints - self.index.sparse) / SPARSE_LEN;
        let first = (rd_u32(x, 0) as usize).min(in_section);
        let n = (rd_u32(x, 4) as usize).min(in_section - first);
        (first..first + n)
            .map(|i| {
                let base = self.index.sparse + i * SPARSE_LEN;
                (
                    rd_u64(self.index.bytes(), base),
                    rd_u64(self.index.bytes(), base + 8),
                )
            })
            .collect()
    }
    pub fn is_sparse(&self) -> bool {
        self.extra_u32(X_SPARSE, 4).is_some_and(|n| n > 0)
    }
    /// The entry's path in the layer, rebuilt from its directory.
    pub fn path(&self) -> Vec<u8> {
        let parent = self.parent();
        if parent == NONE {
            return Vec::new();
        }
        let mut p = self.index.dir(parent).path().to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(self.name());
        p
    }
}

pub struct XattrIter<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for XattrIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.data.len() < 6 {
            return None;
        }
        let kl = rd_u16(self.data, 0) as usize;
        let vl = rd_u32(self.data, 2) as usize;
        let k = self.data.get(6..6 + kl)?;
        let v = self.data.get(6 + kl..6 + kl + vl)?;
        self.data = &self.data[6 + kl + vl..];
        Some((k, v))
    }
}
