//! `UnionFs`: the merged view of a stack of layers, as a filesystem sees it —
//! inodes, lookup, attributes, directory listings, reads, links and xattrs —
//! with no FUSE types, so it is tested without mounting.
//!
//! Each directory is merged once, on first use, from the layers that
//! contribute to it (top first, stopping at an opaque marker or a non-directory),
//! and the sorted result is cached on its inode; a lookup is then a binary
//! search, whatever the number of layers. Inode numbers are derived from the
//! topmost layer entry of a path (a hard link uses its target's), so they are
//! stable for the mount's life, equal in lookup and readdir, and the same for
//! every name of a hard-linked file.

use super::attr::{Attr, FileKind, Timestamp};
use super::error::{Result, UnionError};
use super::stack::{LowerRef, Stack};
use crate::layer::{Entry, EntryKind, NONE};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

pub const ROOT_INO: u64 = 1;

/// Inode number of a lower entry: layer+1 in the high bits, entry id low.
fn lower_ino((layer, entry): LowerRef) -> u64 {
    ((layer as u64 + 1) << 40) | entry as u64
}

/// One name in a merged directory.
#[derive(Clone, Debug)]
pub struct Child {
    pub name: Box<[u8]>,
    pub ino: u64,
    pub kind: FileKind,
    /// The entry that gives this name its data and metadata (for a hard link:
    /// the link's target; for a directory: its topmost layer).
    src: LowerRef,
    /// For a directory: every layer directory merged into it, top first.
    chain: Arc<[(u16, u32)]>,
}

/// A merged directory listing, sorted by name.
#[derive(Debug, Default)]
pub struct Listing {
    pub children: Vec<Child>,
    subdirs: u32,
}

impl Listing {
    fn find(&self, name: &[u8]) -> Option<&Child> {
        self.children
            .binary_search_by(|c| (*c.name).cmp(name))
            .ok()
            .map(|i| &self.children[i])
    }
}

struct Node {
    kind: FileKind,
    src: LowerRef,
    chain: Arc<[(u16, u32)]>,
    /// References the kernel holds (lookups minus forgets).
    lookups: u64,
    listing: Option<Arc<Listing>>,
}

struct DirHandle {
    ino: u64,
    parent: u64,
    listing: Arc<Listing>,
}

#[derive(Default)]
struct Table {
    nodes: HashMap<u64, Node>,
    /// Parent of each directory inode, for "..".
    parents: HashMap<u64, u64>,
    dirs: HashMap<u64, DirHandle>,
    next_fh: u64,
    /// st_nlink of hard-linked files, counted over the merged view.
    nlinks: HashMap<u64, u32>,
}

/// An entry as `readdir` reports it; `offset` resumes after it.
pub struct DirEntry<'a> {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a [u8],
}

pub struct UnionFs {
    stack: Stack,
    table: Mutex<Table>,
}

impl UnionFs {
    pub fn new(stack: Stack) -> UnionFs {
        let fs = UnionFs {
            stack,
            table: Mutex::new(Table {
                next_fh: 1,
                ..Default::default()
            }),
        };
        let chain = fs.root_chain();
        let src = chain.first().map_or((0, 0), |&(l, _)| (l, 0));
        fs.lock().nodes.insert(
            ROOT_INO,
            Node {
                kind: FileKind::Directory,
                src,
                chain,
                lookups: 1,
                listing: None,
            },
        );
        fs
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The root directories of the layers, top first, down to an opaque one.
    fn root_chain(&self) -> Arc<[(u16, u32)]> {
        let mut chain = Vec::new();
        for l in (0..self.stack.layers.len()).rev() {
            let root = self.stack.layers[l].index.root();
            chain.push((l as u16, root.id()));
            if root.is_opaque() {
                break;
            }
        }
        chain.into()
    }

    fn entry(&self, (l, id): LowerRef) -> Entry<'_> {
        self.stack.layers[l as usize].index.entry(id)
    }

