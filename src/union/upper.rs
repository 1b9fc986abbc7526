//! `UpperDir`: the host directory that holds a container's changes, and the
//! only code that touches it. Every path is resolved beneath its root with
//! openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), and the last component is
//! never followed, so nothing stored in a container (a symlink to /etc, say)
//! can make the daemon read or write a host path outside it.
//!
//! Layout, in OCI terms so a commit is a plain walk: a deleted name is an
//! empty file `.wh.NAME` beside it; `DIR/.wh..wh..opq` hides DIR's lower
//! contents. Our own marks are `trusted.layerfs.*` xattrs: `origin` (the
//! inode number a copied-up file had, kept across renames), `metacopy` (the
//! file holds metadata only; its data is still the lower layer's) and
//! `redirect` (a renamed directory's lower path, whose contents it merges).
//! A change becomes visible by rename from `work/`, so a crash leaves either
//! the old or the new state.
//!
//! A container has one of two forms, chosen when it is made (`Form`): made
//! by root, entries carry their real owners, modes and device numbers. Made
//! by an ordinary user (in a user namespace or not), the marks are
//! `user.layerfs.*` (the `trusted.` namespace is refused there, as kernel
//! overlayfs's `userxattr`), every host file belongs to the daemon with
//! owner rw(x) and no setuid bits, and what the container sees (owner, mode,
//! type, device number) is `user.containers.override_stat` =
//! "uid:gid:0mode:type", the form fuse-overlayfs and containers/storage use
//! for rootless Podman; a device node is a regular host file with that
//! xattr, and so are fifos and sockets (user xattrs are refused on special
//! files). An entry without the xattr belongs to 0:0 with its host mode:
//! symlinks (they cannot carry user xattrs) and entries whose host mode is
//! their mode.

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::unistd::{Gid, Uid};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";
pub const XATTR_PREFIX: &[u8] = b"trusted.layerfs.";
pub const XATTR_ORIGIN: &str = "trusted.layerfs.origin";
pub const XATTR_METACOPY: &str = "trusted.layerfs.metacopy";
pub const XATTR_REDIRECT: &str = "trusted.layerfs.redirect";
/// Where the user form keeps the marks above.
const USER_MARK_PREFIX: &str = "user.layerfs.";
/// The container's view of an entry of the user form.
pub const XATTR_OVERRIDE: &str = "user.containers.override_stat";
/// On the upper root of a container of the user form.
const XATTR_FORM: &str = "user.layerfs.form";

/// How an upper dir keeps its marks and its entries' owners (see above).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// `trusted.` marks, real owners: made by root.
    #[default]
    Root,
    /// `user.` marks, owners and modes in `user.containers.override_stat`.
    User,
}

impl Form {
    /// The form a container made by this process gets: root of the host
    /// keeps real owners; anyone else (in a user namespace or not) cannot.
    pub fn for_this_process() -> Form {
        if nix::unistd::geteuid().is_root() && !crate::userns::in_user_namespace() {
            Form::Root
        } else {
            Form::User
        }
    }

    /// Stamps a new, empty upper dir with its form.
    pub fn stamp(self, root: &Path) -> io::Result<()> {
        match self {
            Form::Root => Ok(()),
            Form::User => xattr::set(root, XATTR_FORM, b"user"),
        }
    }

    fn of(root_fd: &OwnedFd) -> Form {
        match xattr::get(UpperDir::fd_path(root_fd, b""), XATTR_FORM) {
            Ok(Some(v)) if v == b"user" => Form::User,
            _ => Form::Root,
        }
    }
}

/// Owner, mode bits and type of an entry as a user-form container sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// `S_IFMT` bits and 0o7777.
    pub mode: u32,
    pub rdev: u64,
}

impl Override {
    /// "uid:gid:0mode:type", type one of file, dir, symlink, pipe, socket,
    /// char-MAJOR-MINOR, block-MAJOR-MINOR.
    pub fn encode(&self) -> Vec<u8> {
        let (ma, mi) = (libc::major(self.rdev), libc::minor(self.rdev));
        let kind = match self.mode & libc::S_IFMT {
            libc::S_IFDIR => "dir".to_string(),
            libc::S_IFLNK => "symlink".to_string(),
            libc::S_IFIFO => "pipe".to_string(),
            libc::S_IFSOCK => "socket".to_string(),
            libc::S_IFCHR => format!("char-{ma}-{mi}"),
            libc::S_IFBLK => format!("block-{ma}-{mi}"),
            _ => "file".to_string(),
        };
        format!(
            "{}:{}:{:04o}:{kind}",
            self.uid,
            self.gid,
            self.mode & 0o7777
        )
        .into_bytes()
    }

