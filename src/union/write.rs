//! Changes to a container's view: copy-up (whole files, or metadata only
//! for chmod/chown/utimens/setxattr), new entries, unlink and rmdir (with
//! whiteouts where a lower layer has the name), rename (also of directories
//! that exist only in lower layers: they move by a redirect, never EXDEV),
//! hard links, attributes, and open files (lower data, or an upper file the
//! FUSE layer can pass through to the kernel).
//!
//! Every change holds the freeze lock shared, so a commit can stop them for
//! the moment it reads the upper directory. Changes of names and metadata
//! are serialized by `changes`; none does host I/O under the table lock. A
//! file's data is copied up holding only that file's copy lock, so the rest
//! of the mount is served meanwhile (lock order: freeze, copy, changes,
//! table).

use super::attr::{Attr, FileKind};
use super::error::{Result, UnionError};
use super::handle::{OpenFile, Opened};
use super::stack::LowerRef;
use super::tree::{
    Child, FRESH_INO, Listing, ROOT_INO, Source, Table, UnionFs, Upper, check_name, lower_of_ino,
    stat_attr, upper_ino,
};
use super::upper::{
    Change, Make, Meta, UpperDir, WHITEOUT_PREFIX, XATTR_METACOPY, XATTR_ORIGIN, XATTR_REDIRECT,
    join, split,
};
use nix::fcntl::{OFlag, RenameFlags};
use nix::sys::stat::SFlag;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, MutexGuard, RwLockReadGuard, RwLockWriteGuard};

/// Who makes a new entry: its owner, unless the directory's setgid bit says
/// the group.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Now,
    At(i64, u32),
}

/// The changes of one setattr call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
    /// Drop setuid, and setgid of a group-executable file (what the kernel
    /// leaves to the filesystem on chown, and on truncate and write by an
    /// unprivileged caller); an explicit `mode` wins.
    pub kill_suidgid: bool,
}

const COPY_CHUNK: usize = 1 << 20;
/// Files at least this large are copied up by two threads.
const PARALLEL_COPY: u64 = 16 << 20;

impl UnionFs {
    fn upper_dir(&self) -> Result<&UpperDir> {
        self.upper.as_ref().ok_or(UnionError::ReadOnly)
    }

