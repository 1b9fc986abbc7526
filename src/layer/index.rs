//! The layer index: a table of every entry of one layer (path, kind, owner,
//! mode, mtime, size, link target, xattrs, hardlink target, whiteout and
//! opaque flags, and the offset of its data in the uncompressed stream) plus
//! the checkpoints that let any byte range be decoded from the nearest one.
//!
//! It is derived data, written beside the blob and mapped, never read whole,
//! so opening it costs the same for any layer size. A sha256 over all of it
//! (header, every section, the inflate windows too) and the layer's digest
//! in its header make a damaged or foreign index detectable; it is then
//! rebuilt from the blob. A damaged window must never pass for a damaged blob.
//!
//! ```text
//! header (192 bytes)
//! entries      n_entries × 96 bytes, grouped by parent directory, each group
//!              sorted by name (a whiteout before a real entry of the same name);
//!              entry 0 is the layer's root directory
//! dirs         n_dirs × 24 bytes, sorted by full path: path, own entry,
//!              range of child entries, flags (opaque)
//! groups       n_groups × 8: range into `members` (hardlink groups)
//! members      u32 entry ids
//! externals    u32 ids of hard links whose target is in a lower layer
//! sparse       n_sparse × 16: (offset in file, length) extents
//! checkpoints  n_checkpoints × 40
//! strings      names, dir paths, link targets
//! xattrs       per entry: (u16 name len, u32 value len, name, value)*
//! windows      deflated 32 KiB inflate windows of gzip checkpoints
//! blob spans   n_blob_spans × 48: (offset, len, sha256) of spans of the
//!              compressed blob (BLOB_SPAN bytes each when ingest made them;
//!              eStargz chunks when made from a TOC), so a range fetched from
//!              a registry is verified before it is stored or served
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
const VERSION: u32 = 3;
/// Bytes of compressed blob per span digest: the unit a lazy read fetches
/// (a read rounds out to it at both ends). The spans are listed with their
/// offsets and lengths, so indexes made with another size read the same.
pub const BLOB_SPAN: u64 = 32 << 10;
const BLOB_SPAN_LEN: usize = 48;
/// Where the header holds the sha256 of the whole file (these bytes as zeros).
const HASH_AT: std::ops::Range<usize> = 152..184;
const HEADER_LEN: usize = 192;
const ENTRY_LEN: usize = 96;
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

/// One path of the layer as the builder sees it: a trie node, so a path is
/// found or added in one walk over its bytes and a parent shared by many
/// entries exists once, however deep. Its name is in the builder's name
/// arena and its children are a list; a node is found by the hash of
/// (parent, name). What an entry says beyond its kind is spilled.
struct Node {
    parent: u32,
    name_off: u32,
    name_len: u16,
    /// The kind of `real` (EntryKind::to_u8), 0 without one.
    real_kind: u8,
    opaque: bool,
    /// Cut off from its parent (a non-directory replaced it): never found.
    detached: bool,
    /// The entry at this path (the last one with the path wins).
    real: u32,
    /// A whiteout hiding this path in lower layers.
    whiteout: u32,
    first_child: u32,
    next_sibling: u32,
    /// The next node whose (parent, name) hashes alike.
    next_same_hash: u32,
}

impl Node {
    fn new(parent: u32, name_off: u32, name_len: u16) -> Node {
        Node {
            parent,
            name_off,
            name_len,
            real_kind: 0,
            opaque: false,
            detached: false,
            real: NONE,
            whiteout: NONE,
            first_child: NONE,
            next_sibling: NONE,
            next_same_hash: NONE,
        }
    }
}

const ROOT_NODE: u32 = 0;

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
/// What it keeps in memory per entry is its trie node and name; the rest is
/// spilled to a temp file (in the store's temp dir for ingest) once it
/// passes a few MiB, and the index is written out section by section.
pub struct IndexBuilder {
    entries: EntryStore,
    nodes: Vec<Node>,
    names: Vec<u8>,
    /// The first node of each hash of (parent, name).
    by_name: HashMap<u64, u32>,
    /// Hard links whose target the archive did not hold before them: the
    /// target's path and the link's. The target must not come later.
    unresolved_links: HashMap<Vec<u8>, Vec<u8>>,
    dir: Option<PathBuf>,
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
            nodes: vec![Node::new(NONE, 0, 0)],
            names: Vec::new(),
            by_name: HashMap::new(),
            unresolved_links: HashMap::new(),
            dir,
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

