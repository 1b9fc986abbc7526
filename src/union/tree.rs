//! `UnionFs`: the merged view of a stack of layers (and, for a container, its
//! upper directory), as a filesystem sees it — inodes, lookup, attributes,
//! directory listings, reads, links and xattrs — with no FUSE types, so it is
//! tested without mounting. Changes are in `write.rs`, merging in `merge.rs`.
//!
//! Each directory is merged once, on first use, and the sorted result is
//! cached on its inode (and edited in place by changes); a lookup is then a
//! binary search, whatever the number of layers. Inode numbers come from the
//! topmost layer entry of a path (a hard link uses its target's; a copied-up
//! file keeps its lower one, recorded as `origin`), so they are stable for
//! the mount's life, equal in lookup and readdir, and the same for every name
//! of a hard-linked file. Files only the container has use their host inode
//! (unless the kernel still holds that number for a deleted file).
//!
//! In a read-only mount a lower file (anything but a directory) has no
//! node: its number names its layer entry, which is all `stat`, `readlink`
//! and the xattr calls need, so the kernel's references to it cost nothing
//! (a walk of a million files keeps nodes for its directories only).
//! Merged listings of directories no container changed can be merged again
//! at will, so only the latest `LISTED_CHILDREN` names of them stay cached.
//!
//! The table lock guards memory only: no host I/O and no layer read happens
//! under it (a read may wait for the network). A call copies what it needs
//! out of the table (`view`), does its I/O, and takes the lock again to
//! record the result; a merged listing is kept only if no change touched
//! its directory meanwhile (`touch`, the table's epoch).

use super::attr::{Attr, FileKind, Timestamp};
use super::error::{Result, UnionError};
pub(crate) use super::name::Name;
use super::stack::{LowerRef, Stack};
use super::upper::UpperDir;
use crate::layer::{Entry, EntryKind};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

pub const ROOT_INO: u64 = 1;
/// The longest name a directory entry may have (what statfs reports).
pub const NAME_MAX: usize = 255;
const LOWER_SHIFT: u32 = 40;
const UPPER_INO: u64 = 1 << 62;
/// Numbers given to new upper entries whose host number the kernel still
/// holds for a deleted file (see `UnionFs::new_ino`); host inode numbers
/// stay below 2^61.
pub(crate) const FRESH_INO: u64 = UPPER_INO | 1 << 61;
/// How often a call that worked without the lock tries again when a change
/// overtook it, before it settles for what it found.
const RETRIES: u32 = 4;
/// How many names the cached listings of unchanged directories hold at most
/// (64 bytes each, and a name longer than 22 bytes its own); older ones are dropped, to be merged again when
/// asked for.
const LISTED_CHILDREN: usize = 1 << 14;

/// Inode number of a lower entry: layer+1 in the high bits, entry id low.
pub(crate) fn lower_ino((layer, entry): LowerRef) -> u64 {
    ((layer as u64 + 1) << LOWER_SHIFT) | entry as u64
}

/// The lower entry an inode number names, if it names one.
pub(crate) fn lower_of_ino(ino: u64) -> Option<LowerRef> {
    if ino & UPPER_INO != 0 {
        return None;
    }
    let layer = (ino >> LOWER_SHIFT).checked_sub(1)?;
    Some((
        u16::try_from(layer).ok()?,
        (ino & ((1 << LOWER_SHIFT) - 1)) as u32,
    ))
}

pub(crate) fn upper_ino(host_ino: u64) -> u64 {
    UPPER_INO | (host_ino & (UPPER_INO - 1))
}

/// Whether (and how) a name exists in the container's upper directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Upper {
    No,
    Full,
    /// Metadata only: the data is still the lower entry's.
    MetaCopy,
}

/// Where a name's content comes from.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    pub kind: FileKind,
    /// The lower entry behind it (a hard link's target; a directory's topmost).
    pub lower: Option<LowerRef>,
    /// For a directory: every layer directory merged into it, top first.
    pub chain: Arc<[(u16, u32)]>,
    pub upper: Upper,
    /// A lower entry is visible at this very path (so deleting the name needs
    /// a whiteout).
    pub lower_here: bool,
}