    fn changing(&self) -> Result<RwLockReadGuard<'_, ()>> {
        self.upper_dir()?;
        Ok(self.frozen.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Held by each change of names or metadata, for its whole length.
    fn ns(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a new container's upper root the image root's owner, mode,
    /// xattrs and mtime (the root always exists in the upper dir).
    pub fn adopt_lower_root(&self) -> Result<()> {
        let upper = self.upper_dir()?;
        let src = self
            .lock()
            .nodes
            .get(&ROOT_INO)
            .map(|n| n.src.clone())
            .ok_or(UnionError::BadHandle)?;
        let meta = self.lower_meta(&src)?;
        upper.chown(b"", Some(meta.uid), Some(meta.gid))?;
        if let Some(mode) = meta.mode {
            upper.chmod(b"", mode)?;
        }
        for (k, v) in &meta.xattrs {
            upper.set_xattr(b"", k, v)?;
        }
        let t = libc::timespec {
            tv_sec: meta.mtime.0,
            tv_nsec: meta.mtime.1 as i64,
        };
        upper.utimens(b"", &t, &t)?;
        Ok(())
    }

    /// Stops every change until the guard is dropped (a commit's snapshot).
    pub fn freeze(&self) -> RwLockWriteGuard<'_, ()> {
        self.frozen.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the cached listing entry `name` of directory `parent`.
    fn edit_child(t: &mut Table, parent: u64, name: &[u8], f: impl FnOnce(&mut Child)) {
        Self::touch(t, parent);
        if let Some(listing) = t.nodes.get_mut(&parent).and_then(|n| n.listing.as_mut()) {
            let l = Arc::make_mut(listing);
            if let Ok(i) = l.children.binary_search_by(|c| (*c.name).cmp(name)) {
                f(&mut l.children[i]);
            }
        }
    }

    fn edit_listing(t: &mut Table, parent: u64, f: impl FnOnce(&mut Listing)) {
        Self::touch(t, parent);
        if let Some(listing) = t.nodes.get_mut(&parent).and_then(|n| n.listing.as_mut()) {
            f(Arc::make_mut(listing));
        }
    }

    /// `ino`, named `name` in `parent`, is now in the upper dir as `state`.
    fn mark_upper(t: &mut Table, parent: u64, name: &[u8], ino: u64, state: Upper) {
        Self::edit_child(t, parent, name, |c| {
            if c.ino == ino {
                c.src.upper = state
            }
        });
        if let Some(n) = t.nodes.get_mut(&ino) {
            n.src.upper = state;
        }
        Self::touch(t, ino);
    }

    fn lower_meta(&self, src: &Source) -> Result<Meta> {
        let e = self.entry(self.meta_src(src)?);
        Ok(Meta {
            uid: e.uid(),
            gid: e.gid(),
            mode: (src.kind != FileKind::Symlink).then(|| e.mode()),
            xattrs: e.xattrs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
            mtime: e.mtime(),
        })
    }

    /// Makes sure directory `path` and its parents exist in the upper dir, with
    /// their lower metadata; returns nothing new when they already do.
    fn copy_up_dir_path(&self, path: &[u8]) -> Result<()> {
        let upper = self.upper_dir()?;
        let mut cur_ino = ROOT_INO;
        let mut cur_path: Vec<u8> = Vec::new();
        let mut cur_src: Option<Source> = None;
        for comp in path.split(|&c| c == b'/').filter(|c| !c.is_empty()) {
            let listing = match (self.cached_listing(cur_ino), &cur_src) {
                (Some(l), _) => l,
                (None, None) => self.listing(cur_ino)?,
                (None, Some(src)) => Arc::new(self.merge(src, &cur_path)?),
            };
            let mut child = listing.find(comp).ok_or(UnionError::NotFound)?.clone();
            if child.src.kind != FileKind::Directory {
                return Err(UnionError::NotDir);
            }
            let child_path = join(&cur_path, comp);
            if child.src.upper == Upper::No {
                let meta = self.lower_meta(&child.src)?;
                let tmp = upper.temp_name();
                upper.mkdir_temp(&tmp)?;
                upper.set_temp_meta(&tmp, &meta)?;
                upper.install_dir(&tmp, &child_path)?;
                let mut t = self.lock();
                Self::mark_upper(&mut t, cur_ino, comp, child.ino, Upper::Full);
                t.unsynced.insert(cur_ino);
                child.src.upper = Upper::Full;
            }
            cur_ino = child.ino;
            cur_path = child_path;
            cur_src = Some(child.src);
        }
        Ok(())
    }

    /// Makes sure directory `ino` exists in the upper dir; returns its path.
    fn copy_up_dir(&self, ino: u64) -> Result<Vec<u8>> {
        let v = self.view(ino)?;
        if v.src.kind != FileKind::Directory {
            return Err(UnionError::NotDir);
        }
        if v.src.upper == Upper::No {
            self.copy_up_dir_path(&v.path)?;
        }
        Ok(v.path)
    }

    /// Copies `ino` up without its data: a regular file as a metadata copy
    /// (its data stays the lower layer's until `copy_up_data`), anything
    /// else whole. A hard-linked lower file comes up with all its visible
    /// names, linked, so they stay one file. The caller holds `changes`.
    fn copy_up(&self, ino: u64) -> Result<Vec<u8>> {
        self.copy_up_open(ino).map(|(path, _)| path)
    }

    /// `copy_up`, and the new metadata copy of a regular file open for
    /// writing its data (None when it was up already).
    fn copy_up_open(&self, ino: u64) -> Result<(Vec<u8>, Option<File>)> {
        let upper = self.upper_dir()?;
        let v = self.view(ino)?;
        let src = v.src;
        if src.kind == FileKind::Directory {
            return Ok((self.copy_up_dir(ino)?, None));
        }
        let path = v.path;
        if src.upper != Upper::No {
            return Ok((path, None));
        }
        let lower = src.lower.ok_or(UnionError::BadHandle)?;
        let links = if src.kind == FileKind::Regular {
            self.link_paths(lower)
        } else {
            Vec::new()
        };
        let (dir, _) = split(&path);
        self.copy_up_dir_path(dir)?;
        let e = self.entry(lower);
        let mut meta = self.lower_meta(&src)?;
        meta.xattrs
            .push((XATTR_ORIGIN.as_bytes().to_vec(), ino.to_le_bytes().to_vec()));
        let mut opened = None;
        let tmp = match src.kind {
            FileKind::Regular => {
                let (tmp, file) = upper.create_temp(0o600)?;
                file.set_len(e.size())?;
                meta.xattrs
                    .push((XATTR_METACOPY.as_bytes().to_vec(), Vec::new()));
                opened = Some(file);
                tmp
            }
            FileKind::Symlink => {
                let tmp = upper.temp_name();
                upper.symlink_temp(&tmp, e.link())?;
                tmp
            }
            kind => {
                let tmp = upper.temp_name();
                let (major, minor) = e.rdev();
                upper.mknod_temp(&tmp, sflag(kind), libc::makedev(major, minor))?;
                tmp
            }
        };
        match &opened {
            Some(file) => upper.set_temp_file_meta(&tmp, file, &meta)?,
            None => upper.set_temp_meta(&tmp, &meta)?,
        }
        upper.install(&tmp, &path)?;
        let state = if src.kind == FileKind::Regular {
            Upper::MetaCopy
        } else {
            Upper::Full
        };
        {
            let mut t = self.lock();
            let (parent, name) = t
                .nodes
                .get(&ino)
                .map(|n| (n.parent, n.name.clone()))
                .ok_or(UnionError::BadHandle)?;
            Self::mark_upper(&mut t, parent, &name, ino, state);
            t.unsynced.insert(parent);
            // The copy has the layer's xattrs: the kernel's question before
            // the first write is answered without the host.
            let cap = b"security.capability".as_slice();
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.no_caps = src.kind == FileKind::Regular
                    && !meta.xattrs.iter().any(|(k, _)| k.as_slice() == cap);
            }
        }
        for other in links.iter().filter(|p| **p != path) {
            let (odir, oname) = split(other);
            self.copy_up_dir_path(odir)?;
            upper.link(&path, other)?;
            if let Some(pino) = self
                .resolve_path(odir)
                .map(|c| c.ino)
                .or((odir.is_empty()).then_some(ROOT_INO))
            {
                let mut t = self.lock();
                Self::edit_child(&mut t, pino, oname, |c| c.src.upper = state);
                t.unsynced.insert(pino);
            }
        }
        let mut t = self.lock();
        t.nlinks.remove(&ino);
        Self::touch(&mut t, ino);
        Ok((path, opened))
    }

    /// This inode's copy lock: held while its data is copied up.
    fn copy_lock(&self, ino: u64) -> Arc<std::sync::Mutex<()>> {
        self.lock().copying.entry(ino).or_default().clone()
    }

    /// Drops the copy lock `lock` of `ino` from the table once no one else
    /// holds or waits for it.
    fn copy_unlock(&self, ino: u64, lock: Arc<std::sync::Mutex<()>>) {
        let mut t = self.lock();
        // Clones are taken under the table lock: the map's and ours are all.
        if Arc::strong_count(&lock) == 2 {
            t.copying.remove(&ino);
        }
    }

    /// Copies regular file `ino` up with its data: a metadata copy first,
    /// then the lower data written into it in place (so its hard links stay
    /// linked), then the mark dropped. The data is copied holding only this
    /// inode's copy lock — neither the table lock nor `changes` — so the
    /// rest of the mount is served meanwhile; a second caller for the same
    /// inode waits for the first and finds it done. A crash midway leaves
    /// the metadata copy, whose data is still read from the layer. The
    /// caller must not hold `changes` (lock order).
    fn copy_up_data(&self, ino: u64) -> Result<()> {
        let lock = self.copy_lock(ino);
        let done = {
            let _one = lock.lock().unwrap_or_else(|p| p.into_inner());
            self.fill(ino)
        };
        self.copy_unlock(ino, lock);
        done
    }

    /// The body of `copy_up_data`, under the copy lock.
    fn fill(&self, ino: u64) -> Result<()> {
        let upper = self.upper_dir()?;
        let (file, lower) = {
            let _ns = self.ns();
            let (path, made) = self.copy_up_open(ino)?;
            let v = self.view(ino)?;
            if v.src.upper != Upper::MetaCopy {
                return Ok(());
            }
            let lower = v.src.lower.ok_or(UnionError::BadHandle)?;
            let file = match made {
                Some(f) => f,
                None => upper.open_file(&path, OFlag::O_WRONLY, 0)?,
            };
            (file, lower)
        };
        self.copy_data(lower, &file)?;
        // The data is on disk before the mark that says it is not goes.
        file.sync_data()?;
        let _ns = self.ns();
        xattr::FileExt::remove_xattr(&file, &*upper.mark_name(XATTR_METACOPY))?;
        let mut t = self.lock();
        if let Some((parent, name)) = t.nodes.get(&ino).map(|n| (n.parent, n.name.clone())) {
            Self::mark_upper(&mut t, parent, &name, ino, Upper::Full);
        }
        Ok(())
    }

    /// Copies a lower file's data into `file`. A large file is copied by two
    /// threads, each decoding its own half of the layer's spans; a sparse
    /// file keeps its holes.
    fn copy_data(&self, lower: LowerRef, file: &File) -> Result<()> {
        #[cfg(test)]
        if let Some(hook) = self
            .copy_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            hook();
        }
        let (_, e) = self.file_src(lower)?;
        let (size, sparse) = (e.size(), e.is_sparse());
        let copy = |from: u64, to: u64| -> Result<()> {
            let mut buf = vec![0u8; COPY_CHUNK.min((to - from) as usize)];
            let mut off = from;
            while off < to {
                let want = COPY_CHUNK.min((to - off) as usize);
                let n = self.read_lower(lower, off, &mut buf[..want])?;
                if n == 0 {
                    break;
                }
                if !sparse || buf[..n].iter().any(|&b| b != 0) {
                    file.write_all_at(&buf[..n], off)?;
                }
                off += n as u64;
            }
            Ok(())
        };
        if size < PARALLEL_COPY {
            copy(0, size)?;
        } else {
            let mid = (size / 2) & !(COPY_CHUNK as u64 - 1);
            std::thread::scope(|s| {
                let second = s.spawn(|| copy(mid, size));
                let first = copy(0, mid);
                first.and(second.join().unwrap_or(Err(UnionError::Invalid)))
            })?;
        }
        if sparse {
            // A hole at the end was never written (the file has its size
            // from the copy-up already otherwise).
            file.set_len(size)?;
        }
        Ok(())
    }

