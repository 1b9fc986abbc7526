//! Durability as the upper filesystem gives it, checked after a simulated
//! power loss: the store sits on a small ext4 on a loop device, mounted
//! with a long commit interval so that nothing reaches its journal but what
//! an fsync forces there; the test then shuts the ext4 down without flushing
//! its log (FS_IOC_SHUTDOWN, EXT4_GOING_FLAGS_NOLOGFLUSH: what is not in the
//! journal by then is lost, as in a power cut), kills the daemon, mounts the
//! ext4 again (replaying the journal) and mounts the container again.
//!
//! What it proves: through a writable mount, (1) a lower file copied up,
//! appended to and fsynced keeps its whole content and its place, and (2)
//! the databases' pattern — write a temp file, fsync it, rename it over the
//! real one, fsync the directory — leaves the new content under the real
//! name. fsync of a directory is what makes (2) hold: when it returned
//! success without syncing, this test failed here with "version 1". The
//! control at the end (a file created after the last fsync is gone after
//! the crash) shows the setup does lose what no fsync covered. (1) would
//! hold on ext4 even without the sync of the directories a copy-up put the
//! file in, since ext4 commits its whole journal on any fsync; the daemon
//! syncs them anyway, for upper filesystems that do not.

use crate::support::{Env, Tar, can_mount, unmount_or_detach, wait_until};
use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// EXT4_IOC_SHUTDOWN (= FS_IOC_SHUTDOWN): _IOR('X', 125, __u32).
const FS_IOC_SHUTDOWN: libc::c_ulong = 0x8004_587d;
/// Shut down without writing the journal's pending transactions.
const EXT4_GOING_FLAGS_NOLOGFLUSH: u32 = 2;

/// An ext4 in a file, on a loop device, mounted on `path`; unmounted and
/// detached on drop.
struct Ext4Loop {
    path: PathBuf,
    image: PathBuf,
    device: String,
}

/// A new loop device over `image`.
fn attach(image: &Path) -> String {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(image)
        .output()
        .expect("losetup");
    assert!(out.status.success(), "losetup: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Ext4Loop {
    fn new(image: &Path, at: &Path) -> Ext4Loop {
        let f = fs::File::create(image).expect("image file");
        f.set_len(128 << 20).expect("size the image");
        run("mkfs.ext4", &["-q", "-F", image.to_str().expect("utf-8")]);
        fs::create_dir_all(at).expect("mountpoint");
        let e = Ext4Loop {
            path: at.to_path_buf(),
            image: image.to_path_buf(),
            device: attach(image),
        };
        e.mount();
        e
    }

    /// Unmounts, and mounts the image again through a new loop device: a
    /// mount namespace made meanwhile (another test's container) may still
    /// hold the shut-down filesystem, which the same device would give back.
    fn mount_again(&mut self) {
        unmount_fully(&self.path);
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
        self.device = attach(&self.image);
        self.mount();
    }

    /// A commit interval far longer than the test: only fsync commits.
    fn mount(&self) {
        let at = self.path.to_str().expect("utf-8");
        run(
            "mount",
            &["-t", "ext4", "-o", "commit=600", &self.device, at],
        );
    }

    /// Power loss: nothing more reaches the disk, the journal is not flushed.
    fn shut_down(&self) {
        let dir = fs::File::open(&self.path).expect("open the ext4 root");
        let flags = EXT4_GOING_FLAGS_NOLOGFLUSH;
        // SAFETY: the ioctl reads one u32 from a valid pointer on an open fd.
        let r = unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_SHUTDOWN, &flags) };
        assert_eq!(r, 0, "shutdown: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Ext4Loop {
    fn drop(&mut self) {
        unmount_or_detach(&self.path);
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Unmounts `p` (not lazily), waiting while it is busy.
fn unmount_fully(p: &Path) {
    use nix::mount::{MntFlags, umount2};
    wait_until(
        || match umount2(p, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => true,
            Err(_) => false,
        },
        "an unmount",
    );
}

fn write_synced(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).expect("create");
    f.write_all(data).expect("write");
    f.sync_all().expect("fsync");
}

#[test]
fn fsynced_changes_survive_a_power_loss() {
    const T: &str = "fsynced_changes_survive_a_power_loss";
    if !can_mount(T) {
        return;
    }
    let scratch = tempfile::Builder::new()
        .prefix("layerfs-ext4-")
        .tempdir_in("/var/tmp")
        .expect("scratch dir");
    let mut disk = Ext4Loop::new(
        &scratch.path().join("disk.img"),
        &scratch.path().join("ext4"),
    );
    let env = Env::within(&disk.path);
    let big = "lower line\n".repeat(20_000);
    let layer = Tar::new()
        .dir("db", 0o755)
        .file("db/data", 0o644, b"version 1\n")
        .file("db/log", 0o644, big.as_bytes())
        .finish();
    env.image("db:1", &[layer]);
    let m = env.mount_writable("db:1", "db");
    let pid = env.daemon_pid(&m.path);

    // (1) A copy-up, appended to, fsynced (this fsync also commits all the
    // setup above to the journal).
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(m.join("db/log"))
        .expect("open for append");
    log.write_all(b"appended\n").expect("append");
    log.sync_all().expect("fsync the copied-up file");
    drop(log);
    // (2) The databases' pattern, with fsync of the directory last.
    write_synced(&m.join("db/data.tmp"), b"version 2\n");
    fs::rename(m.join("db/data.tmp"), m.join("db/data")).expect("rename over");
    fs::File::open(m.join("db"))
        .expect("open the directory")
        .sync_all()
        .expect("fsync the directory");
    // The control: after the last fsync, so no fsync covers it.
    fs::write(m.join("db/unsynced"), b"lost\n").expect("write the control");

    disk.shut_down();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the daemon");
    wait_until(
        || !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon to exit",
    );
    // Really unmounted (never lazily): a detached FUSE mount would keep the
    // shut-down ext4 alive, and mounting the device again would give it back.
    unmount_fully(&m.path);
    disk.mount_again();

    let again = env.mount_container("db");
    assert_eq!(
        fs::read(again.join("db/data")).expect("db/data"),
        b"version 2\n",
        "the rename fsynced by its directory was lost"
    );
    assert!(
        !again.join("db/data.tmp").exists(),
        "the temp name came back"
    );
    assert_eq!(
        fs::read(again.join("db/log")).expect("db/log"),
        format!("{big}appended\n").as_bytes(),
        "the copied-up, fsynced file"
    );
    assert!(
        !again.join("db/unsynced").exists(),
        "the setup kept what no fsync covered: it proves nothing"
    );
    again.unmount();
}