/// The chain of a name that is not a directory: one shared empty slice, so
/// that a file in a listing costs no allocation for it.
pub(crate) fn no_chain() -> Arc<[(u16, u32)]> {
    static EMPTY: std::sync::LazyLock<Arc<[(u16, u32)]>> =
        std::sync::LazyLock::new(|| Arc::from([]));
    EMPTY.clone()
}

/// One name in a merged directory.
#[derive(Clone, Debug)]
pub struct Child {
    pub name: Name,
    pub ino: u64,
    pub(crate) src: Source,
}

/// A merged directory listing, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Listing {
    pub children: Vec<Child>,
    pub(crate) subdirs: u32,
}

impl Listing {
    pub(crate) fn new(mut children: Vec<Child>) -> Listing {
        children.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let subdirs = children
            .iter()
            .filter(|c| c.src.kind == FileKind::Directory)
            .count() as u32;
        Listing { children, subdirs }
    }

    pub(crate) fn find(&self, name: &[u8]) -> Option<&Child> {
        self.children
            .binary_search_by(|c| (*c.name).cmp(name))
            .ok()
            .map(|i| &self.children[i])
    }

    /// Adds `child`, replacing a child of the same name.
    pub(crate) fn put(&mut self, child: Child) {
        if child.src.kind == FileKind::Directory {
            self.subdirs += 1;
        }
        match self
            .children
            .binary_search_by(|c| (*c.name).cmp(&child.name))
        {
            Ok(i) => {
                if self.children[i].src.kind == FileKind::Directory {
                    self.subdirs -= 1;
                }
                self.children[i] = child;
            }
            Err(i) => self.children.insert(i, child),
        }
    }

    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<Child> {
        let i = self
            .children
            .binary_search_by(|c| (*c.name).cmp(name))
            .ok()?;
        let c = self.children.remove(i);
        if c.src.kind == FileKind::Directory {
            self.subdirs -= 1;
        }
        Some(c)
    }
}

pub(crate) struct Node {
    pub src: Source,
    /// One path of this inode: its parent and its name there.
    pub parent: u64,
    pub name: Name,
    /// The other names the kernel knows a hard-linked file by: one of them
    /// becomes its path when that name goes away.
    pub aliases: Vec<(u64, Name)>,
    /// References the kernel holds (lookups minus forgets).
    pub lookups: u64,
    pub listing: Option<Arc<Listing>>,
    /// The cached listing was used since it was queued for eviction: it
    /// gets a second chance (see `Table::keep_listing`).
    pub listing_used: bool,
    /// An upper file whose last name was removed while it was open: it
    /// lives on in that open file, which is all `stat` can ask.
    pub detached: Option<Arc<super::handle::OpenFile>>,
    pub generation: u64,
    /// The table's epoch at this inode's last change (see `UnionFs::touch`).
    pub changed: u64,
    /// A file this mount made that no setxattr touched since: it has no
    /// `security.capability`, which the kernel asks for before a chown and
    /// a file's first write.
    pub no_caps: bool,
}

/// An inode as one call sees it: copied out of the table, so that the call
/// does its host I/O without holding the lock.
pub(crate) struct View {
    pub src: Source,
    pub path: Vec<u8>,
    /// Where `path` ends: its parent's inode and its name there.
    pub parent: u64,
    pub name: Name,
    pub detached: Option<Arc<super::handle::OpenFile>>,
    pub generation: u64,
}

impl Node {
    /// Makes `parent`/`name` this inode's path (the latest name wins); the
    /// previous one stays known as an alias.
    pub(crate) fn set_path(&mut self, parent: u64, name: &[u8]) {
        if self.parent == parent && *self.name == *name {
            return;
        }
        self.aliases
            .retain(|(p, n)| !(*p == parent && **n == *name));
        let old = (
            std::mem::replace(&mut self.parent, parent),
            std::mem::replace(&mut self.name, name.into()),
        );
        self.aliases.push(old);
    }

    /// Name `from` of this inode is now `to`.
    pub(crate) fn rename_path(&mut self, from: (u64, &[u8]), to: (u64, &[u8])) {
        self.aliases
            .retain(|(p, n)| !((*p, &**n) == from || (*p, &**n) == to));
        if (self.parent, &*self.name) != from {
            let old = (self.parent, std::mem::take(&mut self.name));
            self.aliases.push(old);
        }
        self.parent = to.0;
        self.name = to.1.into();
    }

