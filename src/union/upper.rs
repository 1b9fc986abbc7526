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

use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::unistd::{Gid, Uid};
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";
pub const XATTR_PREFIX: &[u8] = b"trusted.layerfs.";
pub const XATTR_ORIGIN: &str = "trusted.layerfs.origin";
pub const XATTR_METACOPY: &str = "trusted.layerfs.metacopy";
pub const XATTR_REDIRECT: &str = "trusted.layerfs.redirect";

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
}

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
            root_fd,
            work_fd,
            next_tmp: AtomicU64::new(0),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An O_PATH descriptor of directory `rel`, resolved beneath the root.
    pub fn dir_fd(&self, rel: &[u8]) -> io::Result<OwnedFd> {
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
        if !name.is_empty() {
            p.push(os(name));
        }
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
        let target: &[u8] = if name.is_empty() { b"." } else { name };
        match nix::sys::stat::fstatat(&fd, os(target), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(None),
            Err(e) => Err(errno(e)),
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
            let st = nix::sys::stat::fstatat(&fd, os(name), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(errno)?;
            out.push(UpperEntry {
                name: name.to_vec(),
                stat: st,
            });
        }
        Ok(out)
    }

    pub fn get_xattr(&self, rel: &[u8], name: &str) -> io::Result<Option<Vec<u8>>> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::get(Self::fd_path(&fd, base), name)
    }

    pub fn set_xattr(&self, rel: &[u8], name: &[u8], value: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::set(Self::fd_path(&fd, base), os(name), value)
    }

    pub fn remove_xattr(&self, rel: &[u8], name: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        xattr::remove(Self::fd_path(&fd, base), os(name))
    }

    /// Extended attributes as (name, value) pairs, our own marks left out.
    pub fn xattrs(&self, rel: &[u8]) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let path = Self::fd_path(&fd, base);
        let mut out = Vec::new();
        for name in xattr::list(&path)? {
            let n = name.as_bytes();
            if n.starts_with(XATTR_PREFIX) {
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
    pub fn open_file(&self, rel: &[u8], flags: OFlag, mode: u32) -> io::Result<File> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let f = nix::fcntl::openat(&fd, os(base), flags, Mode::from_bits_truncate(mode))
            .map_err(errno)?;
        Ok(File::from(f))
    }

    pub fn mkdir(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::sys::stat::mkdirat(&fd, os(base), Mode::from_bits_truncate(mode)).map_err(errno)
    }

    pub fn mknod(&self, rel: &[u8], kind: SFlag, mode: u32, rdev: u64) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::sys::stat::mknodat(&fd, os(base), kind, Mode::from_bits_truncate(mode), rdev)
            .map_err(errno)
    }

    pub fn symlink(&self, rel: &[u8], target: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::unistd::symlinkat(os(target), &fd, os(base)).map_err(errno)
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
        for e in self.read_dir(rel)? {
            if e.name.starts_with(WHITEOUT_PREFIX) && e.stat.st_mode & libc::S_IFMT == libc::S_IFREG
            {
                self.unlink(&join(rel, &e.name))?;
            }
        }
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::unistd::unlinkat(&fd, os(base), nix::unistd::UnlinkatFlags::RemoveDir).map_err(errno)
    }

    pub fn rename(&self, from: &[u8], to: &[u8], flags: nix::fcntl::RenameFlags) -> io::Result<()> {
        let (fdir, fbase) = split(from);
        let (tdir, tbase) = split(to);
        let ffd = self.dir_fd(fdir)?;
        let tfd = self.dir_fd(tdir)?;
        nix::fcntl::renameat2(&ffd, os(fbase), &tfd, os(tbase), flags).map_err(errno)
    }

    /// fsync(2) of directory `rel`: its entries are on disk when it returns.
    pub fn sync_dir(&self, rel: &[u8]) -> io::Result<()> {
        File::from(open_readable(&self.dir_fd(rel)?)?).sync_all()
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
        let fd = self.dir_fd(dir)?;
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        nix::unistd::fchownat(
            &fd,
            os(target),
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    pub fn chmod(&self, rel: &[u8], mode: u32) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        let target: &[u8] = if base.is_empty() { b"." } else { base };
        nix::sys::stat::fchmodat(
            &fd,
            os(target),
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(errno)
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
            std::process::id(),
            self.next_tmp.fetch_add(1, Ordering::Relaxed)
        )
        .into_bytes()
    }

    pub fn work_fd(&self) -> &OwnedFd {
        &self.work_fd
    }

    /// Moves work-dir entry `tmp` to `rel` (atomically replacing what is there).
    pub fn install(&self, tmp: &[u8], rel: &[u8]) -> io::Result<()> {
        let (dir, base) = split(rel);
        let fd = self.dir_fd(dir)?;
        nix::fcntl::renameat(&self.work_fd, os(tmp), &fd, os(base)).map_err(errno)
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
        nix::unistd::fchownat(
            &self.work_fd,
            os(tmp),
            Some(Uid::from_raw(m.uid)),
            Some(Gid::from_raw(m.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        if let Some(mode) = m.mode {
            nix::sys::stat::fchmodat(
                &self.work_fd,
                os(tmp),
                Mode::from_bits_truncate(mode),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(errno)?;
        }
        let path = self.work_path(tmp);
        for (k, v) in &m.xattrs {
            if let Err(e) = xattr::set(&path, os(k), v) {
                // Our own marks must hold; an image's xattr this filesystem
                // refuses (an invalid capability, an unknown namespace) must
                // not stop the copy.
                if k.starts_with(XATTR_PREFIX) {
                    return Err(e);
                }
                log::warn!(
                    "copy-up: xattr {} not kept: {e}",
                    String::from_utf8_lossy(k)
                );
            }
        }
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

    pub fn mkdir_temp(&self, tmp: &[u8]) -> io::Result<()> {
        nix::sys::stat::mkdirat(&self.work_fd, os(tmp), Mode::from_bits_truncate(0o700))
            .map_err(errno)
    }

    pub fn symlink_temp(&self, tmp: &[u8], target: &[u8]) -> io::Result<()> {
        nix::unistd::symlinkat(os(target), &self.work_fd, os(tmp)).map_err(errno)
    }

    pub fn mknod_temp(&self, tmp: &[u8], kind: SFlag, rdev: u64) -> io::Result<()> {
        nix::sys::stat::mknodat(
            &self.work_fd,
            os(tmp),
            kind,
            Mode::from_bits_truncate(0o600),
            rdev,
        )
        .map_err(errno)
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
