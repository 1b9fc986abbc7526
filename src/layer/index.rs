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
use std::path::Path;

const MAGIC: &[u8; 8] = b"LFSIDX\0\x01";
/// 2: the checksum covers the header and the windows.
/// 3: the sha256 of each span of the compressed blob (lazy images).
const VERSION: u32 = 3;
/// Bytes of compressed blob per span digest: the unit a lazy read fetches.
pub const BLOB_SPAN: u64 = 128 << 10;
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
/// entries exists once, however deep.
struct Node {
    parent: u32,
    name: Vec<u8>,
    /// The entry at this path (the last one with the path wins).
    real: Option<usize>,
    /// A whiteout hiding this path in lower layers.
    whiteout: Option<usize>,
    opaque: bool,
    /// Child nodes by name.
    children: HashMap<Vec<u8>, u32>,
}

const ROOT_NODE: u32 = 0;

/// Collects the entries of one layer in stream order and lays out the index.
pub struct IndexBuilder {
    entries: Vec<NewEntry>,
    nodes: Vec<Node>,
    /// Hard links whose target the archive did not hold before them: the
    /// target's path and the link's. The target must not come later.
    unresolved_links: HashMap<Vec<u8>, Vec<u8>>,
}

impl Default for IndexBuilder {
    fn default() -> Self {
        IndexBuilder {
            entries: Vec::new(),
            nodes: vec![Node {
                parent: NONE,
                name: Vec::new(),
                real: None,
                whiteout: None,
                opaque: false,
                children: HashMap::new(),
            }],
            unresolved_links: HashMap::new(),
        }
    }
}

