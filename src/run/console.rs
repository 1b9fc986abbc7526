//! `run -t`: the container's terminal. The runtime makes a pty inside the
//! container and sends its master end over a unix socket (`--console-socket`);
//! we copy our stdin to it and it to our stdout, with our own terminal (if
//! stdin is one) in raw mode meanwhile and its size given to the pty.

use super::{RunError, io};
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use nix::sys::termios::{self, SetArg, Termios};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// The socket the runtime connects to, waiting in a thread for the master.
pub struct Socket {
    pub path: PathBuf,
    thread: JoinHandle<Result<OwnedFd, String>>,
}

impl Socket {
    pub fn listen(dir: &Path) -> Result<Socket, RunError> {
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).map_err(|e| io(&path, e))?;
        let thread = std::thread::spawn(move || receive(&listener));
        Ok(Socket { path, thread })
    }

    /// The master end, once the runtime has sent it.
    pub fn master(self) -> Result<OwnedFd, RunError> {
        match self.thread.join() {
            Ok(Ok(fd)) => Ok(fd),
            Ok(Err(why)) => Err(RunError::Runtime(format!(
                "the container's terminal: {why}"
            ))),
            Err(_) => Err(RunError::Runtime(
                "the container's terminal: the thread panicked".into(),
            )),
        }
    }
}

fn receive(listener: &UnixListener) -> Result<OwnedFd, String> {
    let (stream, _) = listener.accept().map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| e.to_string())?;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err("the runtime sent no descriptor".into())
}

/// Our terminal in raw mode while this lives.
pub struct Raw(Option<Termios>);

impl Raw {
    pub fn enter() -> Raw {
        let stdin = std::io::stdin();
        let Ok(old) = termios::tcgetattr(stdin.as_fd()) else {
            return Raw(None);
        };
        let mut raw = old.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        Raw(Some(old))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        if let Some(old) = &self.0 {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, old);
        }
    }
}

/// Gives the pty our terminal's size, if we have one.
pub fn copy_size(master: &OwnedFd) {
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ and TIOCSWINSZ read and write one winsize, which we own.
    unsafe {
        if libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

/// Copies stdin to the master and the master to stdout; the returned
/// thread ends when the container's side is closed (all of its output
/// copied). With `interactive`, our stdin goes to the container (its end
/// as ^D); the stdin side ends with our stdin.
pub fn attach(master: OwnedFd, interactive: bool) -> Result<JoinHandle<()>, RunError> {
    if interactive {
        let mut to = std::fs::File::from(master.try_clone().map_err(|e| io(Path::new("pty"), e))?);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut stdin = std::io::stdin();
            while let Ok(n) = stdin.read(&mut buf) {
                if n == 0 {
                    // The end of our input, as a terminal says it: ^D.
                    let _ = to.write_all(b"\x04");
                    break;
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from = std::fs::File::from(master);
    Ok(std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut out = std::io::stdout();
        // EIO once the last process with the pty open is gone.
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).is_err() {
                break;
            }
            let _ = out.flush();
        }
    }))
}
