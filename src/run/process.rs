//! The container's processes. The caller (`P`, which also serves the FUSE
//! mount from its threads) forks the container's init (`I`) into a new PID
//! namespace; `I` enters private mount, UTS and IPC namespaces, prepares the
//! root (the steps of `rootfs::plan`), pivots into it, closes every
//! descriptor it inherited, drops the capabilities Docker drops, and forks
//! the command (`W`, pid 2), which takes its user, umask, working directory
//! and default signal handling and execs. `I` stays as pid 1 the way
//! `docker run --init` does: it reaps orphans, forwards to `W` the signals
//! that were sent to it (those a terminal sends reach `W` directly: all
//! three share the caller's process group), and exits with `W`'s status
//! (128+N when killed by signal N); its death takes every process of the
//! namespace, and with them the namespace's mounts. `I` dies with `P`
//! (PR_SET_PDEATHSIG), so a killed `run` leaves nothing running or mounted.
//!
//! `P` forwards SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 sent
//! to it (by `kill`, not by the terminal) to `I`, and learns of `I`'s exit
//! through a pidfd. Failures before the command runs come back over a pipe
//! that closes on exec.
//!
//! After `fork` the child runs in a copy of a multi-threaded process: it
//! uses only syscalls and the allocator (which glibc's fork keeps usable),
//! never stdio or locks another thread may hold, and ends in exec or _exit.

use super::RunError;
use super::rootfs::Op;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// Everything the child needs, computed before the fork.
pub struct Plan {
    pub root: CString,
    pub ops: Vec<Op>,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub workdir: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    /// The PATH directories a command without `/` is looked up in.
    pub search: Vec<CString>,
    /// Give the command /dev/null as stdin (a build step) instead of ours.
    pub stdin_null: bool,
}

/// Signals a run passes on to its command.
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

pub fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s
}

/// Docker's default capabilities: CHOWN, DAC_OVERRIDE, FOWNER, FSETID,
/// KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT,
/// MKNOD, AUDIT_WRITE, SETFCAP. Everything else leaves the bounding set.
const KEPT_CAPS: [u32; 14] = [0, 1, 3, 4, 5, 6, 7, 8, 10, 13, 18, 27, 29, 31];

/// What the child reports before exec: a setup failure, or why the
/// command could not start (with the exit code Docker gives for it).
const SETUP_FAILED: u8 = b'S';
const EXEC_FAILED: u8 = b'E';
const SETUP_EXIT: i32 = 125;

fn sys(what: &str) -> impl FnOnce(Errno) -> RunError + '_ {
    move |e| RunError::Sys {
        what: what.to_string(),
        errno: e,
    }
}