    fn real_kind(&self, n: u32) -> Option<EntryKind> {
        match self.nodes[n as usize].real_kind {
            0 => None,
            k => Some(EntryKind::from_u8(k)),
        }
    }

    /// Adds an entry whose path is already normalized (no `./`, no leading or
    /// trailing `/`, `""` for the root). Refuses an entry under a path the
    /// archive made a non-directory (extracting it would write through a
    /// symlink or fail) and a hard link whose target comes after it.
    pub fn add(&mut self, e: NewEntry) -> Result<(), LayerError> {
        let n = self.walk(&e.path)? as usize;
        if e.kind == EntryKind::Whiteout {
            match self.nodes[n].whiteout {
                NONE => {
                    let id = self.entries.push(&e).map_err(|x| self.spill_error(x))?;
                    self.nodes[n].whiteout = id;
                }
                old => self.entries.set(old, &e).map_err(|x| self.spill_error(x))?,
            }
            return Ok(());
        }
        if let Some(link) = self.unresolved_links.get(&e.path) {
            return Err(LayerError::LinkForward {
                path: short_name(link),
                target: short_name(&e.path),
            });
        }
        if e.kind == EntryKind::HardLink && self.find(&e.link).is_none() {
            self.unresolved_links.insert(e.link.clone(), e.path.clone());
        }
        if e.kind != EntryKind::Directory {
            // What was under this path is gone, as extracting would lose it.
            self.drop_children(n);
            self.nodes[n].opaque = false;
        }
        match self.nodes[n].real {
            // A directory listed twice keeps its children: only its metadata changes.
            NONE => {
                let id = self.entries.push(&e).map_err(|x| self.spill_error(x))?;
                self.nodes[n].real = id;
            }
            old => self.entries.set(old, &e).map_err(|x| self.spill_error(x))?,
        }
        self.nodes[n].real_kind = e.kind.to_u8();
        Ok(())
    }

