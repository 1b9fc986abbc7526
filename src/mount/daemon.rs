//! The mount daemon: checks the mountpoint, opens the image's layers (their
//! indexes only), mounts one FUSE filesystem for the whole union and serves
//! it until unmounted or signalled (SIGTERM, SIGINT, SIGHUP unmount cleanly).
//! Started in the background, it tells its parent through a pipe when the
//! mount is ready, or why it failed.

use super::MountError;
use super::control;
use super::filecache::FileCache;
use super::fuse::FuseFs;
use super::records::{self, MountRecord, is_mounted, mount_id};
use crate::container;
use crate::layer::SpanCache;
use crate::oci::time;
use crate::store::{Hold, Store};
use crate::union::{Stack, UnionFs, UpperDir};
use fuser::{Config, MountOption, Session, SessionACL};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct MountOptions {
    /// The image to mount (empty when mounting an existing container).
    pub image: String,
    /// Mount writable, as a new container (named `name`, or a generated name).
    pub writable: bool,
    pub name: Option<String>,
    /// Mount an existing container again.
    pub container: Option<String>,
    pub mountpoint: PathBuf,
    /// Honour setuid bits (`--suid`) and device nodes (`--dev`), for chroot use.
    pub suid: bool,
    pub dev: bool,
    /// Extra `-o` options passed to the kernel (e.g. `allow_other`, `ro`).
    pub options: Vec<String>,
    /// Bytes of decoded layer spans kept in memory.
    pub cache_bytes: usize,
    /// Disk bytes for decoded files passed through to the kernel (0: off).
    pub file_cache: u64,
    pub threads: usize,
    /// Served by a thread of a process that handles its own signals (`run`,
    /// `build`): no signal thread, and the caller unmounts when it is done.
    pub in_process: bool,
    /// Log every filesystem request (the daemon's log level becomes debug).
    pub debug: bool,
    /// Lazy images: do not fetch the rest of each layer behind the reads.
    pub no_prefetch: bool,
    /// Lazy images: the registry's transport, as the pull was given it
    /// (plain HTTP or unverified TLS; an extra CA certificate).
    pub insecure: bool,
    pub ca_cert: Option<PathBuf>,
}

/// The mountpoint, canonical, checked: a directory, empty, not mounted.
pub fn check_mountpoint(path: &Path) -> Result<PathBuf, MountError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => MountError::NoMountpoint(path.to_path_buf()),
        _ => MountError::io(path, e),
    })?;
    if !meta.is_dir() {
        return Err(MountError::NotADirectory(path.to_path_buf()));
    }
    let canon = path.canonicalize().map_err(|e| MountError::io(path, e))?;
    if is_mounted(&canon) {
        return Err(MountError::AlreadyMounted(canon));
    }
    let mut rd = std::fs::read_dir(&canon).map_err(|e| MountError::io(&canon, e))?;
    if rd.next().is_some() {
        return Err(MountError::NotEmpty(canon));
    }
    Ok(canon)
}