/// Forks the container, waits for it while forwarding signals, and returns
/// its exit code. The caller must have `FORWARDED` blocked in this thread
/// (and, for forwarding to work, in every thread of the process).
pub fn spawn_and_wait(plan: &Plan) -> Result<i32, RunError> {
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // The child watches this pipe's write end, held by us only, to notice
    // if we died before its PR_SET_PDEATHSIG took hold.
    let (alive_r, alive_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let null = match plan.stdin_null {
        true => Some(
            nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(sys("open /dev/null"))?,
        ),
        false => None,
    };
    let own_pidns = nix::fcntl::open(
        "/proc/thread-self/ns/pid",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open /proc/thread-self/ns/pid"))?;
    // Only this thread's children go to the new PID namespace, and only
    // until the setns below: other threads keep spawning threads as before.
    nix::sched::unshare(CloneFlags::CLONE_NEWPID).map_err(sys("unshare(CLONE_NEWPID)"))?;
    // SAFETY: the child runs `init`, which keeps to syscalls and the
    // allocator and ends in _exit or exec (see the module comment).
    let forked = unsafe { nix::unistd::fork() };
    let (child, restored) = match forked {
        Ok(ForkResult::Child) => {
            drop(alive_w);
            drop(err_r);
            init(plan, err_w, alive_r, null)
        }
        Ok(ForkResult::Parent { child }) => (
            child,
            nix::sched::setns(&own_pidns, CloneFlags::CLONE_NEWPID),
        ),
        Err(e) => {
            let _ = nix::sched::setns(&own_pidns, CloneFlags::CLONE_NEWPID);
            return Err(sys("fork")(e));
        }
    };
    drop(err_w);
    drop(alive_r);
    drop(null);
    let status = wait_forwarding(child);
    drop(alive_w);
    // Without it this thread could start no more threads; the run itself is done.
    restored.map_err(sys("setns back to our PID namespace"))?;
    let mut msg = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(&err_r, &mut buf) {
            Ok(0) => break,
            Ok(n) => msg.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    let code = status?;
    match msg.split_first() {
        Some((&SETUP_FAILED, text)) => Err(RunError::Setup(lossy(text))),
        Some((&EXEC_FAILED, text)) => {
            let text = lossy(text);
            let (code, why) = text.split_once(' ').unwrap_or(("126", &text));
            Err(RunError::Exec {
                why: why.to_string(),
                code: code.parse().unwrap_or(126),
            })
        }
        _ => Ok(code),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim_end().to_string()
}

/// 128+N for a death by signal N, as shells report it.
fn exit_code(s: WaitStatus) -> Option<i32> {
    match s {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, RunError> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(sys("pidfd_open")(Errno::last()));
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits for `child`, passing on the signals sent to us meanwhile.
fn wait_forwarding(child: Pid) -> Result<i32, RunError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let pidfd = pidfd_open(child);
    let sfd = SignalFd::with_flags(&forwarded(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC);
    if let (Ok(pidfd), Ok(sfd)) = (&pidfd, &sfd) {
        loop {
            let mut fds = [
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => break,
            }
            let signalled = fds[0].revents().is_some_and(|r| !r.is_empty());
            let exited = fds[1].revents().is_some_and(|r| !r.is_empty());
            if signalled {
                while let Ok(Some(si)) = sfd.read_signal() {
                    // A terminal's signal reached the whole process group already.
                    if si.ssi_code != libc::SI_KERNEL
                        && let Ok(sig) = Signal::try_from(si.ssi_signo as i32)
                    {
                        let _ = nix::sys::signal::kill(child, sig);
                    }
                }
            }
            if exited {
                break;
            }
        }
    }
    loop {
        match waitpid(child, None) {
            Ok(s) => {
                if let Some(code) = exit_code(s) {
                    return Ok(code);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("waitpid")(e)),
        }
    }
}

/// Reports a failure to the parent and ends the child.
fn fail(err: &OwnedFd, kind: u8, code: i32, msg: &str) -> ! {
    let mut m = vec![kind];
    if kind == EXEC_FAILED {
        m.extend_from_slice(format!("{code} ").as_bytes());
    }
    m.extend_from_slice(msg.as_bytes());
    let _ = nix::unistd::write(err, &m);
    // SAFETY: _exit ends the process without running our parent's atexit
    // handlers or flushing its stdio buffers, which this copy must not touch.
    unsafe { libc::_exit(code) }
}

fn setup_fail(err: &OwnedFd, what: &str, e: Errno) -> ! {
    fail(
        err,
        SETUP_FAILED,
        SETUP_EXIT,
        &format!("{what}: {}", e.desc()),
    )
}

/// The container's pid 1.
fn init(plan: &Plan, err: OwnedFd, alive: OwnedFd, null: Option<OwnedFd>) -> ! {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        setup_fail(&err, "prctl(PR_SET_PDEATHSIG)", e);
    }
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0) {
        // The parent is already gone.
        // SAFETY: as in `fail`.
        unsafe { libc::_exit(SETUP_EXIT) }
    }
    drop(alive);
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    if let Err(e) = nix::sched::unshare(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
    ) {
        setup_fail(&err, "unshare(mount, UTS, IPC namespaces)", e);
    }
    // Nothing mounted from here on may reach another namespace.
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        setup_fail(&err, "making the mounts private", e);
    }
    for op in &plan.ops {
        if let Err(e) = apply(op) {
            setup_fail(&err, &op.describe(), e);
        }
    }
    if let Err((what, e)) = enter_root(&plan.root) {
        setup_fail(&err, what, e);
    }
    if let Err(e) = nix::unistd::sethostname(&plan.hostname) {
        setup_fail(&err, "sethostname", e);
    }
    if let Some(null) = null {
        if let Err(e) = nix::unistd::dup2_stdin(&null) {
            setup_fail(&err, "dup2 /dev/null", e);
        }
        drop(null);
    }
    // Nothing of the host stays open in the container but stdio and the
    // error pipe (which closes on exec).
    let keep = err.as_raw_fd() as u32;
    // SAFETY: close_range closes descriptors only; nothing in this process
    // uses those we close (the parent's threads do not exist here).
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, u32::MAX, 0);
    }
    let _ = nix::sys::prctl::set_name(c"layerfs-init");
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        setup_fail(&err, "prctl(PR_SET_DUMPABLE)", e);
    }
    if let Err(e) = drop_capabilities() {
        setup_fail(&err, "dropping capabilities", e);
    }
    let mut mask = forwarded();
    mask.add(Signal::SIGCHLD);
    if let Err(e) = mask.thread_block() {
        setup_fail(&err, "sigprocmask", e);
    }
    let sfd = match SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC) {
        Ok(s) => s,
        Err(e) => setup_fail(&err, "signalfd", e),
    };
    // SAFETY: the same single-threaded process forks again; the command's
    // side only makes syscalls before exec.
    let w = match unsafe { nix::unistd::fork() } {
        Ok(ForkResult::Child) => {
            drop(sfd);
            command(plan, &err)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => setup_fail(&err, "fork", e),
    };
    loop {
        let si = match sfd.read_signal() {
            Ok(Some(si)) => si,
            Ok(None) | Err(Errno::EINTR) => continue,
            // SAFETY: as in `fail`.
            Err(_) => unsafe { libc::_exit(SETUP_EXIT) },
        };
        if si.ssi_signo as i32 == libc::SIGCHLD {
            loop {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(s) if s.pid() == Some(w) => {
                        if let Some(code) = exit_code(s) {
                            // SAFETY: as in `fail`.
                            unsafe { libc::_exit(code) }
                        }
                    }
                    Ok(_) => {}
                }
            }
        } else if si.ssi_code != libc::SI_KERNEL
            && let Ok(sig) = Signal::try_from(si.ssi_signo as i32)
        {
            let _ = nix::sys::signal::kill(w, sig);
        }
    }
}