    /// Merges the layer directories of `chain` into one sorted listing.
    fn merge(&self, chain: &[(u16, u32)]) -> Listing {
        struct Building {
            child: Child,
            chain: Vec<(u16, u32)>,
            /// Lower layers may still add to this directory.
            open: bool,
        }
        let mut out: Vec<Building> = Vec::new();
        let mut pos: HashMap<Box<[u8]>, usize> = HashMap::new();
        let mut hidden: HashSet<Box<[u8]>> = HashSet::new();
        for &(l, d) in chain {
            let index = &self.stack.layers[l as usize].index;
            let dir = index.dir(d);
            let mut whiteouts: Vec<&[u8]> = Vec::new();
            for id in dir.children() {
                let e = index.entry(id);
                let name = e.name();
                if e.kind() == EntryKind::Whiteout {
                    whiteouts.push(name);
                    continue;
                }
                if hidden.contains(name) {
                    continue;
                }
                let whited_here = whiteouts.last() == Some(&name);
                if let Some(&i) = pos.get(name) {
                    let b = &mut out[i];
                    match e.as_dir() {
                        Some(sub) if b.open && b.child.kind == FileKind::Directory => {
                            b.chain.push((l, sub.id()));
                            b.open = !sub.is_opaque();
                        }
                        _ => b.open = false,
                    }
                    continue;
                }
                let Some((src, kind)) = self.resolve(l, &e) else {
                    continue;
                };
                let (sub_chain, open) = match e.as_dir() {
                    Some(sub) => (vec![(l, sub.id())], !sub.is_opaque() && !whited_here),
                    None => (Vec::new(), false),
                };
                pos.insert(name.into(), out.len());
                out.push(Building {
                    child: Child {
                        name: name.into(),
                        ino: lower_ino(src),
                        kind,
                        src,
                        chain: Arc::from([]),
                    },
                    chain: sub_chain,
                    open,
                });
            }
            for name in whiteouts {
                match pos.get(name) {
                    Some(&i) => out[i].open = false,
                    None => {
                        hidden.insert(name.into());
                    }
                }
            }
            if dir.is_opaque() {
                break;
            }
        }
        let mut children: Vec<Child> = out
            .into_iter()
            .map(|b| Child {
                chain: b.chain.into(),
                ..b.child
            })
            .collect();
        children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let subdirs = children
            .iter()
            .filter(|c| c.kind == FileKind::Directory)
            .count() as u32;
        Listing { children, subdirs }
    }

    /// The entry that serves `e` (a hard link's target) and its kind; None for
    /// a link whose target is missing.
    fn resolve(&self, layer: u16, e: &Entry<'_>) -> Option<(LowerRef, FileKind)> {
        let src = match e.kind() {
            EntryKind::HardLink if e.target() != NONE => (layer, e.target()),
            EntryKind::HardLink => *self.stack.external.get(&(layer, e.id()))?,
            _ => (layer, e.id()),
        };
        Some((src, kind_of(self.entry(src).kind())?))
    }