    /// Parses the value; without a type (the older three-field form) the
    /// host file's type `host_kind` stands.
    pub fn decode(v: &[u8], host_kind: u32) -> Option<Override> {
        let s = std::str::from_utf8(v).ok()?;
        let mut f = s.trim_end_matches('\0').split(':');
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        let mode = u32::from_str_radix(f.next()?, 8).ok()?;
        let (kind, rdev) = match f.next() {
            None => (host_kind, 0),
            Some(t) => {
                let mut p = t.split('-');
                let kind = match p.next()? {
                    "file" => libc::S_IFREG,
                    "dir" => libc::S_IFDIR,
                    "symlink" => libc::S_IFLNK,
                    "pipe" => libc::S_IFIFO,
                    "socket" => libc::S_IFSOCK,
                    "char" => libc::S_IFCHR,
                    "block" => libc::S_IFBLK,
                    _ => return None,
                };
                let rdev = match (p.next(), p.next()) {
                    (Some(a), Some(b)) => libc::makedev(a.parse().ok()?, b.parse().ok()?),
                    _ => 0,
                };
                (kind, rdev)
            }
        };
        if f.next().is_some() {
            return None;
        }
        Some(Override {
            uid,
            gid,
            mode: kind | (mode & 0o7777),
            rdev,
        })
    }
}

/// The mode a user-form host file gets: the daemon (its owner) can always
/// read and write it, and nothing of it is setuid on the host.
fn host_mode(kind: u32, mode: u32) -> u32 {
    let own = if kind == libc::S_IFDIR { 0o700 } else { 0o600 };
    (mode & 0o777) | own
}

/// What an entry copied up from a lower layer keeps.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    /// None for a symlink (its mode cannot be set).
    pub mode: Option<u32>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub mtime: (i64, u32),
}

/// What `UpperDir::make` creates.
#[derive(Clone, Copy, Debug)]
pub enum Make<'a> {
    /// A regular file, opened read-write.
    File,
    Dir,
    /// A device node, fifo or socket, with its device number.
    Node(SFlag, u64),
    Symlink(&'a [u8]),
}

/// The changes of one setattr, for `UpperDir::change`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Change {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Mode bits (0o7777).
    pub mode: Option<u32>,
    /// atime and mtime (UTIME_OMIT / UTIME_NOW as utimensat(2) takes them).
    pub times: Option<(libc::timespec, libc::timespec)>,
    /// Drop setuid, and setgid of a group-executable entry (see
    /// `kill_suidgid`), unless `mode` is given.
    pub kill_suidgid: bool,
}

/// `mode` without what a write, truncate or chown by an unprivileged
/// caller drops: setuid, and setgid where group execution makes it mean
/// "run as the group" (without it, setgid marks mandatory locking).
pub fn kill_suidgid(mode: u32) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_IXGRP != 0 {
        m &= !libc::S_ISGID;
    }
    m
}

/// A host directory entry of the upper dir.
#[derive(Clone, Debug)]
pub struct UpperEntry {
    pub name: Vec<u8>,
    pub stat: libc::stat,
}

pub struct UpperDir {
    root: PathBuf,
    root_fd: OwnedFd,
    work_fd: OwnedFd,
    next_tmp: AtomicU64,
    /// This process's id, in temp names (asked once: getpid is a syscall).
    pid: u32,
    form: Form,
    dirs: Mutex<DirFds>,
}

/// Descriptors of directories by path (see `UpperDir::dir_fd`).
#[derive(Default)]
struct DirFds {
    fds: HashMap<Vec<u8>, Arc<OwnedFd>>,
    /// Counts the changes that can move or remove a directory: a
    /// descriptor resolved before one of them is not kept.
    epoch: u64,
}

/// How many directory descriptors `DirFds` keeps before it starts over.
const DIR_FDS: usize = 128;

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// (parent, name) of a relative path; the root has no parent.
pub fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&c| c == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    }
}

pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// A directory descriptor that can be read (and fsynced), from an O_PATH one.
fn open_readable(dir: &OwnedFd) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, ".", flags, Mode::empty()).map_err(errno)
}