fn check_fuse() -> Result<(), MountError> {
    if !Path::new("/dev/fuse").exists() {
        return Err(MountError::NoFuse);
    }
    let root = nix::unistd::geteuid().is_root();
    // fusermount3 opens the device as the user too, so a device the user
    // cannot open stops a mount inside a namespace and outside alike.
    if (!root || crate::userns::in_user_namespace())
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    {
        return Err(MountError::FuseNotAccessible);
    }
    let has_fusermount = [
        "/usr/bin/fusermount3",
        "/bin/fusermount3",
        "/usr/local/bin/fusermount3",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    if !root && !has_fusermount {
        return Err(MountError::NoFusermount);
    }
    Ok(())
}

/// Mounts and serves until unmounted. `ready` is called once: with Ok when
/// the mount answers, or with the error that stopped it.
pub fn serve(
    store: &Store,
    opts: &MountOptions,
    ready: impl FnOnce(Result<(), &MountError>),
) -> Result<(), MountError> {
    let mut ready = Some(ready);
    let result = serve_inner(store, opts, &mut ready);
    if let (Err(e), Some(r)) = (&result, ready.take()) {
        r(Err(e));
    }
    result
}

fn serve_inner(
    store: &Store,
    opts: &MountOptions,
    ready: &mut Option<impl FnOnce(Result<(), &MountError>)>,
) -> Result<(), MountError> {
    if opts.debug && !opts.in_process {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let mountpoint = check_mountpoint(&opts.mountpoint)?;
    check_fuse()?;
    return_freed_memory();
    ignore_sigpipe();
    let cache = SpanCache::new(opts.cache_bytes);
    let (container, image_name, top, layers) = match &opts.container {
        Some(name) => {
            // The records know containers by name; `name` may be an ID.
            let c = container::load(store, name)?;
            if let Some((r, true)) = records::find_container(store, &c.name)? {
                return Err(MountError::ContainerMounted {
                    name: c.name.clone(),
                    at: r.mountpoint,
                });
            }
            let layers = c.image_manifest(store)?.layer_digests();
            let image = c.image.clone();
            let top = c.manifest;
            (Some((c, false)), image, top, layers)
        }
        None => {
            let image = store.resolve(&opts.image)?;
            let c = match opts.writable {
                true => Some((
                    container::create(
                        store,
                        opts.name.as_deref(),
                        &opts.image,
                        image.top.digest,
                        None,
                    )?,
                    true,
                )),
                false => None,
            };
            (
                c,
                opts.image.clone(),
                image.top.digest,
                image.layer_digests(),
            )
        }
    };
    // A container made for this mount goes again if the mount fails before it serves.
    let mut discard = Discard {
        store,
        new: container
            .as_ref()
            .filter(|(_, new)| *new)
            .map(|(c, _)| c.clone()),
    };
    let stack = Stack::open(store, &layers, Arc::clone(&cache))?;
    let upper = match &container {
        Some((c, _)) => {
            Some(UpperDir::open(&c.upper(), &c.work()).map_err(|e| MountError::io(&c.upper(), e))?)
        }
        None => None,
    };
    let fs = Arc::new(UnionFs::new(stack, upper));
    // Read-only mounts only (see `mount --file-cache`): a writable one's
    // files may be written while their cache file is passed through.
    let files = match opts.file_cache {
        0 => None,
        _ if container.is_some() => {
            log::warn!("the decoded-file cache serves read-only mounts only; off");
            None
        }
        limit => match store.own_dir_for("cache").and_then(|d| {
            FileCache::open(&d, limit).map_err(|e| crate::store::StoreError::io(&d, e))
        }) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                log::warn!("decoded-file cache unavailable ({e}); serving without it");
                None
            }
        },
    };
    if discard.new.is_some() {
        // A new container's root starts as the image's root.
        fs.adopt_lower_root()
            .map_err(|e| MountError::Daemon(format!("preparing the container: {e}")))?;
    }

    let record = MountRecord {
        id: mount_id(&mountpoint),
        mountpoint: mountpoint.clone(),
        image: image_name,
        manifest: top,
        pid: std::process::id(),
        writable: container.is_some(),
        container: container.as_ref().map(|(c, _)| c.name.clone()),
        started: time::now_rfc3339(),
        cache_mib: Some((opts.cache_bytes >> 20) as u64),
        file_cache_mib: Some(files.as_ref().map_or(0, |c| c.limit() >> 20)),
    };
    store.add_hold(&Hold {
        id: record.hold_id(),
        manifests: vec![top],
        what: format!("the mount at {}", mountpoint.display()),
        pid: Some(record.pid),
    })?;
    let cleanup = |store: &Store| {
        records::remove(store, &record.id);
        let _ = store.remove_hold(&record.hold_id());
    };
    records::write(store, &record).inspect_err(|_| cleanup(store))?;

    // Signals are taken by one thread; every other thread (the FUSE workers
    // included) inherits the blocked mask.
    let mut signals = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::SIGTERM,
        nix::sys::signal::SIGINT,
        nix::sys::signal::SIGHUP,
    ] {
        signals.add(s);
    }
    if !opts.in_process {
        let _ = signals.thread_block();
    }
    // After the mask: a thread started before it would take SIGTERM and die
    // with the process instead of unmounting.
    let _stats = super::stats::publish(store, &record.id, cache, trim_freed_memory)
        .inspect_err(|_| cleanup(store))?;

    let config = fuse_config(opts, container.is_some(), &record.image);
    let mut session = match Session::new(FuseFs::new(fs.clone(), files), &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            cleanup(store);
            return Err(MountError::io(&mountpoint, e));
        }
    };
    if !opts.in_process {
        let mut unmounter = session.unmount_callable();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(sig) = signals.wait() {
                    log::info!("{sig:?}: unmounting");
                    if let Err(e) = unmounter.unmount() {
                        log::error!("unmount failed: {e}");
                    }
                }
            })
            .map_err(|e| MountError::io(&mountpoint, e))?;
    }

    if let Some((c, _)) = &container {
        control::listen(&c.control_socket(), fs.clone())
            .map_err(|e| MountError::io(&c.control_socket(), e))?;
    }
    discard.new = None;
    if let Some(r) = ready.take() {
        r(Ok(()));
    }
    let prefetch = match opts.no_prefetch {
        false => Some(super::lazy::start_prefetch(fs.clone())),
        true => None,
    };
    let result = session.run();
    if let Some(stop) = prefetch {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if let Some((c, _)) = &container {
        let _ = std::fs::remove_file(c.control_socket());
    }
    cleanup(store);
    result.map_err(|e| MountError::io(&mountpoint, e))
}

