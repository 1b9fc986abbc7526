//! A container's default network: a namespace of its own, with outbound
//! access through user-mode networking as rootless Podman gives it:
//! slirp4netns (Debian package slirp4netns) attached to the container's
//! namespace as `tap0` (10.0.2.100, gateway 10.0.2.2, DNS 10.0.2.3); the
//! host's loopback stays out of reach. Without slirp4netns the container
//! has loopback only, and a note says so.

use super::RunError;
use super::process::sys;
use super::runtime::on_path;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

pub const DNS: &str = "10.0.2.3";

/// The helper, stopped when dropped; it also ends by itself when we die
/// (the write end of its exit pipe closes).
pub struct Net {
    child: Child,
    _exit: OwnedFd,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Gives the network namespace of process `pid` its outbound link; returns
/// once it is configured.
pub fn start(pid: i32) -> Result<Option<Net>, RunError> {
    let Some(slirp) = on_path("slirp4netns") else {
        eprintln!(
            "layerfs: slirp4netns is not installed (Debian package slirp4netns): \
             the container has loopback only"
        );
        return Ok(None);
    };
    // It opens /dev/net/tun as we are; some VMs ship it 0600 (Debian's is
    // 0666), which shuts out an ordinary user.
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        eprintln!(
            "layerfs: slirp4netns cannot open /dev/net/tun ({e}; it is 0666 on Debian, \
             `chmod 0666 /dev/net/tun` as root): the container has loopback only"
        );
        return Ok(None);
    }
    let (r, w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let (exit_r, exit_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    let wfd = w.as_raw_fd();
    let efd = exit_r.as_raw_fd();
    let mut cmd = Command::new(&slirp);
    cmd.args(["--configure", "--mtu=65520", "--disable-host-loopback"])
        .arg(format!("--ready-fd={wfd}"))
        .arg(format!("--exit-fd={efd}"))
        .arg(pid.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: between fork and exec the closure only makes fcntl calls.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [wfd, efd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| super::io(&slirp, e))?;
    drop(w);
    drop(exit_r);
    let net = Net {
        child,
        _exit: exit_w,
    };
    // It writes "1" when ready; end of file means it gave up.
    let mut buf = [0u8; 1];
    let mut f = std::fs::File::from(r);
    match f.read(&mut buf) {
        Ok(1) => Ok(Some(net)),
        _ => Err(RunError::Runtime(
            "slirp4netns did not configure the container's network".into(),
        )),
    }
}