    /// Common part of create, mkdir, mknod and symlink: the name is free, the
    /// parent comes up, the entry is made with its owner and mode (None for
    /// a symlink, else applied exactly: the kernel has already masked it).
    /// Its attributes come from the stat the making returned: nothing is
    /// asked of the host twice.
    fn new_entry(
        &self,
        parent: u64,
        name: &[u8],
        caller: Caller,
        mode: Option<u32>,
        what: Make<'_>,
    ) -> Result<(Attr, Option<File>)> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        check_new_name(name)?;
        let _ns = self.ns();
        if self.listing(parent)?.find(name).is_some() {
            return Err(UnionError::Exists);
        }
        let dir = self.copy_up_dir(parent)?;
        let path = join(&dir, name);
        let (st, file) = upper.make(&path, what, caller.uid, caller.gid, mode)?;
        let kind = FileKind::from_mode(st.st_mode).ok_or(UnionError::Invalid)?;
        let mut t = self.lock();
        let child = Child {
            name: name.into(),
            ino: Self::new_ino(&mut t, st.st_ino),
            src: Source {
                kind,
                lower: None,
                chain: Arc::from([]),
                upper: Upper::Full,
                lower_here: false,
            },
        };
        Self::edit_listing(&mut t, parent, |l| l.put(child.clone()));
        Self::touch(&mut t, child.ino);
        t.nlinks.remove(&child.ino);
        Self::remember(&mut t, parent, &child);
        if let Some(n) = t.nodes.get_mut(&child.ino) {
            // A new directory is empty (no lower one merges into it), and a
            // new file has no capability until someone sets one.
            if kind == FileKind::Directory {
                n.listing = Some(Arc::new(Listing::default()));
            }
            n.no_caps = kind == FileKind::Regular;
        }
        drop(t);
        let mut attr = stat_attr(child.ino, &st);
        if kind == FileKind::Directory {
            attr.nlink = 2;
        }
        Ok((attr, file))
    }

    /// The inode number of a new upper entry whose host inode is `host`.
    /// The host often gives the number of a file deleted moments ago, which
    /// the kernel may still hold (a removed working directory, a name tar
    /// just replaced): the same number for the new file would make the
    /// kernel fail every call on the old one with EIO, so the new file then
    /// gets a number of its own, kept for the mount's life.
    fn new_ino(t: &mut Table, host: u64) -> u64 {
        let host = upper_ino(host);
        let ino = t.renumbered.get(&host).copied().unwrap_or(host);
        if !t.nodes.contains_key(&ino) {
            return ino;
        }
        t.next_ino += 1;
        let ino = FRESH_INO | t.next_ino;
        t.renumbered.insert(host, ino);
        ino
    }

    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, caller: Caller) -> Result<Attr> {
        self.new_entry(parent, name, caller, Some(mode), Make::Dir)
            .map(|r| r.0)
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        caller: Caller,
    ) -> Result<Attr> {
        let kind = FileKind::from_mode(mode).ok_or(UnionError::Invalid)?;
        let what = match kind {
            FileKind::Regular => Make::File,
            FileKind::Directory => return Err(UnionError::Invalid),
            k => Make::Node(sflag(k), rdev),
        };
        self.new_entry(parent, name, caller, Some(mode), what)
            .map(|r| r.0)
    }

    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], caller: Caller) -> Result<Attr> {
        self.new_entry(parent, name, caller, None, Make::Symlink(target))
            .map(|r| r.0)
    }

    /// Creates and opens a regular file.
    pub fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        caller: Caller,
    ) -> Result<(Attr, Opened)> {
        let (attr, file) = self.new_entry(parent, name, caller, Some(mode), Make::File)?;
        let file = file.ok_or(UnionError::BadHandle)?;
        let opened = self.add_file(OpenFile::Upper(file));
        Ok((attr, opened))
    }

    /// One descriptor serves the handle and the FUSE layer's passthrough
    /// registration (a duplicate cost an fcntl and a close per open).
    fn add_file(&self, f: OpenFile) -> Opened {
        let fh = self.lock().next_fh();
        let file = Arc::new(f);
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, file.clone());
        Opened { fh, file }
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> Result<Attr> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        check_new_name(newname)?;
        let _ns = self.ns();
        let src = self.view(ino)?.src;
        if src.kind == FileKind::Directory {
            return Err(UnionError::NotPermitted);
        }
        if self.listing(newparent)?.find(newname).is_some() {
            return Err(UnionError::Exists);
        }
        let from = self.copy_up(ino)?;
        let dir = self.copy_up_dir(newparent)?;
        let to = join(&dir, newname);
        upper.link(&from, &to)?;
        let mut t = self.lock();
        let state = t.nodes.get(&ino).map_or(Upper::Full, |n| n.src.upper);
        let child = Child {
            name: newname.into(),
            ino,
            src: Source {
                upper: state,
                lower_here: false,
                ..src
            },
        };
        Self::edit_listing(&mut t, newparent, |l| l.put(child.clone()));
        t.nlinks.remove(&ino);
        Self::touch(&mut t, ino);
        t.unsynced.insert(newparent);
        drop(t);
        self.remember_attr(newparent, &child)
    }

    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        self.remove(parent, name, true)
    }

    fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<()> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        let _ns = self.ns();
        let child = self
            .listing(parent)?
            .find(name)
            .cloned()
            .ok_or(UnionError::NotFound)?;
        let is_dir = child.src.kind == FileKind::Directory;
        if dir != is_dir {
            return Err(if dir {
                UnionError::NotDir
            } else {
                UnionError::IsDir
            });
        }
        let parent_path = self.copy_up_dir(parent)?;
        let path = join(&parent_path, name);
        if is_dir && !self.dir_listing(&child, &path)?.children.is_empty() {
            return Err(UnionError::NotEmpty);
        }
        // The whiteout first: a crash in between leaves the name still there,
        // never a lower file come back.
        if child.src.lower_here {
            upper.whiteout(&path)?;
        }
        let last_link = self.last_link(upper, &child, &path)?;
        if child.src.upper != Upper::No {
            if is_dir {
                upper.rmdir(&path)?
            } else {
                upper.unlink(&path)?
            }
        }
        let open = self.open_file_of(last_link);
        let mut t = self.lock();
        Self::detach(&mut t, child.ino, open);
        Self::edit_listing(&mut t, parent, |l| {
            l.remove(name);
        });
        if let Some(n) = t.nodes.get_mut(&child.ino) {
            n.drop_name(parent, name);
        }
        Self::touch(&mut t, child.ino);
        t.nlinks.remove(&child.ino);
        Ok(())
    }

    /// The host file behind `child` at `path` when that is its last name: it
    /// goes with the name unless a handle holds it open.
    fn last_link(
        &self,
        upper: &UpperDir,
        child: &Child,
        path: &[u8],
    ) -> Result<Option<libc::stat>> {
        if child.src.kind == FileKind::Directory || child.src.upper == Upper::No {
            return Ok(None);
        }
        Ok(upper.lstat(path)?.filter(|st| st.st_nlink == 1))
    }

    /// After its last name went (`gone` is its stat): the handle that still
    /// has the file open, if any (Some(None) if none does).
    fn open_file_of(&self, gone: Option<libc::stat>) -> Option<Option<Arc<OpenFile>>> {
        let st = gone?;
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        Some(
            files
                .values()
                .find(|f| match &***f {
                    OpenFile::Upper(file) => nix::sys::stat::fstat(file)
                        .is_ok_and(|s| s.st_dev == st.st_dev && s.st_ino == st.st_ino),
                    OpenFile::Lower(_) => false,
                })
                .cloned(),
        )
    }

    /// `stat` of an inode whose last name went asks the handle that still
    /// has it open from now on.
    fn detach(t: &mut Table, ino: u64, open: Option<Option<Arc<OpenFile>>>) {
        if let Some(f) = open
            && let Some(node) = t.nodes.get_mut(&ino)
        {
            node.detached = f;
        }
    }

    /// The listing of a child directory, cached if it has an inode.
    fn dir_listing(&self, child: &Child, path: &[u8]) -> Result<Arc<Listing>> {
        match self.listing(child.ino) {
            Err(UnionError::BadHandle) => Ok(Arc::new(self.merge(&child.src, path)?)),
            r => r,
        }
    }

    /// Renames `name` in `parent` to `newname` in `newparent`, replacing what
    /// is there as rename(2) does. A directory that lives in lower layers
    /// moves by a redirect to its old path; its inode number stays.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        if flags & !(libc::RENAME_NOREPLACE) != 0 {
            return Err(UnionError::Invalid);
        }
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        check_new_name(newname)?;
        let _ns = self.ns();
        let src = self
            .listing(parent)?
            .find(name)
            .cloned()
            .ok_or(UnionError::NotFound)?;
        let dst = self.listing(newparent)?.find(newname).cloned();
        let src_dir = src.src.kind == FileKind::Directory;
        let src_parent_path = self.copy_up_dir(parent)?;
        let src_path = join(&src_parent_path, name);
        let dst_parent_path = self.copy_up_dir(newparent)?;
        let dst_path = join(&dst_parent_path, newname);
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(UnionError::Exists);
            }
            if d.ino == src.ino {
                return Ok(());
            }
            match (src_dir, d.src.kind == FileKind::Directory) {
                (true, false) => return Err(UnionError::NotDir),
                (false, true) => return Err(UnionError::IsDir),
                (true, true) if !self.dir_listing(d, &dst_path)?.children.is_empty() => {
                    return Err(UnionError::NotEmpty);
                }
                _ => {}
            }
        }
        // Bring the source into the upper dir.
        if src_dir {
            if src.src.upper == Upper::No {
                self.copy_up_dir_path(&src_path)?;
            }
            // Without a redirect it merges the lower directories at its own
            // path. The redirect names where its layers hold it, which is not
            // where the view shows it when a parent was renamed before.
            if let Some(&(l, d)) = src.src.chain.first()
                && upper.get_xattr(&src_path, XATTR_REDIRECT)?.is_none()
            {
                let lower_path = self.stack.layers[l as usize].index.dir(d).path();
                upper.set_xattr(&src_path, XATTR_REDIRECT.as_bytes(), lower_path)?;
            }
            if keeps_origin(src.ino) {
                upper.set_xattr(&src_path, XATTR_ORIGIN.as_bytes(), &src.ino.to_le_bytes())?;
            }
        } else {
            // copy_up works on inodes: a reference of our own keeps this one
            // known while it runs.
            Self::remember(&mut self.lock(), parent, &src);
            let copied = self.copy_up(src.ino);
            Self::unremember(&mut self.lock(), src.ino);
            copied?;
            if keeps_origin(src.ino) && upper.get_xattr(&src_path, XATTR_ORIGIN)?.is_none() {
                upper.set_xattr(&src_path, XATTR_ORIGIN.as_bytes(), &src.ino.to_le_bytes())?;
            }
        }
        if src.src.lower_here {
            upper.whiteout(&src_path)?;
        }
        let dst_lower = dst.as_ref().is_some_and(|d| d.src.lower_here);
        if let Some(d) = &dst
            && d.src.kind == FileKind::Directory
            && d.src.upper != Upper::No
        {
            upper.rmdir(&dst_path)?;
        }
        let replaced = match &dst {
            Some(d) => self.last_link(upper, d, &dst_path)?,
            None => None,
        };
        upper.rename(&src_path, &dst_path, RenameFlags::empty())?;
        let open = self.open_file_of(replaced);
        if src_dir && dst_lower {
            // The lower directory at the new name must not merge into it.
            upper.whiteout(&dst_path)?;
        }
        let mut t = self.lock();
        if let Some(d) = &dst {
            Self::detach(&mut t, d.ino, open);
        }
        let state = t
            .nodes
            .get(&src.ino)
            .map_or(Upper::Full, |n| n.src.upper)
            .max_upper();
        let moved = Child {
            name: newname.into(),
            ino: src.ino,
            src: Source {
                upper: state,
                lower_here: dst_lower && !src_dir,
                ..src.src.clone()
            },
        };
        Self::edit_listing(&mut t, parent, |l| {
            l.remove(name);
        });
        Self::edit_listing(&mut t, newparent, |l| l.put(moved.clone()));
        if let Some(n) = t.nodes.get_mut(&src.ino) {
            n.rename_path((parent, name), (newparent, newname));
            n.src = moved.src.clone();
        }
        Self::touch(&mut t, src.ino);
        t.nlinks.remove(&src.ino);
        if let Some(d) = dst {
            if let Some(n) = t.nodes.get_mut(&d.ino) {
                n.drop_name(newparent, newname);
            }
            Self::touch(&mut t, d.ino);
            t.nlinks.remove(&d.ino);
        }
        Ok(())
    }

    pub fn setattr(&self, ino: u64, a: SetAttr) -> Result<Attr> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        let kind = self.view(ino)?.src.kind;
        if a.size.is_some() {
            if kind != FileKind::Regular {
                return Err(if kind == FileKind::Directory {
                    UnionError::IsDir
                } else {
                    UnionError::Invalid
                });
            }
            self.copy_up_data(ino)?;
        }
        let ns = self.ns();
        let path = self.copy_up(ino)?;
        if let Some(size) = a.size {
            match a.fh.and_then(|fh| self.file(fh)) {
                Some(f) if matches!(*f, OpenFile::Upper(_)) => {
                    if let OpenFile::Upper(file) = &*f {
                        file.set_len(size)?;
                    }
                }
                _ => upper.open_file(&path, OFlag::O_WRONLY, 0)?.set_len(size)?,
            }
        }
        let ts = |t: Option<SetTime>| match t {
            None => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
            Some(SetTime::Now) => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Some(SetTime::At(s, n)) => libc::timespec {
                tv_sec: s,
                tv_nsec: n as i64,
            },
        };
        let change = Change {
            uid: a.uid,
            gid: a.gid,
            mode: a
                .mode
                .filter(|_| kind != FileKind::Symlink)
                .map(|m| m & 0o7777),
            times: (a.atime.is_some() || a.mtime.is_some()).then(|| (ts(a.atime), ts(a.mtime))),
            kill_suidgid: a.kill_suidgid && kind != FileKind::Directory,
        };
        let st = upper.change(&path, &change)?;
        drop(ns);
        // The stat just taken answers, but for what it cannot: a directory's
        // link count (from its listing) and a file whose last name went.
        let generation = {
            let t = self.lock();
            match t.nodes.get(&ino) {
                Some(n) if n.detached.is_none() && kind != FileKind::Directory => {
                    Some(n.generation)
                }
                _ => None,
            }
        };
        match generation {
            Some(generation) => Ok(Attr {
                generation,
                ..stat_attr(ino, &st)
            }),
            None => self.attr(ino),
        }
    }

    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: i32) -> Result<()> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        if upper.is_private_xattr(name) {
            return Err(UnionError::NotPermitted);
        }
        let _ns = self.ns();
        let path = self.copy_up(ino)?;
        if let Some(n) = self.lock().nodes.get_mut(&ino) {
            n.no_caps = false;
        }
        let exists = upper
            .get_xattr(
                &path,
                std::str::from_utf8(name).map_err(|_| UnionError::Invalid)?,
            )?
            .is_some();
        if flags & libc::XATTR_CREATE != 0 && exists {
            return Err(UnionError::Exists);
        }
        if flags & libc::XATTR_REPLACE != 0 && !exists {
            return Err(UnionError::NoData);
        }
        upper.set_xattr(&path, name, value)?;
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let _g = self.changing()?;
        let upper = self.upper_dir()?;
        if upper.is_private_xattr(name) {
            return Err(UnionError::NoData);
        }
        let _ns = self.ns();
        let path = self.copy_up(ino)?;
        upper
            .remove_xattr(&path, name)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENODATA) => UnionError::NoData,
                _ => e.into(),
            })
    }

    /// Opens a file of a container's view: writing (or O_TRUNC) copies it up
    /// first; reading a file still in a lower layer reads the layer.
    pub fn open(&self, ino: u64, flags: i32) -> Result<Opened> {
        let upper = self.upper_dir()?;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let v = self.view(ino)?;
        if v.src.kind == FileKind::Directory {
            return Err(UnionError::IsDir);
        }
        let extra =
            OFlag::from_bits_truncate(flags & (libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME));
        if write || trunc {
            let _g = self.changing()?;
            let regular = v.src.kind == FileKind::Regular;
            // O_TRUNC discards the data: a metadata copy is enough, once no
            // copy of the data is still writing into it.
            let lock = (regular && trunc).then(|| self.copy_lock(ino));
            let opened = (|| {
                let _one = lock
                    .as_ref()
                    .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
                if regular && !trunc && v.src.upper != Upper::Full {
                    self.copy_up_data(ino)?;
                }
                let _ns = self.ns();
                let path = self.copy_up(ino)?;
                let file = upper.open_file(&path, OFlag::O_RDWR | extra, 0)?;
                if trunc {
                    file.set_len(0)?;
                    let v = self.view(ino)?;
                    if v.src.upper == Upper::MetaCopy {
                        upper.remove_xattr(&path, XATTR_METACOPY.as_bytes())?;
                        let mut t = self.lock();
                        Self::mark_upper(&mut t, v.parent, &v.name, ino, Upper::Full);
                    }
                }
                Ok::<_, UnionError>(file)
            })();
            if let Some(l) = lock {
                self.copy_unlock(ino, l);
            }
            let file = opened?;
            return Ok(self.add_file(OpenFile::Upper(file)));
        }
        if v.src.upper == Upper::Full {
            let file = self.with_view(ino, |v| {
                Ok(upper.open_file(&v.path, OFlag::O_RDONLY | extra, 0)?)
            })?;
            return Ok(self.add_file(OpenFile::Upper(file)));
        }
        let lower = v.src.lower.ok_or(UnionError::BadHandle)?;
        Ok(self.add_file(OpenFile::Lower(lower)))
    }

    pub(crate) fn file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh)
            .cloned()
    }

    pub fn read_fh(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        match &*self.file(fh).ok_or(UnionError::BadHandle)? {
            OpenFile::Lower(l) => self.read_lower(*l, offset, buf),
            OpenFile::Upper(f) => {
                let mut done = 0;
                while done < buf.len() {
                    let n = f.read_at(&mut buf[done..], offset + done as u64)?;
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                Ok(done)
            }
        }
    }

    pub fn write_fh(&self, fh: u64, offset: u64, data: &[u8]) -> Result<usize> {
        let _g = self.changing()?;
        match &*self.file(fh).ok_or(UnionError::BadHandle)? {
            OpenFile::Upper(f) => {
                f.write_all_at(data, offset)?;
                Ok(data.len())
            }
            OpenFile::Lower(_) => Err(UnionError::BadHandle),
        }
    }

    pub fn release(&self, fh: u64) {
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
    }

    /// Syncs open file `fh` of inode `ino`, and the upper directories above
    /// it that copy-ups put entries in (so that a copied-up file is where
    /// it was after a crash once it is fsynced).
    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Result<()> {
        if let OpenFile::Upper(f) = &*self.file(fh).ok_or(UnionError::BadHandle)? {
            if datasync {
                f.sync_data()?
            } else {
                f.sync_all()?
            }
            // An unlinked file has no directory to sync.
            if let Ok(v) = self.view(ino) {
                self.sync_copied_up_dirs(v.parent)?;
            }
        }
        Ok(())
    }

    /// Syncs the upper directory of `ino` (what fsync of a directory asks:
    /// its entries, such as a rename into it, are durable), and the ones
    /// above it that copy-ups put entries in. A directory only in lower
    /// layers has nothing to sync.
    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        let Some(upper) = self.upper.as_ref() else {
            return Ok(());
        };
        let v = self.view(ino)?;
        if v.src.upper == Upper::No {
            return Ok(());
        }
        self.with_view(ino, |v| Ok(upper.sync_dir(&v.path)?))?;
        self.lock().unsynced.remove(&ino);
        if ino != ROOT_INO {
            self.sync_copied_up_dirs(v.parent)?;
        }
        Ok(())
    }

    /// Syncs `dir` and each directory above it that a copy-up put an entry
    /// in since it was last synced.
    fn sync_copied_up_dirs(&self, dir: u64) -> Result<()> {
        let Some(upper) = self.upper.as_ref() else {
            return Ok(());
        };
        let dirs: Vec<u64> = {
            let t = self.lock();
            if t.unsynced.is_empty() {
                return Ok(());
            }
            let mut out = Vec::new();
            let mut cur = dir;
            for _ in 0..4096 {
                if t.unsynced.contains(&cur) {
                    out.push(cur);
                }
                match t.nodes.get(&cur) {
                    Some(n) if cur != ROOT_INO => cur = n.parent,
                    _ => break,
                }
            }
            out
        };
        for d in dirs {
            match self.with_view(d, |v| Ok(upper.sync_dir(&v.path)?)) {
                // Gone since: nothing of it to keep.
                Err(e) if e.errno() == libc::ENOENT => {}
                r => r?,
            }
            self.lock().unsynced.remove(&d);
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let _g = self.changing()?;
        match &*self.file(fh).ok_or(UnionError::BadHandle)? {
            OpenFile::Upper(f) => {
                let flags = nix::fcntl::FallocateFlags::from_bits_truncate(mode);
                nix::fcntl::fallocate(f, flags, offset as i64, len as i64)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                Ok(())
            }
            OpenFile::Lower(_) => Err(UnionError::BadHandle),
        }
    }

    /// SEEK_DATA / SEEK_HOLE on an open file.
    pub fn seek_fh(&self, fh: u64, offset: u64, data: bool) -> Result<u64> {
        match &*self.file(fh).ok_or(UnionError::BadHandle)? {
            OpenFile::Lower(l) => self.seek_lower(*l, offset, data),
            OpenFile::Upper(f) => {
                use nix::unistd::Whence;
                let whence = if data {
                    Whence::SeekData
                } else {
                    Whence::SeekHole
                };
                let offset = i64::try_from(offset).map_err(|_| UnionError::Invalid)?;
                let r = nix::unistd::lseek(f, offset, whence)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                Ok(r as u64)
            }
        }
    }

    /// Blocks, files and free space of the filesystem holding the upper dir.
    pub fn upper_statfs(&self) -> Result<nix::sys::statvfs::Statvfs> {
        Ok(self.upper_dir()?.statvfs()?)
    }
}