    /// Marks directory `path` opaque (`path/.wh..wh..opq`).
    pub fn add_opaque(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let n = self.walk(path)?;
        if self.real_kind(n).is_some_and(|k| k != EntryKind::Directory) {
            return Err(LayerError::UnderNonDir {
                path: short_name(&[path, b"/.wh..wh..opq"].concat()),
                parent: short_name(path),
            });
        }
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

    /// The node of `path`, made with its parents if missing; every parent
    /// must be a directory (or not listed yet).
    fn walk(&mut self, path: &[u8]) -> Result<u32, LayerError> {
        let mut cur = ROOT_NODE;
        if path.is_empty() {
            return Ok(cur);
        }
        let mut end = 0;
        for comp in path.split(|&c| c == b'/') {
            if self
                .real_kind(cur)
                .is_some_and(|k| k != EntryKind::Directory)
            {
                return Err(LayerError::UnderNonDir {
                    path: short_name(path),
                    parent: short_name(&path[..end.max(1) - 1]),
                });
            }
            end += comp.len() + 1;
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
                    let mut node = Node::new(cur, at, len);
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

    /// The node at `path` if it has a real entry.
    fn find(&self, path: &[u8]) -> Option<u32> {
        let mut cur = ROOT_NODE;
        if !path.is_empty() {
            for comp in path.split(|&c| c == b'/') {
                cur = self.child(cur, comp)?;
            }
        }
        (self.nodes[cur as usize].real != NONE).then_some(cur)
    }

    /// Detaches everything under node `n`; it can no longer be found.
    fn drop_children(&mut self, n: usize) {
        let mut c = std::mem::replace(&mut self.nodes[n].first_child, NONE);
        while c != NONE {
            self.nodes[c as usize].detached = true;
            c = self.nodes[c as usize].next_sibling;
        }
    }

    fn children(&self, n: u32) -> impl Iterator<Item = u32> + '_ {
        let mut c = self.nodes[n as usize].first_child;
        std::iter::from_fn(move || {
            let cur = c;
            (cur != NONE).then(|| {
                c = self.nodes[cur as usize].next_sibling;
                cur
            })
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
        let spill = |b: &IndexBuilder, e: io::Error| b.spill_error(e);
        // Every node with something under it is a directory; those the tar
        // did not list become implicit ones (their metadata does not override
        // a lower layer's). Directories get their ids sorted by full path.
        let is_dir = |b: &IndexBuilder, n: u32| {
            let node = &b.nodes[n as usize];
            n == ROOT_NODE
                || node.first_child != NONE
                || node.opaque
                || b.real_kind(n) == Some(EntryKind::Directory)
        };
        let mut dirs: Vec<(Vec<u8>, u32)> = Vec::new();
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(ROOT_NODE, Vec::new())];
        while let Some((n, path)) = stack.pop() {
            for c in self.children(n) {
                if is_dir(&self, c) {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(self.name(c));
                    stack.push((c, p));
                }
            }
            if self.nodes[n as usize].real == NONE {
                let id = self
                    .entries
                    .push(&NewEntry::implicit_dir(Vec::new()))
                    .map_err(|e| spill(&self, e))?;
                self.nodes[n as usize].real = id;
                self.nodes[n as usize].real_kind = EntryKind::Directory.to_u8();
            }
            dirs.push((path, n));
        }
        dirs.sort_unstable();
        let mut dir_of_node = vec![NONE; self.nodes.len()];
        for (d, &(_, n)) in dirs.iter().enumerate() {
            dir_of_node[n as usize] = d as u32;
        }

        // Entry order: the root, then grouped by parent dir id, by name,
        // whiteout first. Each is (entry, node).
        let mut order: Vec<(u32, u32)> = Vec::with_capacity(self.len());
        let root = self.nodes[ROOT_NODE as usize].real;
        if root != NONE {
            order.push((root, ROOT_NODE));
        }
        let mut kids: Vec<u32> = Vec::new();
        for &(_, n) in &dirs {
            kids.clear();
            kids.extend(self.children(n));
            kids.sort_unstable_by(|&a, &b| self.name(a).cmp(self.name(b)));
            for &c in &kids {
                let node = &self.nodes[c as usize];
                if node.whiteout != NONE {
                    order.push((node.whiteout, c));
                }
                if node.real != NONE {
                    order.push((node.real, c));
                }
            }
        }
        let mut new_id = vec![NONE; self.len()];
        for (n, &(old, _)) in order.iter().enumerate() {
            new_id[old as usize] = n as u32;
        }
        let parent_dir = |node: u32| -> u32 {
            match self.nodes[node as usize].parent {
                NONE => NONE,
                p => dir_of_node[p as usize],
            }
        };
        let is_real = |old: u32, node: u32| self.nodes[node as usize].real == old;

        // Hardlinks: resolve each to its final target within this layer.
        let mut target = vec![NONE; order.len()];
        for (n, &(old, node)) in order.iter().enumerate() {
            if !is_real(old, node) || self.real_kind(node) != Some(EntryKind::HardLink) {
                continue;
            }
            let link = self.entries.get(old).map_err(|e| spill(&self, e))?.link;
            let mut seen = 0;
            let mut cur = self.find(&link);
            while let Some(c) = cur {
                let r = self.nodes[c as usize].real;
                if self.real_kind(c) != Some(EntryKind::HardLink)
                    || seen > 64
                    || new_id[r as usize] == NONE
                {
                    break;
                }
                seen += 1;
                let next = self.entries.get(r).map_err(|e| spill(&self, e))?.link;
                cur = self.find(&next);
            }
            if let Some(c) = cur {
                let r = self.nodes[c as usize].real;
                if new_id[r as usize] != NONE
                    && !matches!(
                        self.real_kind(c),
                        Some(EntryKind::HardLink | EntryKind::Directory)
                    )
                    && r != old
                {
                    target[n] = new_id[r as usize];
                }
            }
        }
        let mut groups: HashMap<u32, Vec<u32>> = HashMap::new();
        for (n, &t) in target.iter().enumerate() {
            if t != NONE {
                groups.entry(t).or_insert_with(|| vec![t]).push(n as u32);
            }
        }
        let mut group_list: Vec<(u32, Vec<u32>)> = groups.into_iter().collect();
        group_list.sort_unstable();
        let mut group_of = vec![NONE; order.len()];
        for (g, (_, members)) in group_list.iter().enumerate() {
            for &m in members {
                group_of[m as usize] = g as u32;
            }
        }

        // Serialize.
        let mut w = Writer::new(self.dir.clone());
        let mut dirs_out: Vec<[u32; 6]> = vec![[0, 0, NONE, 0, 0, 0]; dirs.len()];
        let mut externals = Vec::new();
        for (n, &(old, node)) in order.iter().enumerate() {
            let e = self.entries.get(old).map_err(|e| spill(&self, e))?;
            let parent = parent_dir(node);
            if parent != NONE {
                let d = &mut dirs_out[parent as usize];
                if d[4] == 0 {
                    d[3] = n as u32;
                }
                d[4] += 1;
            }
            if e.kind == EntryKind::HardLink && target[n] == NONE {
                externals.extend_from_slice(&(n as u32).to_le_bytes());
            }
            let res: io::Result<()> = (|| {
                let (name_off, name_len) = w.string(self.name(node))?;
                let (link_off, link_len) = w.string(&e.link)?;
                let (x_off, x_len) = w.xattrs(&e.xattrs)?;
                let sparse_off = (w.sparse.len() / SPARSE_LEN as u64) as u32;
                for (o, l) in &e.sparse {
                    w.sparse
                        .append(&[o.to_le_bytes(), l.to_le_bytes()].concat())?;
                }
                let slot = match e.kind {
                    EntryKind::Directory => dir_of_node[node as usize],
                    _ => target[n],
                };
                let mut rec = Vec::with_capacity(ENTRY_LEN);
                rec.extend_from_slice(&name_off.to_le_bytes());
                rec.extend_from_slice(&name_len.to_le_bytes());
                rec.extend_from_slice(&parent.to_le_bytes());
                rec.push(e.kind.to_u8());
                rec.push(e.flags);
                rec.extend_from_slice(&[0, 0]);
                rec.extend_from_slice(&(e.mode & 0o7777).to_le_bytes());
                rec.extend_from_slice(&e.uid.to_le_bytes());
                rec.extend_from_slice(&e.gid.to_le_bytes());
                rec.extend_from_slice(&e.mtime_nsec.to_le_bytes());
                rec.extend_from_slice(&e.mtime.to_le_bytes());
                rec.extend_from_slice(&e.size.to_le_bytes());
                rec.extend_from_slice(&e.data_offset.to_le_bytes());
                rec.extend_from_slice(&link_off.to_le_bytes());
                rec.extend_from_slice(&link_len.to_le_bytes());
                rec.extend_from_slice(&slot.to_le_bytes());
                rec.extend_from_slice(&group_of[n].to_le_bytes());
                rec.extend_from_slice(&e.rdev_major.to_le_bytes());
                rec.extend_from_slice(&e.rdev_minor.to_le_bytes());
                rec.extend_from_slice(&x_off.to_le_bytes());
                rec.extend_from_slice(&x_len.to_le_bytes());
                rec.extend_from_slice(&sparse_off.to_le_bytes());
                rec.extend_from_slice(&(e.sparse.len() as u32).to_le_bytes());
                w.entries.append(&rec)?;
                Ok(())
            })();
            res.map_err(|e| spill(&self, e))?;
            let d = dir_of_node[node as usize];
            if e.kind == EntryKind::Directory && d != NONE {
                dirs_out[d as usize][2] = n as u32;
            }
        }
        // A directory's path is a prefix of its subdirectories' paths, so it
        // is stored once, in the deepest one: the strings grow with the
        // entries, not with the square of the depth.
        let mut by_depth: Vec<usize> = (0..dirs.len()).collect();
        by_depth.sort_unstable_by_key(|&d| std::cmp::Reverse(dirs[d].0.len()));
        let mut in_child: HashMap<u32, u32> = HashMap::new();
        for d in by_depth {
            let (path, node) = (&dirs[d].0, dirs[d].1);
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
        for (_, m) in &group_list {
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
            entries: order.len(),
            dirs: dirs.len(),
            groups: group_list.len(),
            members: members.len() / 4,
            sparse: (w.sparse.len() / SPARSE_LEN as u64) as usize,
            checkpoints: checkpoints.len(),
            strings: w.strings.len() as usize,
            xattrs: w.xattr_area.len() as usize,
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
        enum Section<'a> {
            Mem(&'a [u8]),
            Spilled(&'a Spill),
        }
        let sections = [
            Section::Spilled(&w.entries),
            Section::Mem(&dir_bytes),
            Section::Mem(&groups_bytes),
            Section::Mem(&members),
            Section::Mem(&externals),
            Section::Spilled(&w.sparse),
            Section::Mem(&cps),
            Section::Spilled(&w.strings),
            Section::Spilled(&w.xattr_area),
            Section::Mem(windows),
            Section::Mem(&span_bytes),
        ];
        let each = |f: &mut dyn FnMut(&[u8]) -> io::Result<()>| -> io::Result<()> {
            for s in &sections {
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
        each(&mut |b| {
            h.update(b);
            Ok(())
        })
        .map_err(|e| spill(&self, e))?;
        header[HASH_AT].copy_from_slice(&h.finalize());
        let write_err = |e: io::Error| LayerError::io(out_path, e);
        out.write_all(&header).map_err(write_err)?;
        each(&mut |b| out.write_all(b)).map_err(write_err)?;
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

/// The sha256 of a whole index file, its own header field read as zeros.
fn checksum(file: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&file[..HASH_AT.start]);
    h.update([0u8; HASH_AT.end - HASH_AT.start]);
    h.update(&file[HASH_AT.end..]);
    h.finalize().into()
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
    xattr_area: Spill,
    sparse: Spill,
}

impl Writer {
    fn new(dir: Option<PathBuf>) -> Writer {
        Writer {
            entries: Spill::new(dir.clone()),
            strings: Spill::new(dir.clone()),
            xattr_area: Spill::new(dir.clone()),
            sparse: Spill::new(dir),
        }
    }

    fn string(&mut self, s: &[u8]) -> io::Result<(u32, u32)> {
        let off = self.strings.append(s)? as u32;
        Ok((off, s.len() as u32))
    }

    fn xattrs(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<(u32, u32)> {
        let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = xattrs.iter().collect();
        sorted.sort();
        let mut area = Vec::new();
        for (k, v) in sorted {
            area.extend_from_slice(&(k.len() as u16).to_le_bytes());
            area.extend_from_slice(&(v.len() as u32).to_le_bytes());
            area.extend_from_slice(k);
            area.extend_from_slice(v);
        }
        let off = self.xattr_area.append(&area)?;
        Ok((off as u32, area.len() as u32))
    }
}

/// A layer index opened for reading. The file is mapped; nothing is copied.
pub struct LayerIndex {
    map: memmap2::Mmap,
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
    /// of the whole file, and that it belongs to blob `digest`.
    pub fn open(path: &Path, digest: &Digest) -> Result<LayerIndex, LayerError> {
        let bad = |why: &str| LayerError::BadIndex {
            path: path.to_path_buf(),
            why: why.to_string(),
        };
        let file = File::open(path).map_err(|e| LayerError::io(path, e))?;
        // SAFETY: index files are only ever replaced by rename, never written in
        // place, so the mapped bytes cannot change under us.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| LayerError::io(path, e))?;
        let b = &map[..];
        if b.len() < HEADER_LEN || &b[0..8] != MAGIC {
            return Err(bad("not a layerfs index"));
        }
        if rd_u32(b, 8) != VERSION {
            return Err(bad("index version is not supported"));
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
        let n = |i: usize| rd_u32(b, 96 + 4 * i) as usize;
        let (n_entries, n_dirs, n_groups, n_members, n_sparse, n_cps, n_ext) =
            (n(0), n(1), n(2), n(3), n(4), n(5), n(6));
        let strings_len = rd_u64(b, 128) as usize;
        let xattrs_len = rd_u64(b, 136) as usize;
        let windows_len = rd_u64(b, 144) as usize;
        let n_blob_spans = rd_u32(b, 184) as usize;
        let sizes = [
            n_entries.checked_mul(ENTRY_LEN),
            n_dirs.checked_mul(DIR_LEN),
            n_groups.checked_mul(GROUP_LEN),
            n_members.checked_mul(4),
            n_ext.checked_mul(4),
            n_sparse.checked_mul(SPARSE_LEN),
            n_cps.checked_mul(CHECKPOINT_LEN),
            Some(strings_len),
            Some(xattrs_len),
            Some(windows_len),
            n_blob_spans.checked_mul(BLOB_SPAN_LEN),
        ];
        let mut offs = [0usize; 12];
        offs[0] = HEADER_LEN;
        for (i, s) in sizes.iter().enumerate() {
            offs[i + 1] = s
                .and_then(|s| offs[i].checked_add(s))
                .ok_or_else(|| bad("section sizes overflow"))?;
        }
        if offs[11] != b.len() {
            return Err(bad("truncated or oversized"));
        }
        if checksum(b)[..] != b[HASH_AT] {
            return Err(bad("checksum mismatch"));
        }
        if n_entries == 0 || n_dirs == 0 {
            return Err(bad("has no root directory"));
        }
        Ok(LayerIndex {
            meta,
            n_entries: n_entries as u32,
            n_dirs: n_dirs as u32,
            n_checkpoints: n_cps as u32,
            n_externals: n_ext as u32,
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
            windows_len,
            blob_spans: offs[10],
            n_blob_spans: n_blob_spans as u32,
            chunk_spans: b[13] == 1,
            map,
        })
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

    /// The deflated inflate window stored for a checkpoint.
    pub fn window(&self, c: &Checkpoint) -> &[u8] {
        let start = c.window_offset as usize;
        let end = start.saturating_add(c.window_len as usize);
        if end > self.windows_len {
            return &[];
        }
        self.bytes()
            .get(self.windows + start..self.windows + end)
            .unwrap_or(&[])
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
    fn u32_at(&self, off: usize) -> u32 {
        rd_u32(self.index.bytes(), self.base + off)
    }
    fn u64_at(&self, off: usize) -> u64 {
        rd_u64(self.index.bytes(), self.base + off)
    }
    pub fn id(&self) -> u32 {
        self.id
    }
    pub fn name(&self) -> &'a [u8] {
        self.index.string(self.u32_at(0), self.u32_at(4))
    }
    /// The id of the directory holding this entry (NONE for the root).
    pub fn parent(&self) -> u32 {
        self.u32_at(8)
    }
    pub fn kind(&self) -> EntryKind {
        EntryKind::from_u8(self.index.bytes().get(self.base + 12).copied().unwrap_or(1))
    }
    pub fn is_implicit(&self) -> bool {
        self.index.bytes().get(self.base + 13).copied().unwrap_or(0) & FLAG_IMPLICIT != 0
    }
    pub fn mode(&self) -> u32 {
        self.u32_at(16)
    }
    pub fn uid(&self) -> u32 {
        self.u32_at(20)
    }
    pub fn gid(&self) -> u32 {
        self.u32_at(24)
    }
    pub fn mtime(&self) -> (i64, u32) {
        (self.u64_at(32) as i64, self.u32_at(28))
    }
    pub fn size(&self) -> u64 {
        self.u64_at(40)
    }
    pub fn data_offset(&self) -> u64 {
        self.u64_at(48)
    }
    /// Symlink target, or the path a hard link names.
    pub fn link(&self) -> &'a [u8] {
        self.index.string(self.u32_at(56), self.u32_at(60))
    }
    /// For a hard link, the entry it names in this layer (NONE if in a lower one).
    pub fn target(&self) -> u32 {
        match self.kind() {
            EntryKind::HardLink => self.u32_at(64),
            _ => NONE,
        }
    }
    /// For a directory, its `Dir`.
    pub fn as_dir(&self) -> Option<Dir<'a>> {
        (self.kind() == EntryKind::Directory).then(|| self.index.dir(self.u32_at(64)))
    }
    /// The hardlink group this entry belongs to, if any.
    pub fn group(&self) -> Option<u32> {
        let g = self.u32_at(68);
        (g != NONE).then_some(g)
    }
    pub fn rdev(&self) -> (u32, u32) {
        (self.u32_at(72), self.u32_at(76))
    }
    pub fn has_xattrs(&self) -> bool {
        self.u32_at(84) > 0
    }
    /// Extended attributes as (name, value) byte pairs, sorted by name.
    pub fn xattrs(&self) -> XattrIter<'a> {
        let start = self.index.xattrs + self.u32_at(80) as usize;
        let end = start + self.u32_at(84) as usize;
        XattrIter {
            data: self.index.bytes().get(start..end).unwrap_or(&[]),
        }
    }
    /// Stored extents of a sparse file: (offset in file, length).
    pub fn sparse(&self) -> Vec<(u64, u64)> {
        // Only extents inside the sparse section: a damaged count must not
        // make a read collect billions of them.
        let in_section = (self.index.checkpoints - self.index.sparse) / SPARSE_LEN;
        let first = (self.u32_at(88) as usize).min(in_section);
        let n = (self.u32_at(92) as usize).min(in_section - first);
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
        self.u32_at(92) > 0
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