fn apply(op: &Op) -> Result<(), Errno> {
    use nix::sys::stat::Mode;
    let skip = |optional: bool, r: Result<(), Errno>| match r {
        Err(Errno::ENOENT) if optional => Ok(()),
        other => other,
    };
    match op {
        Op::Mount {
            src,
            target,
            fstype,
            flags,
            data,
            optional,
        } => skip(
            *optional,
            nix::mount::mount(
                src.as_deref(),
                target.as_c_str(),
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
        ),
        Op::Remount {
            target,
            flags,
            optional,
        } => skip(
            *optional,
            nix::mount::mount(
                None::<&CStr>,
                target.as_c_str(),
                None::<&CStr>,
                *flags,
                None::<&CStr>,
            ),
        ),
        Op::Mkdir { path, mode } => {
            nix::unistd::mkdir(path.as_c_str(), Mode::from_bits_truncate(*mode))?;
            // mkdir leaves out the sticky bit on some filesystems.
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                path.as_c_str(),
                Mode::from_bits_truncate(*mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
        }
        Op::Touch { path, mode } => nix::fcntl::open(
            path.as_c_str(),
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(*mode),
        )
        .map(drop),
        Op::Symlink { target, path } => {
            nix::unistd::symlinkat(target.as_c_str(), nix::fcntl::AT_FDCWD, path.as_c_str())
        }
    }
}

/// pivot_root into `root` and detach the old root, so no path leads back to
/// the host; where pivot_root cannot work (a root on the initramfs), move
/// the mount over / and chroot, as runc does.
fn enter_root(root: &CStr) -> Result<(), (&'static str, Errno)> {
    nix::unistd::chdir(root).map_err(|e| ("chdir to the root", e))?;
    match nix::unistd::pivot_root(".", ".") {
        Ok(()) => {
            nix::mount::umount2(".", MntFlags::MNT_DETACH)
                .map_err(|e| ("detaching the old root", e))?;
        }
        Err(Errno::EINVAL) => {
            nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
                .map_err(|e| ("moving the root", e))?;
            nix::unistd::chroot(".").map_err(|e| ("chroot", e))?;
        }
        Err(e) => return Err(("pivot_root", e)),
    }
    nix::unistd::chdir("/").map_err(|e| ("chdir /", e))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// Drops every capability outside `KEPT_CAPS` from the bounding and
/// inheritable sets (and clears the ambient set), so that what the command
/// execs as root gets no more than Docker's default set.
fn drop_capabilities() -> Result<(), Errno> {
    let mut kept: u64 = 0;
    for c in KEPT_CAPS {
        kept |= 1 << c;
    }
    for cap in 0..64u32 {
        if kept & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r < 0 {
            match Errno::last() {
                // Past the last capability this kernel knows.
                Errno::EINVAL => break,
                e => return Err(e),
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two CapData (the v3 layout) for this process.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } < 0 {
        return Err(Errno::last());
    }
    data[0].inheritable &= kept as u32;
    data[1].inheritable &= (kept >> 32) as u32;
    // SAFETY: capset reads the header and two CapData we own.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

/// The command's process: who it runs as, where, and exec.
fn command(plan: &Plan, err: &OwnedFd) -> ! {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, sigaction};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing SIG_DFL runs no code of ours in a handler.
            let _ = unsafe { sigaction(sig, &dfl) };
        }
    }
    let _ = SigSet::empty().thread_set_mask();
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let groups: Vec<Gid> = plan.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = nix::unistd::setgroups(&groups) {
        setup_fail(err, "setgroups", e);
    }
    let (uid, gid) = (Uid::from_raw(plan.uid), Gid::from_raw(plan.gid));
    if let Err(e) = nix::unistd::setresgid(gid, gid, gid) {
        setup_fail(err, "setgid", e);
    }
    if let Err(e) = nix::unistd::setresuid(uid, uid, uid) {
        setup_fail(err, "setuid", e);
    }
    if let Err(e) = nix::unistd::chdir(plan.workdir.as_c_str()) {
        fail(
            err,
            EXEC_FAILED,
            126,
            &format!(
                "cannot enter the working directory {}: {}",
                plan.workdir.to_string_lossy(),
                e.desc()
            ),
        );
    }
    let Some(arg0) = plan.argv.first() else {
        fail(err, EXEC_FAILED, 127, "no command");
    };
    let name = arg0.to_string_lossy().into_owned();
    let e = if arg0.as_bytes().contains(&b'/') {
        nix::unistd::execve(arg0, &plan.argv, &plan.env).unwrap_err()
    } else {
        // As execvp: the first hit wins; EACCES is remembered over ENOENT.
        let mut seen = Errno::ENOENT;
        for dir in &plan.search {
            let mut p = dir.as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(arg0.as_bytes());
            let Ok(p) = CString::new(p) else { continue };
            match nix::unistd::execve(&p, &plan.argv, &plan.env).unwrap_err() {
                Errno::ENOENT | Errno::ENOTDIR => {}
                Errno::EACCES => seen = Errno::EACCES,
                other => {
                    seen = other;
                    break;
                }
            }
        }
        seen
    };
    match e {
        Errno::ENOENT if !name.contains('/') => fail(
            err,
            EXEC_FAILED,
            127,
            &format!("{name:?}: executable file not found in $PATH"),
        ),
        Errno::ENOENT => fail(
            err,
            EXEC_FAILED,
            127,
            &format!("{name:?}: no such file or directory"),
        ),
        e => fail(err, EXEC_FAILED, 126, &format!("{name:?}: {}", e.desc())),
    }
}

/// Blocks the forwarded signals in the calling thread; returns the mask to
/// restore. Threads started afterwards inherit it.
pub fn block_forwarded() -> Result<SigSet, RunError> {
    forwarded()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(sys("sigprocmask"))
}