    /// The listing of directory `ino`, merged on first use.
    fn listing(&self, t: &mut Table, ino: u64) -> Result<Arc<Listing>> {
        let node = t.nodes.get(&ino).ok_or(UnionError::BadHandle)?;
        if node.kind != FileKind::Directory {
            return Err(UnionError::NotDir);
        }
        if let Some(l) = &node.listing {
            return Ok(l.clone());
        }
        let chain = node.chain.clone();
        let listing = Arc::new(self.merge(&chain));
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.listing = Some(listing.clone());
        }
        Ok(listing)
    }

    /// Records a kernel reference to `child` of `parent`.
    fn remember(t: &mut Table, parent: u64, c: &Child) {
        let node = t.nodes.entry(c.ino).or_insert_with(|| Node {
            kind: c.kind,
            src: c.src,
            chain: c.chain.clone(),
            lookups: 0,
            listing: None,
        });
        node.lookups += 1;
        if c.kind == FileKind::Directory {
            t.parents.insert(c.ino, parent);
        }
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        let mut t = self.lock();
        let listing = self.listing(&mut t, parent)?;
        let child = listing.find(name).ok_or(UnionError::NotFound)?;
        Self::remember(&mut t, parent, child);
        self.attr(&mut t, child.ino)
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.lock();
        if let Some(node) = t.nodes.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
            if node.lookups == 0 {
                t.nodes.remove(&ino);
                t.parents.remove(&ino);
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        let mut t = self.lock();
        self.attr(&mut t, ino)
    }

    fn attr(&self, t: &mut Table, ino: u64) -> Result<Attr> {
        let node = t.nodes.get(&ino).ok_or(UnionError::BadHandle)?;
        let (kind, src, chain) = (node.kind, node.src, node.chain.clone());
        if kind == FileKind::Directory {
            let listing = self.listing(t, ino)?;
            // Metadata from the topmost directory a tar listed; one a layer only
            // implied (a missing parent) does not override it.
            let meta = chain
                .iter()
                .map(|&(l, d)| self.stack.layers[l as usize].index.dir(d).entry())
                .find(|e| !e.is_implicit())
                .unwrap_or_else(|| self.entry(src));
            let mut a = entry_attr(ino, &meta, kind);
            a.nlink = 2 + listing.subdirs;
            return Ok(a);
        }
        let e = self.entry(src);
        let mut a = entry_attr(ino, &e, kind);
        if e.group().is_some() || self.stack.external_members.contains_key(&src) {
            a.nlink = match t.nlinks.get(&ino) {
                Some(&n) => n,
                None => {
                    let n = self.count_links(t, src);
                    t.nlinks.insert(ino, n);
                    n
                }
            };
        }
        Ok(a)
    }

    /// How many names of the merged view reach the hard-linked entry `src`:
    /// its group in its layer and the links to it from higher layers, each
    /// counted only if no higher layer hides or replaces its path.
    fn count_links(&self, t: &mut Table, src: LowerRef) -> u32 {
        let e = self.entry(src);
        let index = &self.stack.layers[src.0 as usize].index;
        let mut members: Vec<LowerRef> = match e.group() {
            Some(g) => index.group_members(g).map(|m| (src.0, m)).collect(),
            None => vec![src],
        };
        members.extend(
            self.stack
                .external_members
                .get(&src)
                .into_iter()
                .flatten()
                .copied(),
        );
        let visible = members
            .iter()
            .filter(|&&m| {
                self.resolve_path(t, &self.entry(m).path())
                    .is_some_and(|c| c.src == src)
            })
            .count() as u32;
        visible.max(1)
    }

    /// The child a path names in the merged view, merging directories on the way.
    fn resolve_path(&self, t: &mut Table, path: &[u8]) -> Option<Child> {
        let mut dir_ino = ROOT_INO;
        let mut dir_chain: Option<Arc<[(u16, u32)]>> = None;
        let mut comps = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .peekable();
        while let Some(name) = comps.next() {
            let listing = match (
                &dir_chain,
                t.nodes.get(&dir_ino).and_then(|n| n.listing.clone()),
            ) {
                (_, Some(l)) => l,
                (None, None) => self.listing(t, dir_ino).ok()?,
                (Some(chain), None) => Arc::new(self.merge(chain)),
            };
            let child = listing.find(name)?.clone();
            if comps.peek().is_none() {
                return Some(child);
            }
            if child.kind != FileKind::Directory {
                return None;
            }
            dir_ino = child.ino;
            dir_chain = Some(child.chain.clone());
        }
        None
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let src = self.src_of(ino)?;
        let e = self.entry(src);
        if e.kind() != EntryKind::Symlink {
            return Err(UnionError::Invalid);
        }
        Ok(e.link().to_vec())
    }

    fn src_of(&self, ino: u64) -> Result<LowerRef> {
        self.lock()
            .nodes
            .get(&ino)
            .map(|n| n.src)
            .ok_or(UnionError::BadHandle)
    }

    /// Opens directory `ino` for reading: a snapshot of its listing, so
    /// offsets stay valid for the handle's life (seekdir/telldir).
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let mut t = self.lock();
        let listing = self.listing(&mut t, ino)?;
        let parent = if ino == ROOT_INO {
            ROOT_INO
        } else {
            t.parents.get(&ino).copied().unwrap_or(ROOT_INO)
        };
        let fh = t.next_fh;
        t.next_fh += 1;
        t.dirs.insert(
            fh,
            DirHandle {
                ino,
                parent,
                listing,
            },
        );
        Ok(fh)
    }

    fn parent_of(&self, t: &Table, ino: u64) -> u64 {
        if ino == ROOT_INO {
            ROOT_INO
        } else {
            t.parents.get(&ino).copied().unwrap_or(ROOT_INO)
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.lock().dirs.remove(&fh);
    }

    /// Lists entries of directory `ino` after `offset` (0 = from the start)
    /// until `add` says the reply is full. `fh` is a handle from `opendir`, or
    /// 0 to list the directory as it is now (stable offsets while it does not
    /// change). With `plus`, each entry's attributes are given too and count
    /// as a lookup, as readdirplus requires ("." and ".." excepted).
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirEntry<'_>, Option<&Attr>) -> bool,
    ) -> Result<()> {
        let mut t = self.lock();
        let (parent, listing) = match t.dirs.get(&fh) {
            Some(h) if fh != 0 && h.ino == ino => (h.parent, h.listing.clone()),
            Some(_) | None if fh != 0 => return Err(UnionError::BadHandle),
            _ => {
                let listing = self.listing(&mut t, ino)?;
                (self.parent_of(&t, ino), listing)
            }
        };
        let mut i = offset;
        // Offsets: 1 = ".", 2 = "..", 3.. = children; each names the next entry.
        while i < 2 {
            let (e_ino, name): (u64, &[u8]) = if i == 0 { (ino, b".") } else { (parent, b"..") };
            let attr = if plus {
                Some(self.attr(&mut t, e_ino)?)
            } else {
                None
            };
            let ent = DirEntry {
                ino: e_ino,
                offset: i + 1,
                kind: FileKind::Directory,
                name,
            };
            if !add(&ent, attr.as_ref()) {
                return Ok(());
            }
            i += 1;
        }
        for c in listing.children.iter().skip((i - 2) as usize) {
            i += 1;
            let ent = DirEntry {
                ino: c.ino,
                offset: i,
                kind: c.kind,
                name: &c.name,
            };
            if plus {
                Self::remember(&mut t, ino, c);
                let attr = self.attr(&mut t, c.ino)?;
                if !add(&ent, Some(&attr)) {
                    // Not sent: the reference it took is not the kernel's.
                    if let Some(n) = t.nodes.get_mut(&c.ino) {
                        n.lookups -= 1;
                        if n.lookups == 0 {
                            t.nodes.remove(&c.ino);
                        }
                    }
                    return Ok(());
                }
            } else if !add(&ent, None) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The layer entry a file inode reads from: its number says it, so reads
    /// take no lock and need no open handle.
    fn file_src(&self, ino: u64) -> Result<(&crate::layer::Layer, Entry<'_>)> {
        let layer = (ino >> 40).checked_sub(1).ok_or(UnionError::BadHandle)?;
        let l = self
            .stack
            .layers
            .get(layer as usize)
            .ok_or(UnionError::BadHandle)?;
        let id = (ino & ((1 << 40) - 1)) as u32;
        let e = l.index.entry(id);
        match e.kind() {
            EntryKind::Regular => Ok((l, e)),
            EntryKind::Directory => Err(UnionError::IsDir),
            _ => Err(UnionError::Invalid),
        }
    }

    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (layer, e) = self.file_src(ino)?;
        match layer.read_at(&e, offset, buf) {
            Ok(n) => Ok(n),
            Err(err) => {
                log::error!("read of {:?}: {err}", String::from_utf8_lossy(&e.path()));
                Err(err.into())
            }
        }
    }

    /// SEEK_DATA (`data`) / SEEK_HOLE from `offset`; ENXIO past the data.
    pub fn seek(&self, ino: u64, offset: u64, data: bool) -> Result<u64> {
        let (layer, e) = self.file_src(ino)?;
        layer
            .seek_data(&e, offset, data)
            .ok_or_else(|| UnionError::Io(std::io::Error::from_raw_os_error(libc::ENXIO)))
    }

    /// NUL-separated attribute names.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let src = self.meta_src(ino)?;
        let mut out = Vec::new();
        for (k, _) in self.entry(src).xattrs() {
            out.extend_from_slice(k);
            out.push(0);
        }
        Ok(out)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        let src = self.meta_src(ino)?;
        let e = self.entry(src);
        if !e.has_xattrs() {
            return Err(UnionError::NoData);
        }
        e.xattrs()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_vec())
            .ok_or(UnionError::NoData)
    }

    /// The entry whose metadata an inode shows (for a directory, the topmost
    /// one a tar listed).
    fn meta_src(&self, ino: u64) -> Result<LowerRef> {
        let t = self.lock();
        let node = t.nodes.get(&ino).ok_or(UnionError::BadHandle)?;
        if node.kind != FileKind::Directory {
            return Ok(node.src);
        }
        Ok(node
            .chain
            .iter()
            .map(|&(l, d)| (l, self.stack.layers[l as usize].index.dir(d).entry().id()))
            .find(|&r| !self.entry(r).is_implicit())
            .unwrap_or(node.src))
    }

    /// Total bytes and entries of the layers, for statfs.
    pub fn usage(&self) -> (u64, u64) {
        let bytes = self
            .stack
            .layers
            .iter()
            .map(|l| l.index.meta().uncompressed_size)
            .sum();
        let files = self.stack.layers.iter().map(|l| l.index.len() as u64).sum();
        (bytes, files)
    }
}