/// Decoded spans (256 KiB to 2 MiB, or a prefix of one) come and go with
/// the cache: glibc would keep freed ones in its arenas (its mmap threshold
/// rises after such a free), so the daemon's memory would grow past the
/// cache's bound. A fixed threshold below the smallest span maps every span
/// and unmaps it when freed. And glibc gives each thread that allocates at
/// once an arena of its own (up to 8 per core), each keeping what was freed
/// in it: the FUSE, decode-ahead and check threads share two.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tuning; it is called before the
    // FUSE threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Called when reads pause: what the decoders and FUSE threads freed into
/// glibc's arenas goes back to the system, rather than staying counted in
/// the daemon's memory until the next reads reuse it. Once per pause, so it
/// costs nothing while reads go on.
fn trim_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A client that goes away (a commit's control connection, a closed log)
/// must give the daemon an error to handle, never kill it.
pub fn ignore_sigpipe() {
    // SAFETY: SIG_IGN for SIGPIPE only turns the signal into EPIPE errors.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Removes a container this mount created, unless the mount got as far as
/// serving it (then `new` is None).
struct Discard<'a> {
    store: &'a Store,
    new: Option<container::Container>,
}

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.new.take() {
            let _ = container::remove(self.store, &c);
        }
    }
}

fn fuse_config(opts: &MountOptions, writable: bool, name: &str) -> Config {
    let root = nix::unistd::geteuid().is_root();
    let read_only = !writable || opts.options.iter().any(|o| o == "ro");
    let mut mo = vec![
        MountOption::FSName(format!("layerfs:{name}")),
        // In the mount data, so the kernel lists the mount as fuse.layerfs,
        // the type `mount -t`, fstab lines and systemd units name (fuser's
        // Subtype reaches only fusermount).
        MountOption::CUSTOM("subtype=layerfs".into()),
        MountOption::DefaultPermissions,
        if read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
        if opts.suid {
            MountOption::Suid
        } else {
            MountOption::NoSuid
        },
        if opts.dev {
            MountOption::Dev
        } else {
            MountOption::NoDev
        },
    ];
    let mut allow_other = root;
    for o in &opts.options {
        match o.as_str() {
            "allow_other" => allow_other = true,
            "ro" | "rw" => {}
            // Mount flags, not FUSE options: the kernel refuses them as text.
            "exec" => mo.push(MountOption::Exec),
            "noexec" => mo.push(MountOption::NoExec),
            "atime" => mo.push(MountOption::Atime),
            "noatime" => mo.push(MountOption::NoAtime),
            "sync" => mo.push(MountOption::Sync),
            "async" => mo.push(MountOption::Async),
            "dirsync" => mo.push(MountOption::DirSync),
            other => mo.push(MountOption::CUSTOM(other.to_string())),
        }
    }
    let mut config = Config::default();
    config.mount_options = mo;
    config.acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// Mounts in the background: starts this same executable as the daemon
/// (`layerfs mount -f` with `opts` spelled out, its output to the mount's
/// log) and waits until it serves or fails. Returns the daemon's pid.
pub fn mount_background(store: &Store, opts: &MountOptions) -> Result<u32, MountError> {
    let exe =
        std::env::current_exe().map_err(|e| MountError::io(Path::new("/proc/self/exe"), e))?;
    let mp = &opts.mountpoint;
    let canon = mp.canonicalize().unwrap_or_else(|_| mp.clone());
    let log = records::dir(store)?.join(format!("{}.log", records::mount_id(&canon)));
    spawn_daemon(&exe, &daemon_args(store.root(), opts), &log)
}

/// The `layerfs` arguments that serve `opts` in the foreground from the
/// store at `root`.
pub fn daemon_args(root: &Path, opts: &MountOptions) -> Vec<String> {
    let mut args = vec![
        "--root".to_string(),
        root.display().to_string(),
        "mount".into(),
        "-f".into(),
    ];
    for (on, flag) in [
        (opts.debug, "--debug"),
        (opts.suid, "--suid"),
        (opts.dev, "--dev"),
        (opts.writable, "--writable"),
        (opts.no_prefetch, "--prefetch=none"),
        (opts.insecure, "--insecure"),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    if let Some(n) = &opts.name {
        args.extend(["--name".into(), n.clone()]);
    }
    if let Some(c) = &opts.container {
        args.extend(["--container".into(), c.clone()]);
    }
    if let Some(p) = &opts.ca_cert {
        args.extend(["--ca-cert".into(), p.display().to_string()]);
    }
    for o in &opts.options {
        args.extend(["-o".into(), o.clone()]);
    }
    args.extend([
        "--cache-size".into(),
        (opts.cache_bytes >> 20).to_string(),
        "--threads".into(),
        opts.threads.to_string(),
    ]);
    if opts.file_cache > 0 {
        args.extend(["--file-cache".into(), (opts.file_cache >> 20).to_string()]);
    }
    args.push("--".into());
    if !opts.image.is_empty() {
        args.push(opts.image.clone());
    }
    args.push(opts.mountpoint.display().to_string());
    args
}

/// The environment variable that gives a daemon its readiness pipe.
const READY_FD_ENV: &str = "LAYERFS_READY_FD";

/// Starts `exe args...` in its own process group with output to `log` and
/// its readiness pipe in `LAYERFS_READY_FD`, and waits until it reports the
/// mount ready or fails.
pub fn spawn_daemon(exe: &Path, args: &[String], log: &Path) -> Result<u32, MountError> {
    let (rd, wr) = nix::unistd::pipe().map_err(|e| MountError::io(exe, e.into()))?;
    // The child inherits a duplicate of the write end, without CLOEXEC.
    let wr_fd = {
        use std::os::fd::AsRawFd;
        let fd = nix::unistd::dup(&wr).map_err(|e| MountError::io(exe, e.into()))?;
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
        drop(wr);
        let raw = fd.as_raw_fd();
        (fd, raw)
    };
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| MountError::io(log, e))?;
    let log_err = log_file.try_clone().map_err(|e| MountError::io(log, e))?;
    let mut cmd = Command::new(exe);
    use std::os::unix::process::CommandExt;
    cmd.args(args)
        .env(READY_FD_ENV, wr_fd.1.to_string())
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| MountError::io(exe, e))?;
    drop(wr_fd);
    let mut msg = String::new();
    let _ = File::from(rd).read_to_string(&mut msg);
    match msg.trim() {
        "ok" => Ok(child.id()),
        "" => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            Err(MountError::Daemon(format!(
                "it exited ({status}); see {}",
                log.display()
            )))
        }
        m => {
            let _ = child.wait();
            Err(MountError::Daemon(
                m.strip_prefix("error: ").unwrap_or(m).to_string(),
            ))
        }
    }
}

