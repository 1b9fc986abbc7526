//! Waiting for a container's init, as its monitor: this process is made a
//! child subreaper, so the init the runtime created becomes our child when
//! `runtime create` exits; we learn of its exit through a pidfd and take
//! its status with waitpid. The signals a run forwards (SIGHUP, SIGINT,
//! SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2), sent to us by `kill` or by the
//! terminal, are passed on to the init, which lives in a session of its own
//! and so hears nothing from our terminal otherwise. SIGWINCH resizes the
//! terminal of a `run -t`.

use super::RunError;
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};

/// Signals a run passes on to its command (as the user namespace's parent
/// passes them on to a rootless run).
pub use crate::userns::FORWARDED;

pub fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s
}

pub(super) fn sys(what: &str) -> impl FnOnce(Errno) -> RunError + '_ {
    move |e| RunError::Sys {
        what: what.to_string(),
        errno: e,
    }
}

/// Orphans of our children (a runtime's container init) become ours.
pub fn become_subreaper() -> Result<(), RunError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(sys("prctl(PR_SET_CHILD_SUBREAPER)"))
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

/// The forwarded signals and SIGWINCH (a terminal's new size), which
/// `run` holds while a command runs.
fn held() -> SigSet {
    let mut s = forwarded();
    s.add(Signal::SIGWINCH);
    s
}

/// Waits for `child` (ours by now), passing on the signals sent to us
/// meanwhile and calling `resized` on SIGWINCH; returns its exit code.
pub fn wait_forwarding(child: Pid, resized: &dyn Fn()) -> Result<i32, RunError> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let pidfd = pidfd_open(child)?;
    let sfd = SignalFd::with_flags(&held(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(sys("signalfd"))?;
    loop {
        let mut fds = [
            PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(sys("poll")(e)),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            while let Ok(Some(si)) = sfd.read_signal() {
                match Signal::try_from(si.ssi_signo as i32) {
                    Ok(Signal::SIGWINCH) => resized(),
                    Ok(sig) => {
                        let _ = nix::sys::signal::kill(child, sig);
                    }
                    Err(_) => {}
                }
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            break;
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

/// Blocks the forwarded signals and SIGWINCH in the calling thread; returns
/// the mask to restore. Threads started afterwards inherit it.
pub fn block_forwarded() -> Result<SigSet, RunError> {
    held()
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(sys("sigprocmask"))
}