    /// Name `parent`/`name` no longer leads here (unlinked, renamed away or
    /// replaced): another known name, if any, becomes the path.
    pub(crate) fn drop_name(&mut self, parent: u64, name: &[u8]) {
        self.aliases
            .retain(|(p, n)| !(*p == parent && **n == *name));
        if self.parent == parent
            && *self.name == *name
            && let Some((p, n)) = self.aliases.pop()
        {
            self.parent = p;
            self.name = n;
        }
    }
}

struct DirHandle {
    ino: u64,
    parent: u64,
    listing: Arc<Listing>,
}

pub(crate) struct Table {
    pub nodes: HashMap<u64, Node>,
    dirs: HashMap<u64, DirHandle>,
    next_fh: u64,
    /// st_nlink of hard-linked lower files, counted over the merged view.
    pub nlinks: HashMap<u64, u32>,
    /// Counts changes; what was computed without the lock (a merged
    /// listing, a link count) is kept only if no change came in between.
    pub epoch: u64,
    /// One lock per inode whose data is being copied up: a second writer
    /// waits on it rather than copying again.
    pub copying: HashMap<u64, Arc<Mutex<()>>>,
    /// Upper directories (by inode) that a copy-up put an entry in and no
    /// fsync has covered yet: an fsync beneath them syncs them too.
    pub unsynced: HashSet<u64>,
    /// Upper entries numbered anew (`UnionFs::new_ino`): host-derived
    /// number → the number they have in this mount.
    pub renumbered: HashMap<u64, u64>,
    pub next_ino: u64,
    /// Directories whose listing is cached while no container changed them,
    /// oldest first, with their number of names (see `LISTED_CHILDREN`).
    listed: VecDeque<(u64, usize)>,
    listed_children: usize,
    /// `LISTED_CHILDREN`, smaller in tests.
    pub listed_max: usize,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            nodes: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 0,
            nlinks: HashMap::new(),
            epoch: 0,
            copying: HashMap::new(),
            unsynced: HashSet::new(),
            renumbered: HashMap::new(),
            next_ino: 0,
            listed: VecDeque::new(),
            listed_children: 0,
            listed_max: LISTED_CHILDREN,
        }
    }
}

impl Table {
    pub(crate) fn next_fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    /// Caches `listing` on directory `ino`, unless it has one already; a
    /// listing of a directory only the layers have counts against
    /// `LISTED_CHILDREN`, and the oldest such go when over it, except that
    /// one used since it was queued goes to the back once more (a clock):
    /// a big directory whose names are looked up all through a walk is not
    /// merged again for every subdirectory listed.
    fn keep_listing(&mut self, ino: u64, listing: Arc<Listing>) -> Arc<Listing> {
        let Some(n) = self.nodes.get_mut(&ino) else {
            return listing;
        };
        if let Some(l) = &n.listing {
            return l.clone();
        }
        n.listing = Some(listing.clone());
        if n.src.upper != Upper::No {
            return listing;
        }
        // An empty directory counts as one name: its listing costs memory too.
        let len = listing.children.len() + 1;
        self.listed.push_back((ino, len));
        self.listed_children += len;
        while self.listed_children > self.listed_max && self.listed.len() > 1 {
            let Some((old, len)) = self.listed.pop_front() else {
                break;
            };
            if let Some(n) = self
                .nodes
                .get_mut(&old)
                .filter(|n| n.listing_used && n.listing.is_some())
            {
                n.listing_used = false;
                self.listed.push_back((old, len));
                continue;
            }
            self.listed_children -= len;
            // One a change reached since is edited in place: it stays.
            if let Some(n) = self
                .nodes
                .get_mut(&old)
                .filter(|n| n.src.upper == Upper::No)
            {
                n.listing = None;
            }
        }
        listing
    }
}

/// An entry as `readdir` reports it; `offset` resumes after it.
pub struct DirEntry<'a> {
    pub ino: u64,
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a [u8],
}

/// What `lower_data` tells of a lower file: its layer, where its data
/// starts in the layer's uncompressed stream, its size.
#[derive(Clone, Debug)]
pub struct LowerData {
    pub diff_id_hex: String,
    pub data_offset: u64,
    pub size: u64,
    pub sparse: bool,
}