impl IndexBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry whose path is already normalized (no `./`, no leading or
    /// trailing `/`, `""` for the root). Refuses an entry under a path the
    /// archive made a non-directory (extracting it would write through a
    /// symlink or fail) and a hard link whose target comes after it.
    pub fn add(&mut self, e: NewEntry) -> Result<(), LayerError> {
        let n = self.walk(&e.path)? as usize;
        if e.kind == EntryKind::Whiteout {
            match self.nodes[n].whiteout {
                Some(old) => self.entries[old] = e,
                None => {
                    self.nodes[n].whiteout = Some(self.entries.len());
                    self.entries.push(e);
                }
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
            Some(old) => self.entries[old] = e,
            None => {
                self.nodes[n].real = Some(self.entries.len());
                self.entries.push(e);
            }
        }
        Ok(())
    }

    /// Marks directory `path` opaque (`path/.wh..wh..opq`).
    pub fn add_opaque(&mut self, path: &[u8]) -> Result<(), LayerError> {
        let n = self.walk(path)? as usize;
        if let Some(r) = self.nodes[n].real
            && self.entries[r].kind != EntryKind::Directory
        {
            return Err(LayerError::UnderNonDir {
                path: short_name(&[path, b"/.wh..wh..opq"].concat()),
                parent: short_name(path),
            });
        }
        self.nodes[n].opaque = true;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
            if let Some(r) = self.nodes[cur as usize].real
                && self.entries[r].kind != EntryKind::Directory
            {
                return Err(LayerError::UnderNonDir {
                    path: short_name(path),
                    parent: short_name(&path[..end.max(1) - 1]),
                });
            }
            end += comp.len() + 1;
            cur = match self.nodes[cur as usize].children.get(comp) {
                Some(&c) => c,
                None => {
                    let id = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        parent: cur,
                        name: comp.to_vec(),
                        real: None,
                        whiteout: None,
                        opaque: false,
                        children: HashMap::new(),
                    });
                    self.nodes[cur as usize].children.insert(comp.to_vec(), id);
                    id
                }
            };
        }
        Ok(cur)
    }

    /// The real entry at `path`, if any.
    fn find(&self, path: &[u8]) -> Option<usize> {
        let mut cur = ROOT_NODE;
        if !path.is_empty() {
            for comp in path.split(|&c| c == b'/') {
                cur = *self.nodes[cur as usize].children.get(comp)?;
            }
        }
        self.nodes[cur as usize].real
    }

    /// Detaches everything under node `n`; it can no longer be found.
    fn drop_children(&mut self, n: usize) {
        self.nodes[n].children = HashMap::new();
    }

    /// Lays out and serializes the index.
    pub fn finish(
        mut self,
        meta: &IndexMeta,
        checkpoints: &[Checkpoint],
        windows: &[u8],
        blob_spans: &crate::store::SpanTable,
    ) -> Result<Vec<u8>, LayerError> {
        // Every node with something under it is a directory; those the tar
        // did not list become implicit ones (their metadata does not override
        // a lower layer's). Directories get their ids sorted by full path.
        let is_dir = |b: &IndexBuilder, n: u32| {
            let node = &b.nodes[n as usize];
            n == ROOT_NODE
                || !node.children.is_empty()
                || node.opaque
                || node
                    .real
                    .is_some_and(|r| b.entries[r].kind == EntryKind::Directory)
        };
        let mut dirs: Vec<(Vec<u8>, u32)> = Vec::new();
        let mut stack: Vec<(u32, Vec<u8>)> = vec![(ROOT_NODE, Vec::new())];
        while let Some((n, path)) = stack.pop() {
            for &c in self.nodes[n as usize].children.values() {
                if is_dir(&self, c) {
                    let mut p = path.clone();
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(&self.nodes[c as usize].name);
                    stack.push((c, p));
                }
            }
            if self.nodes[n as usize].real.is_none() {
                self.nodes[n as usize].real = Some(self.entries.len());
                self.entries.push(NewEntry::implicit_dir(path.clone()));
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
        let mut order: Vec<(usize, u32)> = Vec::with_capacity(self.entries.len());
        if let Some(r) = self.nodes[ROOT_NODE as usize].real {
            order.push((r, ROOT_NODE));
        }
        for &(_, n) in &dirs {
            let mut kids: Vec<(&Vec<u8>, u32)> = self.nodes[n as usize]
                .children
                .iter()
                .map(|(name, &c)| (name, c))
                .collect();
            kids.sort_unstable();
            for (_, c) in kids {
                let node = &self.nodes[c as usize];
                order.extend(node.whiteout.map(|w| (w, c)));
                order.extend(node.real.map(|r| (r, c)));
            }
        }
        let mut new_id = vec![NONE; self.entries.len()];
        for (n, &(old, _)) in order.iter().enumerate() {
            new_id[old] = n as u32;
        }
        let parent_dir = |node: u32| -> u32 {
            match self.nodes[node as usize].parent {
                NONE => NONE,
                p => dir_of_node[p as usize],
            }
        };

        // Hardlinks: resolve each to its final target within this layer.
        let mut target = vec![NONE; order.len()];
        for (n, &(old, _)) in order.iter().enumerate() {
            let e = &self.entries[old];
            if e.kind != EntryKind::HardLink {
                continue;
            }
            let mut seen = 0;
            let mut cur = self.find(&e.link);
            while let Some(c) = cur {
                let ce = &self.entries[c];
                if ce.kind != EntryKind::HardLink || seen > 64 || new_id[c] == NONE {
                    break;
                }
                seen += 1;
                cur = self.find(&ce.link);
            }
            if let Some(c) = cur {
                let t = &self.entries[c];
                if new_id[c] != NONE
                    && !matches!(t.kind, EntryKind::HardLink | EntryKind::Directory)
                    && c != old
                {
                    target[n] = new_id[c];
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
        let mut w = Writer::default();
        let mut dirs_out: Vec<[u32; 6]> = vec![[0, 0, NONE, 0, 0, 0]; dirs.len()];
        for (n, &(old, node)) in order.iter().enumerate() {
            let e = &self.entries[old];
            let parent = parent_dir(node);
            if parent != NONE {
                let d = &mut dirs_out[parent as usize];
                if d[4] == 0 {
                    d[3] = n as u32;
                }
                d[4] += 1;
            }
            let (name_off, name_len) = w.string(&self.nodes[node as usize].name);
            let (link_off, link_len) = w.string(&e.link);
            let (x_off, x_len) = w.xattrs(&e.xattrs);
            let sparse_off = (w.sparse.len() / SPARSE_LEN) as u32;
            for (o, l) in &e.sparse {
                w.sparse.extend_from_slice(&o.to_le_bytes());
                w.sparse.extend_from_slice(&l.to_le_bytes());
            }
            let slot = match e.kind {
                EntryKind::Directory => dir_of_node[node as usize],
                _ => target[n],
            };
            let rec = &mut w.entries;
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
                None => w.string(path).0,
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
        let dirs_bytes_len = dirs_out.len() * DIR_LEN;
        let mut dir_bytes = Vec::with_capacity(dirs_bytes_len);
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
        let mut externals = Vec::new();
        for (n, &(old, _)) in order.iter().enumerate() {
            if self.entries[old].kind == EntryKind::HardLink && target[n] == NONE {
                externals.extend_from_slice(&(n as u32).to_le_bytes());
            }
        }
        let counts = Counts {
            externals: externals.len() / 4,
            entries: order.len(),
            dirs: dirs.len(),
            groups: group_list.len(),
            members: members.len() / 4,
            sparse: w.sparse.len() / SPARSE_LEN,
            checkpoints: checkpoints.len(),
            strings: w.strings.len(),
            xattrs: w.xattr_area.len(),
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
        let sections: [&[u8]; 11] = [
            &w.entries,
            &dir_bytes,
            &groups_bytes,
            &members,
            &externals,
            &w.sparse,
            &cps,
            &w.strings,
            &w.xattr_area,
            windows,
            &span_bytes,
        ];
        let mut out =
            Vec::with_capacity(HEADER_LEN + sections.iter().map(|s| s.len()).sum::<usize>());
        out.extend_from_slice(&encode_header(meta, &counts));
        for s in sections {
            out.extend_from_slice(s);
        }
        let hash = checksum(&out);
        out[HASH_AT].copy_from_slice(&hash);
        Ok(out)
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

#[derive(Default)]
struct Writer {
    entries: Vec<u8>,
    strings: Vec<u8>,
    xattr_area: Vec<u8>,
    sparse: Vec<u8>,
}

impl Writer {
    fn string(&mut self, s: &[u8]) -> (u32, u32) {
        let off = self.strings.len() as u32;
        self.strings.extend_from_slice(s);
        (off, s.len() as u32)
    }

    fn xattrs(&mut self, xattrs: &[(Vec<u8>, Vec<u8>)]) -> (u32, u32) {
        let off = self.xattr_area.len();
        let mut sorted: Vec<&(Vec<u8>, Vec<u8>)> = xattrs.iter().collect();
        sorted.sort();
        for (k, v) in sorted {
            self.xattr_area
                .extend_from_slice(&(k.len() as u16).to_le_bytes());
            self.xattr_area
                .extend_from_slice(&(v.len() as u32).to_le_bytes());
            self.xattr_area.extend_from_slice(k);
            self.xattr_area.extend_from_slice(v);
        }
        (off as u32, (self.xattr_area.len() - off) as u32)
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
