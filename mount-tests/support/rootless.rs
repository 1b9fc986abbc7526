//! An ordinary user for the rootless tests: made once with `useradd`, given
//! subordinate ids (`usermod --add-subuids`), and a directory of its own
//! holding a copy of the `layerfs` binary (the build tree may be out of its
//! reach), its store and its mountpoints. Commands run as it through
//! `runuser`, with a clean environment.

use super::{can_mount, have_tool, skip};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub const USER: &str = "layerfs-rootless";
/// Asked for only when useradd gave the user no ranges of its own.
const SUBIDS: &str = "300000-365535";

pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: &'static str,
}

/// The test user, made on first use; None after a loud skip when the
/// machine cannot mount or lacks the tools (useradd, runuser, newuidmap).
pub fn user(test: &str) -> Option<&'static User> {
    if !can_mount(test) {
        return None;
    }
    for tool in [
        "useradd",
        "usermod",
        "runuser",
        "newuidmap",
        "newgidmap",
        "fusermount3",
    ] {
        if !have_tool(tool, test) {
            return None;
        }
    }
    static MADE: OnceLock<Option<User>> = OnceLock::new();
    let u = MADE.get_or_init(make_user).as_ref();
    if u.is_none() {
        skip(test, "could not make the test user", true);
    }
    u
}

/// A second user, without subordinate ids (what `useradd` gave it is taken
/// back).
pub fn user_without_subids(test: &str) -> Option<&'static User> {
    user(test)?;
    static MADE: OnceLock<Option<User>> = OnceLock::new();
    let u = MADE.get_or_init(make_plain_user).as_ref();
    if u.is_none() {
        skip(
            test,
            "could not make the test user without subordinate ids",
            true,
        );
    }
    u
}

pub const PLAIN_USER: &str = "layerfs-nosubids";

fn make_plain_user() -> Option<User> {
    if !useradd(PLAIN_USER) {
        return None;
    }
    for (file, flag) in [
        ("/etc/subuid", "--del-subuids"),
        ("/etc/subgid", "--del-subgids"),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let [name, start, count] = f[..]
                && name == PLAIN_USER
                && let (Ok(s), Ok(c)) = (start.parse::<u64>(), count.parse::<u64>())
            {
                let range = format!("{s}-{}", s + c - 1);
                let _ = Command::new("usermod")
                    .args([flag, &range, PLAIN_USER])
                    .status();
            }
        }
    }
    let u = nix::unistd::User::from_name(PLAIN_USER).ok()??;
    Some(User {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        name: PLAIN_USER,
    })
}

/// Makes user `name` unless it exists; whether it does now.
fn useradd(name: &str) -> bool {
    nix::unistd::User::from_name(name).ok().flatten().is_some()
        || Command::new("useradd")
            .args(["--create-home", "--shell", "/bin/sh", name])
            .status()
            .is_ok_and(|s| s.success())
}

fn make_user() -> Option<User> {
    if !useradd(USER) {
        return None;
    }
    let has = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(&format!("{USER}:")))
    };
    if !has("/etc/subuid") || !has("/etc/subgid") {
        let ok = Command::new("usermod")
            .args(["--add-subuids", SUBIDS, "--add-subgids", SUBIDS, USER])
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
    }
    // The namespace route opens /dev/fuse itself (the setuid fusermount3
    // does not help inside a user namespace); some VMs ship it 0600 where
    // Debian has 0666.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(0o666));
    let u = nix::unistd::User::from_name(USER).ok()??;
    Some(User {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        name: USER,
    })
}

/// A directory of the user's: the binary, the store, scratch space.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    pub store: PathBuf,
}

impl User {
    pub fn home(&self) -> Home {
        let dir = tempfile::Builder::new()
            .prefix("layerfs-rootless-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let bin = dir.path().join("layerfs");
        std::fs::copy(env!("CARGO_BIN_EXE_layerfs"), &bin).expect("copy the binary");
        self.chown(dir.path());
        self.chown(&bin);
        Home {
            store: dir.path().join("store"),
            bin,
            dir,
        }
    }

    pub fn chown(&self, p: &Path) {
        nix::unistd::chown(
            p,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
    }

    /// `sh -c script` as the user, in `home`, with `$L` the layerfs binary
    /// (its store the home's) and `stdin` as its input.
    pub fn sh(&self, home: &Home, script: &str, stdin: Option<&Path>) -> Output {
        let mut c = Command::new("runuser");
        c.args(["-u", self.name, "--", "/bin/sh", "-c", script])
            .current_dir(home.dir.path())
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", home.dir.path())
            .env("L", &home.bin)
            .env("LAYERFS_ROOT", &home.store)
            .stdin(match stdin {
                Some(p) => Stdio::from(std::fs::File::open(p).expect("open stdin file")),
                None => Stdio::null(),
            });
        c.output().expect("runuser")
    }

    /// As `sh`, failing the test unless the script succeeds; its stdout.
    pub fn ok(&self, home: &Home, script: &str, stdin: Option<&Path>) -> String {
        let out = self.sh(home, script, stdin);
        assert!(
            out.status.success(),
            "as {}: {script}\nfailed ({}): {}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Home {
    /// Writes a file the user can read, under the home.
    pub fn file(&self, user: &User, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::File::create(&p)
            .and_then(|mut f| f.write_all(data))
            .expect("write file");
        user.chown(&p);
        p
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        // Whatever a failed test left mounted under the home goes first.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let prefix = self.dir.path().to_string_lossy().into_owned();
        for line in mounts.lines() {
            if let Some(mp) = line.split_whitespace().nth(1)
                && mp.starts_with(&prefix)
            {
                let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