pub struct UnionFs {
    pub(crate) stack: Stack,
    pub(crate) upper: Option<UpperDir>,
    table: Mutex<Table>,
    /// Serializes changes to names and metadata (each does host I/O by path,
    /// which a rename must not move meanwhile). Held only by changes, never
    /// while a file's data is copied up; lookups and reads do not take it.
    pub(crate) changes: Mutex<()>,
    pub(crate) files: RwLock<HashMap<u64, Arc<super::handle::OpenFile>>>,
    /// Held shared by every change, exclusively while a commit reads the
    /// upper directory.
    pub(crate) frozen: RwLock<()>,
    /// Called as a copy-up starts reading lower data (tests block it there).
    #[cfg(test)]
    pub(crate) copy_hook: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl UnionFs {
    /// A read-only union of `stack`, or a container's view when `upper` is given.
    pub fn new(stack: Stack, upper: Option<UpperDir>) -> UnionFs {
        let fs = UnionFs {
            stack,
            upper,
            table: Mutex::new(Table::default()),
            changes: Mutex::new(()),
            files: RwLock::new(HashMap::new()),
            frozen: RwLock::new(()),
            #[cfg(test)]
            copy_hook: Mutex::new(None),
        };
        let chain = fs.root_chain();
        let lower = chain.first().map(|&(l, _)| (l, 0));
        let upper = if fs.upper.is_some() {
            Upper::Full
        } else {
            Upper::No
        };
        let src = Source {
            kind: FileKind::Directory,
            lower,
            chain,
            upper,
            lower_here: true,
        };
        fs.lock().nodes.insert(
            ROOT_INO,
            Node {
                src,
                parent: ROOT_INO,
                name: Name::default(),
                aliases: Vec::new(),
                lookups: 1,
                listing: None,
                detached: None,
                generation: 0,
                changed: 0,
                no_caps: false,
                listing_used: false,
            },
        );
        fs
    }

    pub fn stack(&self) -> &Stack {
        &self.stack
    }

    pub fn is_writable(&self) -> bool {
        self.upper.is_some()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The root directories of the layers, top first, down to an opaque one.
    pub(crate) fn root_chain(&self) -> Arc<[(u16, u32)]> {
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

    pub(crate) fn entry(&self, (l, id): LowerRef) -> Entry<'_> {
        self.stack.layers[l as usize].index.entry(id)
    }

    /// The path of `ino` from the root (`""` for the root itself).
    pub(crate) fn path(&self, t: &Table, ino: u64) -> Result<Vec<u8>> {
        let mut names: Vec<&[u8]> = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT_INO {
                let mut p = Vec::new();
                for n in names.iter().rev() {
                    if !p.is_empty() {
                        p.push(b'/');
                    }
                    p.extend_from_slice(n);
                }
                return Ok(p);
            }
            let n = t.nodes.get(&cur).ok_or(UnionError::BadHandle)?;
            names.push(&n.name);
            cur = n.parent;
        }
        Err(UnionError::BadHandle)
    }

    /// What a call needs of inode `ino`, read under the lock so that the
    /// host I/O can be done without it.
    pub(crate) fn view(&self, ino: u64) -> Result<View> {
        let t = self.lock();
        let Some(n) = t.nodes.get(&ino) else {
            drop(t);
            let src = self.nodeless(ino).ok_or(UnionError::BadHandle)?;
            return Ok(View {
                src,
                path: Vec::new(),
                parent: ROOT_INO,
                name: Name::default(),
                detached: None,
                generation: 0,
            });
        };
        Ok(View {
            src: n.src.clone(),
            path: self.path(&t, ino)?,
            parent: n.parent,
            name: n.name.clone(),
            detached: n.detached.clone(),
            generation: n.generation,
        })
    }

    /// The source of `ino` when it is a lower file of a read-only mount,
    /// which has no node (see the header).
    fn nodeless(&self, ino: u64) -> Option<Source> {
        if self.upper.is_some() {
            return None;
        }
        let lower = lower_of_ino(ino)?;
        let index = &self.stack.layers.get(lower.0 as usize)?.index;
        if lower.1 >= index.len() {
            return None;
        }
        let kind = super::attr::kind_of(index.entry(lower.1).kind())?;
        (kind != FileKind::Directory).then(|| Source {
            kind,
            lower: Some(lower),
            chain: no_chain(),
            upper: Upper::No,
            lower_here: true,
        })
    }

    /// Whether `c` is a name of a read-only mount's lower file, which needs
    /// no node.
    fn needs_no_node(&self, c: &Child) -> bool {
        self.upper.is_none()
            && c.src.kind != FileKind::Directory
            && c.src.upper == Upper::No
            && c.src.lower.map(lower_ino) == Some(c.ino)
    }

    /// Runs `f` (host I/O by path, no lock held) on a view of `ino`; when it
    /// finds nothing because a rename moved the inode meanwhile, runs it
    /// again on the new path.
    pub(crate) fn with_view<T>(&self, ino: u64, f: impl Fn(&View) -> Result<T>) -> Result<T> {
        let mut v = self.view(ino)?;
        for _ in 0..RETRIES {
            match f(&v) {
                Err(e) if e.errno() == libc::ENOENT => {
                    let now = self.view(ino)?;
                    if now.path == v.path {
                        return Err(e);
                    }
                    v = now;
                }
                r => return r,
            }
        }
        f(&v)
    }

    /// Marks a change of `ino` (its listing or its source), so that what was
    /// computed of it without the lock before is not kept.
    pub(crate) fn touch(t: &mut Table, ino: u64) {
        t.epoch += 1;
        let epoch = t.epoch;
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.changed = epoch;
        }
    }

