//! The FUSE adapter: the only code that knows fuser. Each callback asks the
//! union and turns its answer (or its error's errno) into a reply.
//!
//! A read-only mount answers `open` and `opendir` with ENOSYS once: the
//! kernel then opens files and directories without asking, keeps their pages
//! cached across opens (what FOPEN_KEEP_CACHE and FOPEN_CACHE_DIR give) and
//! saves a round trip per open; reads name the inode, which is all the union
//! needs. Layers never change, and a container changes only through this
//! mount, so entries, attributes and even misses (negative entries) are
//! cached for a long time.
//!
//! In a writable mount, files of the upper dir are handed to the kernel for
//! passthrough (Linux 6.9+) where it applies: reads and writes then never
//! reach the daemon. An inode is either passthrough or cached for all its
//! opens (the kernel refuses a mix), so a file still open from a lower layer
//! keeps later opens on the daemon path.
//!
//! With the decoded-file cache on (filecache.rs, `--file-cache`, read-only
//! mounts only; it costs a round trip per open), lower files that are
//! executed, opened again or read through are passed through too, from
//! their cache file.

use super::filecache::{self, FileCache};
use crate::union::{Attr, Caller, FileKind, SetAttr, SetTime, UnionError, UnionFs};
use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust entries and attributes: layers are immutable.
const TTL: Duration = Duration::from_secs(24 * 3600);
const READAHEAD: u32 = 1 << 20;
/// `__FMODE_EXEC`: the kernel's open of a program for execve.
const FMODE_EXEC: i32 = 0x20;

pub struct FuseFs {
    fs: Arc<UnionFs>,
    writable: bool,
    /// The kernel accepted FUSE_PASSTHROUGH.
    passthrough: AtomicBool,
    modes: Mutex<IoModes>,
    /// Decoded lower files handed to the kernel for passthrough.
    files: Option<Arc<FileCache>>,
    /// Handles of a read-only mount's opens (the union has none).
    next_fh: AtomicU64,
}

/// How an open is served.
enum IoMode {
    Through(Arc<BackingId>),
    Cached,
}

/// Per inode: its backing file (shared by all its passthrough opens: an
/// upper file, or in a read-only mount a cache file) and how many opens go
/// through the daemon;
/// per handle: its inode and mode.
#[derive(Default)]
struct IoModes {
    backing: HashMap<u64, (Arc<BackingId>, u32)>,
    cached: HashMap<u64, u32>,
    handles: HashMap<u64, (u64, bool)>,
}

impl FuseFs {
    pub fn new(fs: Arc<UnionFs>, files: Option<Arc<FileCache>>) -> Self {
        let writable = fs.is_writable();
        FuseFs {
            fs,
            writable,
            passthrough: AtomicBool::new(false),
            modes: Mutex::new(IoModes::default()),
            files,
            next_fh: AtomicU64::new(1),
        }
    }