fn errno(e: nix::errno::Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl UpperDir {
    /// Opens `root` (the changes) and `work` (scratch on the same filesystem),
    /// clearing what a crash left in `work`.
    pub fn open(root: &Path, work: &Path) -> io::Result<UpperDir> {
        std::fs::create_dir_all(root)?;
        std::fs::create_dir_all(work)?;
        for e in std::fs::read_dir(work)? {
            let p = e?.path();
            let _ = std::fs::remove_file(&p).or_else(|_| std::fs::remove_dir_all(&p));
        }
        UpperDir::open_existing(root, work)
    }

    /// Opens an upper dir to read it while its own daemon may be using it
    /// (a commit): nothing is cleared or changed.
    pub fn open_existing(root: &Path, work: &Path) -> io::Result<UpperDir> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root_fd = nix::fcntl::open(root, flags, Mode::empty()).map_err(errno)?;
        let work_fd = nix::fcntl::open(work, flags, Mode::empty()).map_err(errno)?;
        Ok(UpperDir {
            root: root.to_path_buf(),
            form: Form::of(&root_fd),
            root_fd,
            work_fd,
            next_tmp: AtomicU64::new(0),
            pid: std::process::id(),
            dirs: Mutex::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn form(&self) -> Form {
        self.form
    }

    /// The host name of one of our marks (`XATTR_ORIGIN`, ...) in this form.
    pub fn mark_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        match (self.form, name.strip_prefix("trusted.layerfs.")) {
            (Form::User, Some(rest)) => format!("{USER_MARK_PREFIX}{rest}").into(),
            _ => name.into(),
        }
    }

    /// Whether `name` is an xattr of ours, which a container neither sees
    /// nor sets. The user form's names are ours in both forms: a root-form
    /// container that set `user.layerfs.form` on its root would be read in
    /// the other form at its next mount.
    pub fn is_private_xattr(&self, name: &[u8]) -> bool {
        name.starts_with(XATTR_PREFIX)
            || name.starts_with(USER_MARK_PREFIX.as_bytes())
            || name == XATTR_OVERRIDE.as_bytes()
    }

    /// In the user form: what the container sees of an entry whose host
    /// stat is `st` and whose override xattr is `value`.
    fn apply_override(&self, st: &mut libc::stat, value: Option<Vec<u8>>) {
        if self.form != Form::User {
            return;
        }
        let kind = st.st_mode & libc::S_IFMT;
        match value.and_then(|v| Override::decode(&v, kind)) {
            Some(o) => {
                st.st_uid = o.uid;
                st.st_gid = o.gid;
                st.st_mode = o.mode;
                st.st_rdev = o.rdev;
            }
            None => {
                // Symlinks, and entries made with a mode the host file shows
                // as it is: the container's root owns them, whoever the
                // host owner (the daemon of the moment) is.
                st.st_uid = 0;
                st.st_gid = 0;
            }
        }
    }

    fn read_override(&self, path: &Path, kind: u32) -> Option<Vec<u8>> {
        // Symlinks cannot carry user xattrs; asking would follow nothing
        // but cost a call.
        if kind == libc::S_IFLNK {
            return None;
        }
        xattr::get(path, XATTR_OVERRIDE).ok().flatten()
    }

    /// In the user form, changes the recorded view of `name` (beneath
    /// `dir`); a no-op for a symlink (see the module comment). Returns what
    /// the container sees of it afterwards.
    fn update_override(
        &self,
        dir: &OwnedFd,
        name: &[u8],
        f: impl FnOnce(&mut Override),
    ) -> io::Result<libc::stat> {
        let target: &[u8] = if name.is_empty() { b"." } else { name };
        let mut st = nix::sys::stat::fstatat(dir, os(target), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(errno)?;
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFLNK {
            self.apply_override(&mut st, None);
            return Ok(st);
        }
        let host_perm = st.st_mode & 0o7777;
        let path = Self::fd_path(dir, name);
        let value = self.read_override(&path, kind);
        let had = value.clone();
        self.apply_override(&mut st, value);
        let mut o = Override {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
            rdev: st.st_rdev,
        };
        f(&mut o);
        let new = o.encode();
        let mut changed = false;
        if had.as_deref() != Some(&new[..]) {
            xattr::set(&path, XATTR_OVERRIDE, &new)?;
            changed = true;
        }
        let host = host_mode(kind, o.mode);
        if host_perm != host {
            nix::sys::stat::fchmodat(
                dir,
                os(target),
                Mode::from_bits_truncate(host),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
            changed = true;
        }
        if changed {
            // The change moved its ctime: the caller answers with this stat.
            st = nix::sys::stat::fstatat(dir, os(target), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno)?;
        }
        st.st_uid = o.uid;
        st.st_gid = o.gid;
        st.st_mode = o.mode;
        st.st_rdev = o.rdev;
        Ok(st)
    }

    /// `name` beneath directory `dir` (`dir` itself when empty), not
    /// followed, as the container sees it.
    fn stat_at(&self, dir: &OwnedFd, name: &[u8]) -> io::Result<libc::stat> {
        let target: &[u8] = if name.is_empty() { b"." } else { name };
        let mut st = nix::sys::stat::fstatat(dir, os(target), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(errno)?;
        if self.form == Form::User {
            let v = self.read_override(&Self::fd_path(dir, name), st.st_mode & libc::S_IFMT);
            self.apply_override(&mut st, v);
        }
        Ok(st)
    }

    /// fstat of an open upper file, as the container sees it.
    pub fn fstat(&self, f: &File) -> io::Result<libc::stat> {
        let mut st = nix::sys::stat::fstat(f).map_err(errno)?;
        if self.form == Form::User {
            let v = xattr::FileExt::get_xattr(f, XATTR_OVERRIDE).ok().flatten();
            self.apply_override(&mut st, v);
        }
        Ok(st)
    }

    fn dirs(&self) -> MutexGuard<'_, DirFds> {
        self.dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An O_PATH descriptor of directory `rel`, resolved beneath the root.
    /// Kept for the next call: a change names its directory each time, and
    /// resolving the path again cost an openat2 walk (and a close) per
    /// request, five per untarred file.
    pub fn dir_fd(&self, rel: &[u8]) -> io::Result<Arc<OwnedFd>> {
        let epoch = {
            let d = self.dirs();
            if let Some(fd) = d.fds.get(rel) {
                return Ok(fd.clone());
            }
            d.epoch
        };
        let fd = Arc::new(self.resolve_dir(rel)?);
        let mut d = self.dirs();
        // A rename or rmdir since the walk may have moved what it found.
        if d.epoch == epoch {
            if d.fds.len() >= DIR_FDS {
                d.fds.clear();
            }
            d.fds.insert(rel.to_vec(), fd.clone());
        }
        Ok(fd)
    }

    /// After a change that moved or removed what was at `paths`: the
    /// descriptors kept for them and beneath them name another place now.
    fn dirs_moved(&self, paths: &[&[u8]]) {
        let under = |k: &[u8], p: &[u8]| {
            p.is_empty() || (k.starts_with(p) && (k.len() == p.len() || k[p.len()] == b'/'))
        };
        let mut d = self.dirs();
        d.epoch += 1;
        d.fds.retain(|k, _| !paths.iter().any(|p| under(k, p)));
    }

    fn resolve_dir(&self, rel: &[u8]) -> io::Result<OwnedFd> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
        let path: &[u8] = if rel.is_empty() { b"." } else { rel };
        openat2(&self.root_fd, os(path), how).map_err(errno)
    }

    /// `/proc/self/fd/N/name`: a path the l*xattr calls resolve beneath a
    /// descriptor, without following the last component.
    fn fd_path(fd: &OwnedFd, name: &[u8]) -> PathBuf {
        let mut p = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        // The l*xattr calls would act on the magic link itself, not on the
        // directory it names.
        p.push(if name.is_empty() { os(b".") } else { os(name) });
        p
    }

    pub fn lstat(&self, rel: &[u8]) -> io::Result<Option<libc::stat>> {
        let (dir, name) = split(rel);
        let fd = match self.dir_fd(dir) {
            Ok(fd) => fd,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match self.stat_at(&fd, name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The entries of directory `rel` (whiteout files included), unsorted.
    pub fn read_dir(&self, rel: &[u8]) -> io::Result<Vec<UpperEntry>> {
        let fd = self.dir_fd(rel)?;
        let dir_fd = open_readable(&fd)?;
        let mut dir = nix::dir::Dir::from_fd(dir_fd).map_err(errno)?;
        let mut out = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(errno)?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let mut st = nix::sys::stat::fstatat(&fd, os(name), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno)?;
            if self.form == Form::User && !name.starts_with(WHITEOUT_PREFIX) {
                let v = self.read_override(&Self::fd_path(&fd, name), st.st_mode & libc::S_IFMT);
                self.apply_override(&mut st, v);
            }
            out.push(UpperEntry {
                name: name.to_vec(),
                stat: st,
            });
        }
        Ok(out)
    }

    /// An xattr of `rel`; our marks by their `trusted.layerfs.` names,
    /// whatever the form.
    pub fn get_xattr(&self, rel: &[u8], name: &str) -> io::Result<Option<Vec<u8>>> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::get(Self::fd_path(&fd, base), &*self.mark_name(name))
    }

    pub fn set_xattr(&self, rel: &[u8], name: &[u8], value: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::set(Self::fd_path(&fd, base), self.host_xattr(name), value)
    }

    pub fn remove_xattr(&self, rel: &[u8], name: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::remove(Self::fd_path(&fd, base), self.host_xattr(name))
    }

    fn host_xattr(&self, name: &[u8]) -> std::ffi::OsString {
        match std::str::from_utf8(name) {
            Ok(n) => self.mark_name(n).into_owned().into(),
            Err(_) => os(name).to_owned(),
        }
    }

    /// Extended attributes as (name, value) pairs, our own marks left out.
    pub fn xattrs(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let path = Self::fd_path(&fd, base);
        let mut out = Vec::new();
        for name in xattr::list(&path)? {
            let n = name.as_bytes();
            if self.is_private_xattr(n) {
                continue;
            }
            if let Some(v) = xattr::get(&path, &name)? {
                out.push((n.to_vec(), v));
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn read_link(&self, rel: &[u8]) -> io::Result<Vec<u8>> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::fcntl::readlinkat(&fd, os(base))
            .map(|s| s.as_bytes().to_vec())
            .map_err(errno)
    }

    /// Opens regular file `rel` (never following a symlink).
    /// A new entry's mode on the host (see `host_mode`).
    fn new_mode(&self, kind: u32, mode: u32) -> Mode {
        Mode::from_bits_truncate(match self.form {
            Form::Root => mode,
            Form::User => host_mode(kind, mode),
        })
    }

    pub fn open_file(&self, rel: &[u8], flags: OFlag, mode: u32) -> io::Result<File> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let create = flags.contains(OFlag::O_CREAT);
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let f = nix::fcntl::openat(&fd, os(base), flags, self.new_mode(libc::S_IFREG, mode))
            .map_err(errno)?;
        // Without an override a file shows its host mode, owned by 0:0:
        // only a mode the host file cannot have needs one now.
        if create && self.form == Form::User && host_mode(libc::S_IFREG, mode) != mode & 0o7777 {
            self.update_override(&fd, base, |o| o.mode = libc::S_IFREG | (mode & 0o7777))?;
        }
        Ok(File::from(f))
    }

    /// A device node, fifo or socket of the user form is a regular host
    /// file whose override says what it is.
    fn mknod_at(
        &self,
        fd: &OwnedFd,
        base: &[u8],
        kind: SFlag,
        mode: u32,
        rdev: u64,
    ) -> io::Result<()> {
        if self.form == Form::Root {
            return nix::sys::stat::mknodat(
                fd,
                os(base),
                kind,
                Mode::from_bits_truncate(mode),
                rdev,
            )
            .map_err(errno);
        }
        // User xattrs are refused on special files: every one but a
        // directory, file or symlink is a regular host file.
        let device = kind == SFlag::S_IFCHR || kind == SFlag::S_IFBLK;
        if kind != SFlag::S_IFREG && kind != SFlag::S_IFDIR {
            let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW;
            nix::fcntl::openat(
                fd,
                os(base),
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(errno)?;
        } else {
            nix::sys::stat::mknodat(fd, os(base), kind, self.new_mode(kind.bits(), mode), 0)
                .map_err(errno)?;
        }
        self.update_override(fd, base, |o| {
            o.mode = kind.bits() | (mode & 0o7777);
            o.rdev = if device { rdev } else { 0 };
        })
        .map(drop)
    }

    pub fn link(&self, from: &[u8], to: &[u8]) -> io::Result<()> {
        let (fdir, fbase) = split(from);
        let (tdir, tbase) = split(to);
        let ffd = self.dir_fd(fdir)?;
        let tfd = self.dir_fd(tdir)?;
        nix::unistd::linkat(&ffd, os(fbase), &tfd, os(tbase), AtFlags::empty()).map_err(errno)
    }

    pub fn unlink(&self, rel: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::unistd::unlinkat(&fd, os(base), nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(errno)
    }

    /// Removes directory `rel` and the whiteout files it may hold.
    pub fn rmdir(&self, rel: &[u8]) -> io::Result<()> {
        let fd = self.dir_fd(rel)?;
        let mut dir = nix::dir::Dir::from_fd(open_readable(&fd)?).map_err(errno)?;
        let mut whiteouts = Vec::new();
        for e in dir.iter() {
            let e = e.map_err(errno)?;
            let name = e.file_name().to_bytes();
            if name.starts_with(WHITEOUT_PREFIX) {
                let regular = match e.file_type() {
                    Some(t) => t == nix::dir::Type::File,
                    None => nix::sys::stat::fstatat(&fd, os(name), AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG),
                };
                if regular {
                    whiteouts.push(name.to_vec());
                }
            }
        }
        for w in whiteouts {
            nix::unistd::unlinkat(&fd, os(&w), nix::unistd::UnlinkatFlags::NoRemoveDir)
                .map_err(errno)?;
        }
        let (parent, base) = split(rel);
        let pfd = self.dir_fd(parent)?;
        let r = nix::unistd::unlinkat(&pfd, os(base), nix::unistd::UnlinkatFlags::RemoveDir);
        self.dirs_moved(&[rel]);
        r.map_err(errno)
    }

    pub fn rename(&self, from: &[u8], to: &[u8], flags: nix::fcntl::RenameFlags) -> io::Result<()> {
        let (fdir, fbase) = split(from);
        let (tdir, tbase) = split(to);
        let ffd = self.dir_fd(fdir)?;
        let tfd = self.dir_fd(tdir)?;
        let r = nix::fcntl::renameat2(&ffd, os(fbase), &tfd, os(tbase), flags);
        self.dirs_moved(&[from, to]);
        r.map_err(errno)
    }

    /// fsync(2) of directory `rel`: its entries are on disk when it returns.
    pub fn sync_dir(&self, rel: &[u8]) -> io::Result<()> {
        File::from(open_readable(&*self.dir_fd(rel)?)?).sync_all()
    }

    /// Records the deletion of `rel` (an empty `.wh.NAME` beside it).
    pub fn whiteout(&self, rel: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let mut wh = WHITEOUT_PREFIX.to_vec();
        wh.extend_from_slice(base);
        let fd = self.dir_fd(dir)?;
        match nix::fcntl::openat(
            &fd,
            os(&wh),
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    pub fn chown(&self, rel: &[u8], uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let (dir, base) = split(rel);
        self.chown_at(&*self.dir_fd(dir)?, base, uid, gid)
    }

    fn chown_at(
        &self,
        fd: &OwnedFd,
        base: &[u8],
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> io::Result<()> {
        if self.form == Form::User {
            return self
                .update_override(fd, base, |o| {
                    o.uid = uid.unwrap_or(o.uid);
                    o.gid = gid.unwrap_or(o.gid);
                    // What the kernel does on a chown (the host's does it in
                    // the root form).
                    if o.mode & libc::S_IFMT != libc::S_IFDIR {
                        o.mode = kill_suidgid(o.mode);
                    }
                })
                .map(drop);
        }
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        nix::unistd::fchownat(
            fd,
            os(target),
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    pub fn chmod(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, base) = split(rel);
        self.chmod_at(&*self.dir_fd(dir)?, base, mode)
    }

    fn chmod_at(&self, fd: &OwnedFd, base: &[u8], mode: u32) -> io::Result<()> {
        if self.form == Form::User {
            return self
                .update_override(fd, base, |o| {
                    o.mode = (o.mode & libc::S_IFMT) | (mode & 0o7777)
                })
                .map(drop);
        }
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        nix::sys::stat::fchmodat(
            fd,
            os(target),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(errno)
    }

    /// Applies `c` to `rel` (owner, then the setuid kill, mode, times) on
    /// one descriptor of its directory; returns what the container sees of
    /// it afterwards.
    pub fn change(&self, rel: &[u8], c: &Change) -> io::Result<libc::stat> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        let chown = c.uid.is_some() || c.gid.is_some();
        if chown {
            self.chown_at(&fd, base, c.uid, c.gid)?;
        }
        // A chown has dropped them already: the host's in the root form
        // (as it does for any caller, root included), `chown_at` in the
        // user form.
        if c.kill_suidgid && c.mode.is_none() && !chown {
            let st = self.stat_at(&fd, base)?;
            let kept = kill_suidgid(st.st_mode);
            if st.st_mode & libc::S_IFMT != libc::S_IFDIR && kept != st.st_mode {
                self.chmod_at(&fd, base, kept & 0o7777)?;
            }
        }
        if let Some(mode) = c.mode {
            self.chmod_at(&fd, base, mode)?;
        }
        if let Some((a, m)) = c.times {
            let a = nix::sys::time::TimeSpec::from(a);
            let m = nix::sys::time::TimeSpec::from(m);
            nix::sys::stat::utimensat(&fd, os(target), &a, &m, UtimensatFlags::NoFollowSymlink)
                .map_err(errno)?;
        }
        self.stat_at(&fd, base)
    }

    /// Creates `rel` as `what`, owned by `uid` and `gid` (the directory's
    /// group in a setgid directory, where a new directory is setgid too),
    /// with mode bits `mode` exactly whatever this process's umask (None
    /// for a symlink), all on one descriptor of its directory. Returns what
    /// the container sees of it and, for a file, the file open read-write.
    /// Nothing is left behind when it fails.
    pub fn make(
        &self,
        rel: &[u8],
        what: Make<'_>,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> io::Result<(libc::stat, Option<File>)> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let dir_st = self.stat_at(&fd, b"")?;
        let perm = mode.unwrap_or(0o777) & 0o7777;
        let file = match what {
            Make::File => {
                let flags = OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_RDWR
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let f =
                    nix::fcntl::openat(&fd, os(base), flags, self.new_mode(libc::S_IFREG, perm))
                        .map_err(errno)?;
                Some(File::from(f))
            }
            Make::Dir => {
                nix::sys::stat::mkdirat(&fd, os(base), self.new_mode(libc::S_IFDIR, perm))
                    .map_err(errno)?;
                None
            }
            Make::Node(kind, rdev) => {
                self.mknod_at(&fd, base, kind, perm, rdev)?;
                None
            }
            Make::Symlink(target) => {
                nix::unistd::symlinkat(os(target), &fd, os(base)).map_err(errno)?;
                None
            }
        };
        let gid = if dir_st.st_mode & libc::S_ISGID != 0 {
            dir_st.st_gid
        } else {
            gid
        };
        let sgid = match what {
            Make::Dir => dir_st.st_mode & libc::S_ISGID,
            _ => 0,
        };
        match self.own_at(&fd, base, uid, gid, mode.map(|m| (m & 0o7777) | sgid)) {
            Ok(st) => Ok((st, file)),
            Err(e) => {
                // Without its owner the entry must not stay: the caller is told it failed.
                let flag = match what {
                    Make::Dir => nix::unistd::UnlinkatFlags::RemoveDir,
                    _ => nix::unistd::UnlinkatFlags::NoRemoveDir,
                };
                let _ = nix::unistd::unlinkat(&fd, os(base), flag);
                Err(e)
            }
        }
    }

    /// Gives a new entry its owner and mode, changing only what differs
    /// from what it was made with.
    fn own_at(
        &self,
        fd: &OwnedFd,
        base: &[u8],
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> io::Result<libc::stat> {
        if self.form == Form::User {
            return self.update_override(fd, base, |o| {
                o.uid = uid;
                o.gid = gid;
                if let Some(m) = mode {
                    o.mode = (o.mode & libc::S_IFMT) | m;
                }
            });
        }
        let st = self.stat_at(fd, base)?;
        let chown = st.st_uid != uid || st.st_gid != gid;
        if chown {
            self.chown_at(fd, base, Some(uid), Some(gid))?;
        }
        // A chown may have dropped setuid bits: the mode goes on after it.
        let chmod = mode.filter(|&m| chown || st.st_mode & 0o7777 != m);
        if let Some(m) = chmod {
            self.chmod_at(fd, base, m)?;
        }
        if chown || chmod.is_some() {
            return self.stat_at(fd, base);
        }
        Ok(st)
    }

    pub fn utimens(
        &self,
        rel: &[u8],
        atime: &libc::timespec,
        mtime: &libc::timespec,
    ) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        let a = nix::sys::time::TimeSpec::from(*atime);
        let m = nix::sys::time::TimeSpec::from(*mtime);
        nix::sys::stat::utimensat(&fd, os(target), &a, &m, UtimensatFlags::NoFollowSymlink)
            .map_err(errno)
    }

    /// A fresh name in the work dir, for building an entry before it is
    /// renamed into place.
    pub fn temp_name(&self) -> Vec<u8> {
        format!(
            "tmp.{}.{}",
            self.pid,
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes()
    }

    pub fn work_fd(&self) -> &OwnedFd {
        &self.work_fd
    }

    /// Moves work-dir entry `tmp`, not a directory, to `rel` (atomically
    /// replacing what is there). No directory moves, so the kept directory
    /// descriptors stay right.
    pub fn install(&self, tmp: &[u8], rel: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::fcntl::renameat(&self.work_fd, os(tmp), &fd, os(base)).map_err(errno)
    }

    /// `install` of a directory: descriptors kept for `rel` and beneath it
    /// named what it replaced.
    pub fn install_dir(&self, tmp: &[u8], rel: &[u8]) -> io::Result<()> {
        let r = self.install(tmp, rel);
        self.dirs_moved(&[rel]);
        r
    }

    /// Creates a regular file in the work dir.
    pub fn create_temp(&self, mode: u32) -> io::Result<(Vec<u8>, File)> {
        let name = self.temp_name();
        let flags =
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let f = nix::fcntl::openat(
            &self.work_fd,
            os(&name),
            flags,
            Mode::from_bits_truncate(mode),
        )
        .map_err(errno)?;
        Ok((name, File::from(f)))
    }

    /// Gives work-dir entry `tmp` its owner, mode (not for a symlink), xattrs
    /// and mtime, before it is installed.
    pub fn set_temp_meta(&self, tmp: &[u8], m: &Meta) -> io::Result<()> {
        if self.form == Form::User {
            self.update_override(&self.work_fd, tmp, |o| {
                o.uid = m.uid;
                o.gid = m.gid;
                if let Some(mode) = m.mode {
                    o.mode = (o.mode & libc::S_IFMT) | (mode & 0o7777);
                }
            })?;
        } else {
            nix::unistd::fchownat(
                &self.work_fd,
                os(tmp),
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let Some(mode) = m.mode
            && self.form == Form::Root
        {
            nix::sys::stat::fchmodat(
                &self.work_fd,
                os(tmp),
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        let path = self.work_path(tmp);
        self.copy_xattrs(m, |k, v| xattr::set(&path, k, v))?;
        let t = nix::sys::time::TimeSpec::new(m.mtime.0, m.mtime.1 as i64);
        nix::sys::stat::utimensat(
            &self.work_fd,
            os(tmp),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(errno)
    }

    /// `set_temp_meta` for a regular file open as `file`: in the root form
    /// its owner, mode, xattrs and times go on through the descriptor, with
    /// no path to resolve.
    pub fn set_temp_file_meta(&self, tmp: &[u8], file: &File, m: &Meta) -> io::Result<()> {
        if self.form == Form::User {
            return self.set_temp_meta(tmp, m);
        }
        nix::unistd::fchown(file, Some(Uid::from_raw(m.uid)), Some(Gid::from_raw(m.gid)))
            .map_err(errno)?;
        if let Some(mode) = m.mode {
            nix::sys::stat::fchmod(file, Mode::from_bits_truncate(mode)).map_err(errno)?;
        }
        self.copy_xattrs(m, |k, v| xattr::FileExt::set_xattr(file, k, v))?;
        let t = nix::sys::time::TimeSpec::new(m.mtime.0, m.mtime.1 as i64);
        nix::sys::stat::futimens(file, &t, &t).map_err(errno)
    }

    /// Sets `m`'s xattrs with `set`, by their host names. Our own marks
    /// must hold; an image's xattr this filesystem refuses (an invalid
    /// capability, an unknown namespace) must not stop the copy.
    fn copy_xattrs(
        &self,
        m: &Meta,
        set: impl Fn(std::ffi::OsString, &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        for (k, v) in &m.xattrs {
            if let Err(e) = set(self.host_xattr(k), v) {
                if k.starts_with(XATTR_PREFIX) {
                    return Err(e);
                }
                log::warn!(
                    "copy-up: xattr {} not kept: {e}",
                    String::from_utf8_lossy(k)
                );
            }
        }
        Ok(())
    }

    pub fn mkdir_temp(&self, tmp: &[u8]) -> io::Result<()> {
        nix::sys::stat::mkdirat(&self.work_fd, os(tmp), Mode::from_bits_truncate(0o700))
            .map_err(errno)
    }

    pub fn symlink_temp(&self, tmp: &[u8], target: &[u8]) -> io::Result<()> {
        nix::unistd::symlinkat(os(target), &self.work_fd, os(tmp)).map_err(errno)
    }

    pub fn mknod_temp(&self, tmp: &[u8], kind: SFlag, rdev: u64) -> io::Result<()> {
        self.mknod_at(&self.work_fd, tmp, kind, 0o600, rdev)
    }

    /// The path of a work-dir entry for calls that need a path.
    pub fn work_path(&self, tmp: &[u8]) -> PathBuf {
        let mut p = PathBuf::from(format!(
            "/proc/self/fd/{}",
            self.work_fd.as_fd().as_raw_fd()
        ));
        p.push(os(tmp));
        p
    }

    /// Free space of the filesystem that holds the upper dir, for statfs.
    pub fn statvfs(&self) -> io::Result<nix::sys::statvfs::Statvfs> {
        nix::sys::statvfs::fstatvfs(&self.root_fd).map_err(errno)
    }
}