    /// The cached listing of directory `ino`, if it has one.
    pub(crate) fn cached_listing(&self, ino: u64) -> Option<Arc<Listing>> {
        self.lock().nodes.get(&ino).and_then(|n| n.listing.clone())
    }

    /// The listing of directory `ino`, merged on first use. The merge reads
    /// the upper dir without the lock; its result is kept only if no change
    /// touched the directory meanwhile (else it is merged again).
    pub(crate) fn listing(&self, ino: u64) -> Result<Arc<Listing>> {
        let mut tries = 0;
        loop {
            let (src, path, epoch) = {
                let mut t = self.lock();
                let Some(node) = t.nodes.get_mut(&ino) else {
                    drop(t);
                    return Err(match self.nodeless(ino) {
                        Some(_) => UnionError::NotDir,
                        None => UnionError::BadHandle,
                    });
                };
                if node.src.kind != FileKind::Directory {
                    return Err(UnionError::NotDir);
                }
                if let Some(l) = node.listing.clone() {
                    node.listing_used = true;
                    return Ok(l);
                }
                (node.src.clone(), self.path(&t, ino)?, t.epoch)
            };
            let merged = self.merge(&src, &path);
            let mut t = self.lock();
            let changed = t.nodes.get(&ino).is_none_or(|n| n.changed > epoch);
            tries += 1;
            if changed && tries < RETRIES {
                continue;
            }
            let listing = Arc::new(merged?);
            if changed {
                return Ok(listing);
            }
            return Ok(t.keep_listing(ino, listing));
        }
    }