impl Upper {
    /// After a rename the entry is in the upper dir in some form.
    fn max_upper(self) -> Upper {
        match self {
            Upper::No => Upper::Full,
            s => s,
        }
    }
}

fn sflag(kind: FileKind) -> SFlag {
    match kind {
        FileKind::CharDevice => SFlag::S_IFCHR,
        FileKind::BlockDevice => SFlag::S_IFBLK,
        FileKind::Fifo => SFlag::S_IFIFO,
        FileKind::Socket => SFlag::S_IFSOCK,
        _ => SFlag::S_IFREG,
    }
}

/// A name a change may give: a valid name, and not one that would read as a
/// deletion (`.wh.`) in the upper dir and in a committed layer.
fn check_new_name(name: &[u8]) -> Result<()> {
    check_name(name)?;
    if name.starts_with(WHITEOUT_PREFIX) {
        return Err(UnionError::NotPermitted);
    }
    Ok(())
}

/// Whether a renamed entry's number is worth recording as its origin: a
/// lower entry's number is the same in every mount, an upper entry keeps its
/// host number across a rename anyway, and a fresh number (see `new_ino`)
/// means something only in this mount, so recorded it could collide with
/// another file's after a remount.
fn keeps_origin(ino: u64) -> bool {
    lower_of_ino(ino).is_some()
}
