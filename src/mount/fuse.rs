//! The FUSE adapter: the only code that knows fuser. Each callback asks the
//! union and turns its answer (or its error's errno) into a reply.
//!
//! A read-only mount answers `open` and `opendir` with ENOSYS once: the
//! kernel then opens files and directories without asking, keeps their pages
//! cached across opens (what FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR give) and
//! saves a round trip per open; reads name the inode, which is all the union
//! needs. Layers never change, so entries, attributes and even misses
//! (negative entries) are cached for a long time.

use crate::union::{Attr, FileKind, UnionError, UnionFs};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust entries and attributes: layers are immutable.
const TTL: Duration = Duration::from_secs(24 * 3600);
const READAHEAD: u32 = 1 << 20;

pub struct FuseFs {
    fs: Arc<UnionFs>,
}

impl FuseFs {
    pub fn new(fs: Arc<UnionFs>) -> Self {
        FuseFs { fs }
    }
}

fn errno(e: &UnionError) -> Errno {
    Errno::from_i32(e.errno())
}

fn system_time(secs: i64, nsecs: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsecs as u64)
    }
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime.secs, a.atime.nsecs),
        mtime: system_time(a.mtime.secs, a.mtime.nsecs),
        ctime: system_time(a.ctime.secs, a.ctime.nsecs),
        crtime: system_time(a.mtime.secs, a.mtime.nsecs),
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for FuseFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each wish separately: an old kernel lacking one still mounts.
        for flag in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_NO_OPEN_SUPPORT,
            InitFlags::FUSE_NO_OPENDIR_SUPPORT,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config.set_max_readahead(READAHEAD);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        log::debug!("lookup {} {:?}", parent.0, name);
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(0)),
            // A negative entry: the kernel remembers the miss too.
            Err(UnionError::NotFound) => {
                let mut none = file_attr(&negative());
                none.ino = INodeNo(0);
                reply.entry(&TTL, &none, Generation(0))
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        log::debug!("getattr {}", ino.0);
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        log::debug!("readlink {}", ino.0);
        match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        log::debug!("open {} {:?}", ino.0, flags);
        reply.error(Errno::ENOSYS);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        log::debug!("opendir {}", ino.0);
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        log::debug!("read {} {offset}+{size}", ino.0);
        let mut buf = vec![0u8; size as usize];
        match self.fs.read(ino.0, offset, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        log::debug!("readdir {} @{offset}", ino.0);
        let r = self.fs.readdir(ino.0, fh.0, offset, false, |e, _| {
            !reply.add(
                INodeNo(e.ino),
                e.offset,
                file_type(e.kind),
                OsStr::from_bytes(e.name),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        log::debug!("readdirplus {} @{offset}", ino.0);
        let r = self.fs.readdir(ino.0, fh.0, offset, true, |e, a| {
            let Some(a) = a else { return false };
            !reply.add(
                INodeNo(e.ino),
                e.offset,
                OsStr::from_bytes(e.name),
                &TTL,
                &file_attr(a),
                Generation(0),
            )
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if fh.0 != 0 {
            self.fs.releasedir(fh.0);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let (bytes, files) = self.fs.usage();
        reply.statfs(bytes.div_ceil(4096), 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        log::debug!("getxattr {} {:?}", ino.0, name);
        match self.fs.getxattr(ino.0, name.as_bytes()) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        log::debug!("listxattr {}", ino.0);
        match self.fs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, &v, size),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let data = match whence {
            libc::SEEK_DATA => true,
            libc::SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        if offset < 0 {
            return reply.error(Errno::ENXIO);
        }
        match self.fs.seek(ino.0, offset as u64, data) {
            Ok(o) => reply.offset(o as i64),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // default_permissions makes the kernel check modes; this only answers
        // callers that ask explicitly.
        reply.ok();
    }
}

/// Size probe (size 0), the value, or ERANGE when it does not fit.
fn reply_xattr(reply: ReplyXattr, v: &[u8], size: u32) {
    if size == 0 {
        reply.size(v.len() as u32);
    } else if v.len() <= size as usize {
        reply.data(v);
    } else {
        reply.error(Errno::ERANGE);
    }
}

fn negative() -> Attr {
    let t = crate::union::Timestamp { secs: 0, nsecs: 0 };
    Attr {
        ino: 0,
        kind: FileKind::Regular,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        size: 0,
        blocks: 0,
        rdev: 0,
        atime: t,
        mtime: t,
        ctime: t,
    }
}