    /// Records a kernel reference to `child` of `parent`.
    pub(crate) fn remember(t: &mut Table, parent: u64, c: &Child) {
        let epoch = t.epoch;
        let node = t.nodes.entry(c.ino).or_insert_with(|| Node {
            src: c.src.clone(),
            parent,
            name: c.name.clone(),
            aliases: Vec::new(),
            lookups: 0,
            listing: None,
            detached: None,
            generation: 0,
            changed: epoch,
            no_caps: false,
            listing_used: false,
        });
        node.lookups += 1;
        node.set_path(parent, &c.name);
    }

    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        check_name(name)?;
        let listing = self.listing(parent)?;
        let child = listing.find(name).ok_or(UnionError::NotFound)?;
        self.remember_attr(parent, child)
    }

    /// Remembers `c` and answers its attributes; the kernel gets no
    /// reference when that fails, so none is counted.
    pub(crate) fn remember_attr(&self, parent: u64, c: &Child) -> Result<Attr> {
        if self.needs_no_node(c) {
            return self.attr(c.ino);
        }
        Self::remember(&mut self.lock(), parent, c);
        let attr = self.attr(c.ino);
        if attr.is_err() {
            Self::unremember(&mut self.lock(), c.ino);
        }
        attr
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
            }
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.attr(ino)
    }

    pub(crate) fn attr(&self, ino: u64) -> Result<Attr> {
        self.with_view(ino, |v| {
            self.attr_of(ino, v).map(|a| Attr {
                generation: v.generation,
                ..a
            })
        })
    }

    fn attr_of(&self, ino: u64, v: &View) -> Result<Attr> {
        if let Some(super::handle::OpenFile::Upper(f)) = v.detached.as_deref() {
            let upper = self.upper.as_ref().ok_or(UnionError::BadHandle)?;
            let st = upper.fstat(f)?;
            return Ok(stat_attr(ino, &st));
        }
        let src = &v.src;
        let mut a = if src.upper != Upper::No {
            let upper = self.upper.as_ref().ok_or(UnionError::BadHandle)?;
            let st = upper.lstat(&v.path)?.ok_or(UnionError::NotFound)?;
            stat_attr(ino, &st)
        } else if src.kind == FileKind::Directory {
            // Metadata from the topmost directory a tar listed; one a layer
            // only implied (a missing parent) does not override it.
            let meta = src
                .chain
                .iter()
                .map(|&(l, d)| self.stack.layers[l as usize].index.dir(d).entry())
                .find(|e| !e.is_implicit())
                .or_else(|| src.lower.map(|r| self.entry(r)))
                .ok_or(UnionError::BadHandle)?;
            entry_attr(ino, &meta, src.kind)
        } else {
            let lower = src.lower.ok_or(UnionError::BadHandle)?;
            let e = self.entry(lower);
            let mut a = entry_attr(ino, &e, src.kind);
            if e.group().is_some() || self.stack.external_members.contains_key(&lower) {
                a.nlink = self.nlink(ino, lower);
            }
            a
        };
        if src.kind == FileKind::Directory {
            a.nlink = 2 + self.listing(ino)?.subdirs;
        }
        Ok(a)
    }

    /// The link count of hard-linked lower file `ino`, counted over the
    /// merged view once (without the lock) and cached until a change.
    fn nlink(&self, ino: u64, lower: LowerRef) -> u32 {
        let epoch = {
            let t = self.lock();
            if let Some(&n) = t.nlinks.get(&ino) {
                return n;
            }
            t.epoch
        };
        let n = (self.link_paths(lower).len() as u32).max(1);
        let mut t = self.lock();
        if t.epoch == epoch {
            t.nlinks.insert(ino, n);
        }
        n
    }

    /// The visible paths of the hard-linked lower entry `src`: its group in
    /// its layer and the links to it from higher layers, each only if no
    /// higher layer (or the container) hides or replaces its path.
    pub(crate) fn link_paths(&self, src: LowerRef) -> Vec<Vec<u8>> {
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
        members
            .iter()
            .map(|&m| self.entry(m).path())
            .filter(|p| {
                self.resolve_path(p)
                    .is_some_and(|c| c.src.lower == Some(src) && c.src.upper == Upper::No)
            })
            .collect()
    }

    /// The child a path names in the merged view, merging directories on the
    /// way (cached listings are used, new ones are not kept).
    pub(crate) fn resolve_path(&self, path: &[u8]) -> Option<Child> {
        let mut dir_ino = ROOT_INO;
        let mut dir_src: Option<Source> = None;
        let mut dir_path: Vec<u8> = Vec::new();
        let mut comps = path
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty())
            .peekable();
        while let Some(name) = comps.next() {
            let listing = match (self.cached_listing(dir_ino), &dir_src) {
                (Some(l), _) => l,
                (None, None) => self.listing(dir_ino).ok()?,
                (None, Some(src)) => Arc::new(self.merge(src, &dir_path).ok()?),
            };
            let child = listing.find(name)?.clone();
            if comps.peek().is_none() {
                return Some(child);
            }
            if child.src.kind != FileKind::Directory {
                return None;
            }
            dir_ino = child.ino;
            dir_path = super::upper::join(&dir_path, name);
            dir_src = Some(child.src);
        }
        None
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.with_view(ino, |v| {
            if v.src.kind != FileKind::Symlink {
                return Err(UnionError::Invalid);
            }
            if v.src.upper != Upper::No {
                return Ok(self
                    .upper
                    .as_ref()
                    .ok_or(UnionError::BadHandle)?
                    .read_link(&v.path)?);
            }
            let lower = v.src.lower.ok_or(UnionError::BadHandle)?;
            Ok(self.entry(lower).link().to_vec())
        })
    }

    /// Opens directory `ino` for reading: a snapshot of its listing, so
    /// offsets stay valid (seekdir/telldir) while the directory changes,
    /// taken again at each read from offset 0 (see `readdir`).
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let listing = self.listing(ino)?;
        let mut t = self.lock();
        let parent = t.nodes.get(&ino).map_or(ROOT_INO, |n| n.parent);
        let fh = t.next_fh();
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
        let (parent, listing) = if fh != 0 {
            // From offset 0 (the first read or a rewind) a handle lists the
            // directory as it is now: the kernel keeps that first listing
            // (FOPEN_CACHE_DIR) as the directory's contents from the moment
            // it asked, and trusts it until the next change it sees. A
            // listing from opendir could miss changes made in between, for
            // every later reader. A removed directory keeps its snapshot.
            let fresh = if offset == 0 {
                self.listing(ino).ok()
            } else {
                None
            };
            let mut t = self.lock();
            match t.dirs.get_mut(&fh) {
                Some(h) if h.ino == ino => {
                    if let Some(l) = fresh {
                        h.listing = l;
                    }
                    (h.parent, h.listing.clone())
                }
                _ => return Err(UnionError::BadHandle),
            }
        } else {
            let listing = self.listing(ino)?;
            let t = self.lock();
            (t.nodes.get(&ino).map_or(ROOT_INO, |n| n.parent), listing)
        };
        let mut i = offset;
        // Offsets: 1 = ".", 2 = "..", 3.. = children; each names the next entry.
        while i < 2 {
            let (e_ino, name): (u64, &[u8]) = if i == 0 { (ino, b".") } else { (parent, b"..") };
            let attr = if plus { Some(self.attr(e_ino)?) } else { None };
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
        // A handle lists the directory as it was at offset 0. A name renamed
        // or removed since must not be remembered: it would become its
        // inode's path again (a renamed dir's contents, or the lower file a
        // removed hard link shared, would then vanish). POSIX lets readdir
        // leave such names out.
        // A directory removed since has no current names.
        let current = plus.then(|| self.listing(ino).ok());
        for c in listing.children.iter().skip((i - 2) as usize) {
            i += 1;
            if let Some(now) = &current {
                let live = now.as_ref().is_some_and(|now| {
                    Arc::ptr_eq(now, &listing) || now.find(&c.name).is_some_and(|n| n.ino == c.ino)
                });
                if !live {
                    continue;
                }
            }
            let ent = DirEntry {
                ino: c.ino,
                offset: i,
                kind: c.src.kind,
                name: &c.name,
            };
            if plus {
                let attr = self.remember_attr(ino, c)?;
                if !add(&ent, Some(&attr)) {
                    // Not sent: the reference it took is not the kernel's.
                    Self::unremember(&mut self.lock(), c.ino);
                    return Ok(());
                }
            } else if !add(&ent, None) {
                return Ok(());
            }
        }
        Ok(())
    }

    pub(crate) fn unremember(t: &mut Table, ino: u64) {
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.lookups -= 1;
            if n.lookups == 0 {
                t.nodes.remove(&ino);
            }
        }
    }

    /// The layer entry a lower file inode reads from: its number says it, so
    /// reads of a read-only mount take no lock and need no open handle.
    pub(crate) fn file_src(&self, lower: LowerRef) -> Result<(&crate::layer::Layer, Entry<'_>)> {
        let l = self
            .stack
            .layers
            .get(lower.0 as usize)
            .ok_or(UnionError::BadHandle)?;
        let e = l.index.entry(lower.1);
        match e.kind() {
            EntryKind::Regular => Ok((l, e)),
            EntryKind::Directory => Err(UnionError::IsDir),
            _ => Err(UnionError::Invalid),
        }
    }

    /// Reads a file of a read-only mount by inode number.
    pub fn read(&self, ino: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let lower = lower_of_ino(ino).ok_or(UnionError::BadHandle)?;
        self.read_lower(lower, offset, buf)
    }

    pub(crate) fn read_lower(&self, lower: LowerRef, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let (layer, e) = self.file_src(lower)?;
        match layer.read_at(&e, offset, buf) {
            Ok(n) => Ok(n),
            Err(err) => {
                log::error!("read of {:?}: {err}", String::from_utf8_lossy(&e.path()));
                Err(err.into())
            }
        }
    }

    /// SEEK_DATA (`data`) / SEEK_HOLE from `offset` in a lower file; ENXIO
    /// past the data.
    pub fn seek(&self, ino: u64, offset: u64, data: bool) -> Result<u64> {
        let lower = lower_of_ino(ino).ok_or(UnionError::BadHandle)?;
        self.seek_lower(lower, offset, data)
    }

    pub(crate) fn seek_lower(&self, lower: LowerRef, offset: u64, data: bool) -> Result<u64> {
        let (layer, e) = self.file_src(lower)?;
        layer
            .seek_data(&e, offset, data)
            .ok_or_else(|| UnionError::Io(std::io::Error::from_raw_os_error(libc::ENXIO)))
    }

    /// The layer data a lower regular file reads (by open handle `fh` in a
    /// writable mount, else by inode), for caches kept outside the union;
    /// None for upper files and anything else.
    pub fn lower_data(&self, ino: u64, fh: u64) -> Option<LowerData> {
        let lower = match fh {
            0 => lower_of_ino(ino)?,
            _ => match &*self.file(fh)? {
                super::OpenFile::Lower(l) => *l,
                super::OpenFile::Upper(_) => return None,
            },
        };
        let (layer, e) = self.file_src(lower).ok()?;
        Some(LowerData {
            diff_id_hex: layer.index.diff_id().hex(),
            data_offset: e.data_offset(),
            size: e.size(),
            sparse: e.is_sparse(),
        })
    }

    /// NUL-separated attribute names.
    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (k, _) in self.xattrs(ino)? {
            out.extend_from_slice(&k);
            out.push(0);
        }
        Ok(out)
    }

    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        if name == b"security.capability" && self.lock().nodes.get(&ino).is_some_and(|n| n.no_caps)
        {
            return Err(UnionError::NoData);
        }
        self.with_view(ino, |v| {
            if v.src.upper != Upper::No {
                let upper = self.upper.as_ref().ok_or(UnionError::BadHandle)?;
                if upper.is_private_xattr(name) {
                    return Err(UnionError::NoData);
                }
                let name = std::str::from_utf8(name).map_err(|_| UnionError::NoData)?;
                return upper.get_xattr(&v.path, name)?.ok_or(UnionError::NoData);
            }
            let e = self.entry(self.meta_src(&v.src)?);
            if !e.has_xattrs() {
                return Err(UnionError::NoData);
            }
            e.xattrs()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_vec())
                .ok_or(UnionError::NoData)
        })
    }

    /// Extended attributes of an inode, as (name, value) pairs.
    pub(crate) fn xattrs(&self, ino: u64) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.with_view(ino, |v| {
            if v.src.upper != Upper::No {
                return Ok(self
                    .upper
                    .as_ref()
                    .ok_or(UnionError::BadHandle)?
                    .xattrs(&v.path)?);
            }
            let e = self.entry(self.meta_src(&v.src)?);
            Ok(e.xattrs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect())
        })
    }

    /// The lower entry whose metadata a name shows (for a directory, the
    /// topmost one a tar listed).
    pub(crate) fn meta_src(&self, src: &Source) -> Result<LowerRef> {
        if src.kind != FileKind::Directory {
            return src.lower.ok_or(UnionError::BadHandle);
        }
        src.chain
            .iter()
            .map(|&(l, d)| (l, self.stack.layers[l as usize].index.dir(d).entry().id()))
            .find(|&r| !self.entry(r).is_implicit())
            .or(src.lower)
            .ok_or(UnionError::BadHandle)
    }

    /// Total bytes and entries of the layers, for statfs of a read-only mount.
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

/// ENAMETOOLONG for a name no directory can hold (the kernel leaves this
/// check to the filesystem).
pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        return Err(UnionError::NameTooLong);
    }
    Ok(())
}

pub(crate) fn entry_attr(ino: u64, e: &Entry<'_>, kind: FileKind) -> Attr {
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
        generation: 0,
    }
}

pub(crate) fn stat_attr(ino: u64, st: &libc::stat) -> Attr {
    let ts = |s: i64, n: i64| Timestamp {
        secs: s,
        nsecs: n as u32,
    };
    Attr {
        ino,
        kind: FileKind::from_mode(st.st_mode).unwrap_or(FileKind::Regular),
        perm: st.st_mode & 0o7777,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        rdev: st.st_rdev,
        atime: ts(st.st_atime, st.st_atime_nsec),
        mtime: ts(st.st_mtime, st.st_mtime_nsec),
        ctime: ts(st.st_ctime, st.st_ctime_nsec),
        generation: 0,
    }
}