    fn modes(&self) -> std::sync::MutexGuard<'_, IoModes> {
        self.modes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How to serve an open of `ino`: `upper` is its upper file, else the
    /// file is read from a lower layer (by `fh` in a writable mount).
    fn io_mode(
        &self,
        ino: u64,
        fh: u64,
        upper: Option<&std::fs::File>,
        flags: i32,
        open_backing: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> IoMode {
        if !self.passthrough.load(Ordering::Relaxed) {
            return IoMode::Cached;
        }
        if let Some(mode) = shared_mode(&mut self.modes(), ino, fh) {
            return mode;
        }
        let cached;
        let file = match upper {
            Some(f) => f,
            None => match self.cache_file(ino, fh, flags) {
                Some(f) => {
                    cached = f;
                    &cached
                }
                None => return IoMode::Cached,
            },
        };
        let mut m = self.modes();
        // Another open may have settled the inode's mode meanwhile.
        if let Some(mode) = shared_mode(&mut m, ino, fh) {
            return mode;
        }
        match open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                m.backing.insert(ino, (id.clone(), 1));
                m.handles.insert(fh, (ino, true));
                IoMode::Through(id)
            }
            Err(e) => {
                log::warn!("passthrough unavailable ({e}); serving reads and writes in the daemon");
                self.passthrough.store(false, Ordering::Relaxed);
                IoMode::Cached
            }
        }
    }

    /// The cache file of lower file `ino`, made now when this open is an
    /// exec or a repeated open; None leaves the file on the daemon's path.
    fn cache_file(&self, ino: u64, fh: u64, flags: i32) -> Option<std::fs::File> {
        let files = self.files.as_ref()?;
        let d = self.fs.lower_data(ino, self.union_fh(fh))?;
        if d.size < filecache::MIN_SIZE {
            return None;
        }
        let key = filecache::Key {
            diff_id_hex: d.diff_id_hex,
            data_offset: d.data_offset,
            size: d.size,
        };
        let again = files.note_open(ino);
        if let Some(f) = files.get(&key) {
            return Some(f);
        }
        if !again && flags & FMODE_EXEC == 0 {
            return None;
        }
        let ufh = self.union_fh(fh);
        files.fill(
            &key,
            |off, buf| {
                self.read_union(ino, ufh, off, buf)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
            },
            |off| {
                let start = self.seek_union(ino, ufh, off, true).ok()?;
                let end = self.seek_union(ino, ufh, start, false).ok()?;
                Some((start, end))
            },
        )
    }

    /// The union's handle for FUSE handle `fh` (a read-only mount's handles
    /// are this adapter's own).
    fn union_fh(&self, fh: u64) -> u64 {
        if self.writable { fh } else { 0 }
    }

    fn read_union(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> crate::union::Result<usize> {
        if fh != 0 {
            self.fs.read_fh(fh, offset, buf)
        } else {
            self.fs.read(ino, offset, buf)
        }
    }

    fn seek_union(&self, ino: u64, fh: u64, offset: u64, data: bool) -> crate::union::Result<u64> {
        if fh != 0 {
            self.fs.seek_fh(fh, offset, data)
        } else {
            self.fs.seek(ino, offset, data)
        }
    }

    /// Hands bytes just read from a lower file to the cache, which keeps
    /// them when a reader reads the whole file.
    fn tee(&self, ino: u64, fh: u64, offset: u64, data: &[u8]) {
        let Some(files) = &self.files else { return };
        if !self.passthrough.load(Ordering::Relaxed) {
            return;
        }
        let Some(d) = self.fs.lower_data(ino, fh) else {
            return;
        };
        if d.sparse {
            return;
        }
        let key = filecache::Key {
            diff_id_hex: d.diff_id_hex,
            data_offset: d.data_offset,
            size: d.size,
        };
        files.tee(ino, &key, offset, data);
    }

    /// Records an open served by the daemon (no passthrough for its inode
    /// while it lasts).
    fn note_cached(&self, ino: u64, fh: u64) {
        let mut m = self.modes();
        *m.cached.entry(ino).or_default() += 1;
        m.handles.insert(fh, (ino, false));
    }

    fn forget_handle(&self, fh: u64) {
        let mut m = self.modes();
        let Some((ino, through)) = m.handles.remove(&fh) else {
            return;
        };
        if through {
            if let Some((_, n)) = m.backing.get_mut(&ino) {
                *n -= 1;
                if *n == 0 {
                    m.backing.remove(&ino);
                }
            }
        } else if let Some(n) = m.cached.get_mut(&ino) {
            *n -= 1;
            if *n == 0 {
                m.cached.remove(&ino);
            }
        }
    }

    fn reply_entry(&self, r: crate::union::Result<Attr>, reply: ReplyEntry) {
        match r {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(a.generation)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn reply_empty(r: crate::union::Result<()>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// The mode other opens of `ino` already impose: cached while the
/// daemon serves one, else their backing file. (One kind of backing file
/// per mount: upper files in a writable one, cache files in a read-only one.)
fn shared_mode(m: &mut IoModes, ino: u64, fh: u64) -> Option<IoMode> {
    if m.cached.get(&ino).is_some_and(|&n| n > 0) {
        return Some(IoMode::Cached);
    }
    let (id, n) = m.backing.get_mut(&ino)?;
    *n += 1;
    let id = id.clone();
    m.handles.insert(fh, (ino, true));
    Some(IoMode::Through(id))
}

/// The ids of a daemon that is an ordinary user outside any user
/// namespace: the mount then maps that user to the container's root (0)
/// both ways, as a namespace mapping only the user would, so the user owns
/// what the container's root owns and what the user makes is root's, never
/// a host id. None for root and inside a namespace (the kernel maps there).
fn own_ids() -> Option<(u32, u32)> {
    static IDS: std::sync::OnceLock<Option<(u32, u32)>> = std::sync::OnceLock::new();
    *IDS.get_or_init(|| {
        let uid = nix::unistd::geteuid().as_raw();
        (uid != 0 && !crate::userns::in_user_namespace())
            .then(|| (uid, nix::unistd::getegid().as_raw()))
    })
}

/// A host id the kernel sent, as the container's id.
fn id_in(id: u32, own: Option<u32>) -> u32 {
    if Some(id) == own { 0 } else { id }
}

/// A container's id, as the host sees it.
fn id_out(id: u32, own: Option<u32>) -> u32 {
    match own {
        Some(me) if id == 0 => me,
        _ => id,
    }
}

fn caller(req: &Request) -> Caller {
    let own = own_ids();
    Caller {
        uid: id_in(req.uid(), own.map(|o| o.0)),
        gid: id_in(req.gid(), own.map(|o| o.1)),
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(st) => match st.duration_since(UNIX_EPOCH) {
            Ok(d) => SetTime::At(d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos());
                if n == 0 {
                    SetTime::At(-s, 0)
                } else {
                    SetTime::At(-s - 1, 1_000_000_000 - n)
                }
            }
        },
    })
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
        uid: id_out(a.uid, own_ids().map(|o| o.0)),
        gid: id_out(a.gid, own_ids().map(|o| o.1)),
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
        ] {
            let _ = config.add_capabilities(flag);
        }
        // Upper and cache files live on a plain filesystem: stacking depth
        // 1 lets them back passthrough opens (and lets overlayfs stack on
        // us). Backing files need CAP_SYS_ADMIN of the host: a rootless
        // mount is served by the daemon, without a warning per mount.
        // A read-only mount answers opens only to pass cache files through.
        if self.writable {
            // The kernel then leaves dropping setuid bits to us (see
            // `setattr`) and stops asking for security.capability before
            // every write of a file that has none.
            let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        }
        let host_root = nix::unistd::geteuid().is_root() && !crate::userns::in_user_namespace();
        let want = self.writable || self.files.is_some();
        let ok = want
            && host_root
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.store(ok, Ordering::Relaxed);
        if !ok && self.files.take().is_some() {
            log::info!("no passthrough here: the decoded-file cache is off");
        }
        if !self.writable {
            if !ok {
                let _ = config.add_capabilities(InitFlags::FUSE_NO_OPEN_SUPPORT);
            }
            let _ = config.add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT);
        }
        let _ = config.set_max_readahead(READAHEAD);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        log::debug!("lookup {} {:?}", parent.0, name);
        match self.fs.lookup(parent.0, name.as_bytes()) {
            Ok(a) => reply.entry(&TTL, &file_attr(&a), Generation(a.generation)),
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
        if !self.writable {
            if !self.passthrough.load(Ordering::Relaxed) {
                return reply.error(Errno::ENOSYS);
            }
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            return match self.io_mode(ino.0, fh, None, flags.0, |f| reply.open_backing(f)) {
                IoMode::Through(id) => {
                    reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
                }
                IoMode::Cached => {
                    self.note_cached(ino.0, fh);
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
                }
            };
        }
        match self.fs.open(ino.0, flags.0) {
            Ok(opened) => {
                let upper = opened.upper();
                match self.io_mode(ino.0, opened.fh, upper, flags.0, |f| reply.open_backing(f)) {
                    IoMode::Through(id) => {
                        reply.opened_passthrough(FileHandle(opened.fh), FopenFlags::empty(), &id)
                    }
                    IoMode::Cached => {
                        self.note_cached(ino.0, opened.fh);
                        // Layer data never changes: keep its pages between opens.
                        let keep = if upper.is_none() {
                            FopenFlags::FOPEN_KEEP_CACHE
                        } else {
                            FopenFlags::empty()
                        };
                        reply.opened(FileHandle(opened.fh), keep)
                    }
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        log::debug!("create {} {:?} {mode:o}", parent.0, name);
        match self.fs.create(parent.0, name.as_bytes(), mode, caller(req)) {
            Ok((attr, opened)) => {
                let fa = file_attr(&attr);
                let upper = opened.upper();
                match self.io_mode(attr.ino, opened.fh, upper, 0, |f| reply.open_backing(f)) {
                    IoMode::Through(id) => reply.created_passthrough(
                        &TTL,
                        &fa,
                        Generation(attr.generation),
                        FileHandle(opened.fh),
                        FopenFlags::empty(),
                        &id,
                    ),
                    IoMode::Cached => {
                        self.note_cached(attr.ino, opened.fh);
                        reply.created(
                            &TTL,
                            &fa,
                            Generation(attr.generation),
                            FileHandle(opened.fh),
                            FopenFlags::empty(),
                        )
                    }
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.forget_handle(fh.0);
        if self.writable {
            self.fs.release(fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        log::debug!("opendir {}", ino.0);
        if !self.writable {
            return reply.error(Errno::ENOSYS);
        }
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // Set by the kernel (FUSE_HANDLE_KILLPRIV_V2) when an unprivileged
        // caller writes to a setuid or setgid file.
        if write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            let kill = SetAttr {
                kill_suidgid: true,
                ..SetAttr::default()
            };
            if let Err(e) = self.fs.setattr(ino.0, kill) {
                return reply.error(errno(&e));
            }
        }
        match self.fs.write_fh(fh.0, offset, data) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here (writes reach the upper file at once), and
        // ENOSYS makes the kernel stop sending a flush on every close(2),
        // which otherwise costs each close a round trip.
        reply.error(Errno::ENOSYS);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.fs.fsync(ino.0, fh.0, datasync), reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.fs.fsyncdir(ino.0), reply);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(self.fs.fallocate(fh.0, offset, length, mode), reply);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        log::debug!(
            "setattr {} mode {mode:?} uid {uid:?} gid {gid:?} size {size:?}",
            ino.0
        );
        let own = own_ids();
        // Under FUSE_HANDLE_KILLPRIV_V2 the kernel sends no mode to drop
        // setuid bits with: a chown drops them always, a truncate when the
        // caller is not privileged, and a request that changes nothing is
        // the kernel asking for just that (chown(f, -1, -1), or a write
        // passed through to the upper file by an unprivileged caller).
        let nothing = [mode, uid, gid].iter().all(Option::is_none)
            && size.is_none()
            && atime.is_none()
            && mtime.is_none();
        let kill_suidgid =
            uid.is_some() || gid.is_some() || (size.is_some() && caller(req).uid != 0) || nothing;
        let a = SetAttr {
            mode,
            uid: uid.map(|u| id_in(u, own.map(|o| o.0))),
            gid: gid.map(|g| id_in(g, own.map(|o| o.1))),
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
            kill_suidgid,
        };
        match self.fs.setattr(ino.0, a) {
            Ok(a) => reply.attr(&TTL, &file_attr(&a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        log::debug!("mknod {} {:?} {mode:o}", parent.0, name);
        self.reply_entry(
            self.fs
                .mknod(parent.0, name.as_bytes(), mode, rdev as u64, caller(req)),
            reply,
        );
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        log::debug!("mkdir {} {:?} {mode:o}", parent.0, name);
        self.reply_entry(
            self.fs.mkdir(parent.0, name.as_bytes(), mode, caller(req)),
            reply,
        );
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        log::debug!("symlink {} {:?} -> {:?}", parent.0, link_name, target);
        let r = self.fs.symlink(
            parent.0,
            link_name.as_bytes(),
            target.as_os_str().as_bytes(),
            caller(req),
        );
        self.reply_entry(r, reply);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        log::debug!("link {} -> {} {:?}", ino.0, newparent.0, newname);
        self.reply_entry(self.fs.link(ino.0, newparent.0, newname.as_bytes()), reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        log::debug!("unlink {} {:?}", parent.0, name);
        Self::reply_empty(self.fs.unlink(parent.0, name.as_bytes()), reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        log::debug!("rmdir {} {:?}", parent.0, name);
        Self::reply_empty(self.fs.rmdir(parent.0, name.as_bytes()), reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        log::debug!(
            "rename {} {:?} -> {} {:?}",
            parent.0,
            name,
            newparent.0,
            newname
        );
        let r = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            flags.bits(),
        );
        Self::reply_empty(r, reply);
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        Self::reply_empty(
            self.fs.setxattr(ino.0, name.as_bytes(), value, flags),
            reply,
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        Self::reply_empty(self.fs.removexattr(ino.0, name.as_bytes()), reply);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        log::debug!("read {} {offset}+{size}", ino.0);
        // One buffer per FUSE thread, reused: a fresh one per request keeps
        // the allocator's arenas growing.
        thread_local!(static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) });
        BUF.with_borrow_mut(|buf| {
            buf.resize(size as usize, 0);
            let fh = self.union_fh(fh.0);
            match self.read_union(ino.0, fh, offset, buf) {
                Ok(n) => {
                    // Before the reply: the reader's next open finds the file.
                    self.tee(ino.0, fh, offset, &buf[..n]);
                    reply.data(&buf[..n]);
                }
                Err(e) => reply.error(errno(&e)),
            }
        })
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
                Generation(a.generation),
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
        if self.writable {
            return match self.fs.upper_statfs() {
                Ok(s) => reply.statfs(
                    s.blocks(),
                    s.blocks_free(),
                    s.blocks_available(),
                    s.files(),
                    s.files_free(),
                    s.block_size() as u32,
                    255,
                    s.fragment_size() as u32,
                ),
                Err(e) => reply.error(errno(&e)),
            };
        }
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
        fh: FileHandle,
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
        match self.seek_union(ino.0, self.union_fh(fh.0), offset as u64, data) {
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
        generation: 0,
    }
}