fn kind_of(k: EntryKind) -> Option<FileKind> {
    Some(match k {
        EntryKind::Regular => FileKind::Regular,
        EntryKind::Directory => FileKind::Directory,
        EntryKind::Symlink => FileKind::Symlink,
        EntryKind::CharDevice => FileKind::CharDevice,
        EntryKind::BlockDevice => FileKind::BlockDevice,
        EntryKind::Fifo => FileKind::Fifo,
        EntryKind::Socket => FileKind::Socket,
        EntryKind::Whiteout | EntryKind::HardLink => return None,
    })
}

fn entry_attr(ino: u64, e: &Entry<'_>, kind: FileKind) -> Attr {
    let (secs, nsecs) = e.mtime();
    let t = Timestamp { secs, nsecs };
    let size = match kind {
        FileKind::Regular => e.size(),
        FileKind::Symlink => e.link().len() as u64,
        FileKind::Directory => 4096,
        _ => 0,
    };
    let stored = if e.is_sparse() {
        e.sparse().iter().map(|x| x.1).sum()
    } else {
        size
    };
    let blocks = match kind {
        FileKind::Regular | FileKind::Directory => stored.div_ceil(4096) * 8,
        _ => 0,
    };
    let (major, minor) = e.rdev();
    Attr {
        ino,
        kind,
        // Linux shows every symlink as 0777 whatever its creator asked (tar
        // headers from some tools say 0755); umoci and overlayfs show 0777 too.
        perm: if kind == FileKind::Symlink {
            0o777
        } else {
            e.mode() & 0o7777
        },
        nlink: 1,
        uid: e.uid(),
        gid: e.gid(),
        size,
        blocks,
        rdev: libc::makedev(major, minor),
        atime: t,
        mtime: t,
        ctime: t,
    }
}