/// Reports readiness on an inherited pipe descriptor (the daemon side).
pub fn report_ready(mut pipe: File, result: Result<(), &MountError>) {
    let _ = match result {
        Ok(()) => writeln!(pipe, "ok"),
        Err(e) => writeln!(pipe, "error: {e}"),
    };
}

/// The readiness pipe `spawn_daemon` passed to this process, if any. Only
/// an inherited pipe counts, so a stray `LAYERFS_READY_FD` in a user's
/// environment cannot make the daemon write into some other open file.
pub fn take_ready_pipe() -> Option<File> {
    use std::os::fd::{BorrowedFd, FromRawFd};
    let fd: i32 = std::env::var(READY_FD_ENV).ok()?.parse().ok()?;
    if fd < 3 {
        return None;
    }
    // SAFETY: the fd is only borrowed for fstat, which fails cleanly on a
    // closed descriptor.
    let st = nix::sys::stat::fstat(unsafe { BorrowedFd::borrow_raw(fd) }).ok()?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return None;
    }
    // SAFETY: the fd is an open pipe our parent handed over for this one use;
    // nothing else in this process knows it.
    let pipe = unsafe { File::from_raw_fd(fd) };
    // Programs this process starts must not hold the pipe open.
    let _ = nix::fcntl::fcntl(
        &pipe,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(pipe)
}

/// Unmounts `mountpoint` (the daemon then exits on its own), or clears a
/// mount whose daemon is dead; waits for the daemon to finish.
pub fn unmount(store: &Store, mountpoint: &Path, lazy: bool) -> Result<(), MountError> {
    let canon = mountpoint
        .canonicalize()
        .unwrap_or_else(|_| mountpoint.to_path_buf());
    let record = records::find(store, &canon)?;
    if !is_mounted(&canon) {
        if let Some(r) = record {
            records::remove(store, &r.id);
            return Ok(());
        }
        return Err(MountError::NotMounted(canon));
    }
    let flags = if lazy {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(&canon, flags) {
        Ok(()) => {}
        Err(nix::errno::Errno::EBUSY) => return Err(MountError::Busy(canon)),
        Err(nix::errno::Errno::EPERM) => {
            let status = Command::new("fusermount3").arg("-u").arg(&canon).status();
            if !status.is_ok_and(|s| s.success()) {
                return Err(MountError::io(
                    &canon,
                    std::io::Error::from_raw_os_error(libc::EPERM),
                ));
            }
        }
        Err(e) => return Err(MountError::io(&canon, e.into())),
    }
    if let Some(r) = record {
        // The daemon removes its record and hold when its session ends.
        for _ in 0..500 {
            if !crate::store::process_alive(r.pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        records::remove(store, &r.id);
        let _ = store.remove_hold(&r.hold_id());
    }
    Ok(())
}
