//! User namespaces for an ordinary user, as `podman unshare` makes them: a
//! user namespace whose id 0 is the user and whose ids 1..N are the user's
//! subordinate ids (`/etc/subuid`, `/etc/subgid`, applied by the setuid
//! `newuidmap`/`newgidmap` from the parent once the child has unshared),
//! plus a mount namespace of its own. Inside, layerfs commands act as root
//! of the namespace: chroot, chown to any mapped id, mknod of fifos, FUSE
//! mounts (Linux ≥ 4.18). Without subordinate ids the map is the user alone.
//!
//! Low in the dependency order (it uses nothing of ours), so `run`, `build`
//! and the CLI can all put themselves in such a namespace.

pub use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{ForkResult, Gid, Pid, Uid};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in a namespace that layerfs made, to the user's host uid (for
/// messages; what a process is inside is read from /proc/self/uid_map).
pub const ENV_USERNS: &str = "LAYERFS_USERNS";

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error(
        "unprivileged user namespaces are disabled: as root, sysctl -w {0} (and set it in /etc/sysctl.d/ to keep it)"
    )]
    Disabled(&'static str),
    #[error("cannot make a user namespace: {0}")]
    Unshare(nix::errno::Errno),
    #[error(
        "{tool} failed ({status}): check the user's ranges in {file} and that {tool} (package uidmap) is setuid root"
    )]
    MapTool {
        tool: &'static str,
        file: &'static str,
        status: String,
    },
    #[error(
        "{0} is missing: apt-get install uidmap (newuidmap and newgidmap map the subordinate ids)"
    )]
    NoMapTool(&'static str),
    #[error("writing the id map of process {pid}: {source}")]
    WriteMap { pid: i32, source: std::io::Error },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the namespace's first process: {0}")]
    Fork(nix::errno::Errno),
    #[error("the namespace's first process failed before running the command: {0}")]
    Child(String),
}

/// One line of an id map: `count` ids from `inside` are `outside` on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// The uid and gid maps of a namespace for one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Map {
    pub uids: Vec<IdRange>,
    pub gids: Vec<IdRange>,
}

impl Map {
    /// 0 is the user, 1..N the user's subordinate ids when /etc/subuid and
    /// /etc/subgid give some (else the map is the user alone).
    pub fn for_current_user() -> Map {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let name = nix::unistd::User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Map::from_files(
            uid,
            gid,
            name.as_deref(),
            &read("/etc/subuid"),
            &read("/etc/subgid"),
        )
    }

    /// The map from the contents of /etc/subuid and /etc/subgid, whose lines
    /// name the user by name or by number.
    pub fn from_files(uid: u32, gid: u32, user: Option<&str>, subuid: &str, subgid: &str) -> Map {
        let build = |own: u32, file: &str| {
            let mut v = vec![IdRange {
                inside: 0,
                outside: own,
                count: 1,
            }];
            let mut next = 1u32;
            for (start, count) in subordinate(file, uid, user) {
                // The kernel refuses a map whose host ranges overlap.
                let end = start as u64 + count as u64;
                if v.iter().any(|r| {
                    (start as u64) < r.outside as u64 + r.count as u64 && (r.outside as u64) < end
                }) {
                    continue;
                }
                v.push(IdRange {
                    inside: next,
                    outside: start,
                    count,
                });
                next = next.saturating_add(count);
            }
            v
        };
        Map {
            uids: build(uid, subuid),
            gids: build(gid, subgid),
        }
    }

    /// Whether the namespace has more than the user's own id.
    pub fn has_subordinate_ids(&self) -> bool {
        self.uids.len() > 1 && self.gids.len() > 1
    }
}

/// The (start, count) ranges of `file` (subuid format, `name:start:count`)
/// that belong to the user.
fn subordinate(file: &str, uid: u32, user: Option<&str>) -> Vec<(u32, u32)> {
    let uid_s = uid.to_string();
    let mut out = Vec::new();
    for line in file.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut f = line.split(':');
        let (Some(who), Some(start), Some(count)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if who != uid_s && Some(who) != user {
            continue;
        }
        if let (Ok(s), Ok(c)) = (start.parse::<u32>(), count.parse::<u32>())
            && c > 0
        {
            out.push((s, c));
        }
    }
    out
}

/// Whether this process is in a user namespace other than the host's.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// A one-line note for a user without subordinate ids.
pub fn no_subordinate_ids_note() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string());
    format!(
        "no subordinate ids for {user} in /etc/subuid and /etc/subgid: the namespace maps only your own id (0); as root, usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
    )
}

/// Checks the sysctls that turn unprivileged user namespaces off.
fn check_enabled() -> Result<(), UsernsError> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    if read("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return Err(UsernsError::Disabled("kernel.unprivileged_userns_clone=1"));
    }
    if read("/proc/sys/user/max_user_namespaces") == Some(0) {
        return Err(UsernsError::Disabled("user.max_user_namespaces=15000"));
    }
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return Err(UsernsError::Disabled(
            "kernel.apparmor_restrict_unprivileged_userns=0",
        ));
    }
    Ok(())
}

/// Runs `cmd` as root of a new user namespace (with `map`) and a new mount
/// namespace, and returns its exit code (128+N when killed by signal N). As
/// root on the host, only the mount namespace is new.
pub fn run_in_namespace(map: &Map, cmd: &mut Command) -> Result<i32, UsernsError> {
    run_in_namespaces(map, cmd, CloneFlags::empty())
}

/// As `run_in_namespace`, with more namespaces (`CLONE_NEWUTS`,
/// `CLONE_NEWIPC`, `CLONE_NEWPID`: then the command's first child is pid 1).
pub fn run_in_namespaces(
    map: &Map,
    cmd: &mut Command,
    extra: CloneFlags,
) -> Result<i32, UsernsError> {
    // Signals sent to us (by `kill`) go on to it, held from before the fork
    // (its exec clears the mask) until it has ended.
    let held = forwarded();
    let old = held
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(UsernsError::Fork)?;
    let result = start_and_wait(map, cmd, extra, &held);
    let _ = old.thread_set_mask();
    result
}

fn start_and_wait(
    map: &Map,
    cmd: &mut Command,
    extra: CloneFlags,
    held: &SigSet,
) -> Result<i32, UsernsError> {
    let host_root = nix::unistd::geteuid().is_root() && !in_user_namespace();
    if !host_root {
        check_enabled()?;
    }
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(UsernsError::Fork)?;
    let (go_r, go_w) = nix::unistd::pipe().map_err(UsernsError::Fork)?;
    let (err_r, err_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(UsernsError::Fork)?;
    cmd.env(ENV_USERNS, nix::unistd::geteuid().to_string());
    // SAFETY: called before the command starts threads of its own (the CLI
    // calls this first); the child only makes syscalls and execs.
    match unsafe { nix::unistd::fork() }.map_err(UsernsError::Fork)? {
        ForkResult::Child => {
            drop(ready_r);
            drop(go_w);
            drop(err_r);
            let err = child(host_root, extra, ready_w, go_r, cmd);
            let mut f = std::fs::File::from(err_w);
            let _ = f.write_all(err.as_bytes());
            // SAFETY: ends the forked child without running the parent's
            // destructors or atexit handlers twice.
            unsafe { libc::_exit(127) }
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(go_r);
            drop(err_w);
            let mut b = [0u8; 1];
            let unshared = std::fs::File::from(ready_r).read(&mut b).unwrap_or(0) == 1;
            let mapped = if unshared && !host_root {
                write_maps(child, map)
            } else {
                Ok(())
            };
            let mut go = std::fs::File::from(go_w);
            if mapped.is_ok() && unshared {
                let _ = go.write_all(b"1");
            }
            drop(go);
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            let status = wait(child, held);
            mapped?;
            if !msg.is_empty() {
                return Err(if msg.starts_with("unshare: ") {
                    unshare_error(&msg)
                } else {
                    UsernsError::Child(msg)
                });
            }
            status
        }
    }
}

fn unshare_error(msg: &str) -> UsernsError {
    let e = msg
        .trim_start_matches("unshare: ")
        .parse::<i32>()
        .map(nix::errno::Errno::from_raw)
        .unwrap_or(nix::errno::Errno::EPERM);
    match e {
        nix::errno::Errno::ENOSPC => UsernsError::Disabled("user.max_user_namespaces=15000"),
        nix::errno::Errno::EPERM => UsernsError::Disabled("kernel.unprivileged_userns_clone=1"),
        e => UsernsError::Unshare(e),
    }
}

/// The forked child: unshares, tells the parent, waits for the maps,
/// becomes root of the namespace and execs. Returns only on failure, with
/// the message for the parent.
fn child(
    host_root: bool,
    extra: CloneFlags,
    ready_w: std::os::fd::OwnedFd,
    go_r: std::os::fd::OwnedFd,
    cmd: &mut Command,
) -> String {
    let parent = nix::unistd::getppid();
    let flags = extra
        | if host_root {
            CloneFlags::CLONE_NEWNS
        } else {
            CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS
        };
    if let Err(e) = nix::sched::unshare(flags) {
        return format!("unshare: {}", e as i32);
    }
    if std::fs::File::from(ready_w).write_all(b"1").is_err() {
        return "the parent went away".into();
    }
    let mut b = [0u8; 1];
    if std::fs::File::from(go_r).read(&mut b).unwrap_or(0) != 1 {
        // The parent reported why (its map failed); end quietly.
        // SAFETY: as above, the forked child ends without destructors.
        unsafe { libc::_exit(1) }
    }
    if !host_root {
        if let Err(e) = nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        {
            return format!("setresgid(0): {e}");
        }
        // Refused where setgroups is denied (a single-id map); nothing to drop then.
        let _ = nix::unistd::setgroups(&[]);
        if let Err(e) = nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        {
            return format!("setresuid(0): {e}");
        }
    }
    // Mounts made inside stay inside.
    if let Err(e) = nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        return format!("making / private in the new mount namespace: {e}");
    }
    // Killed with us (SIGKILL cannot be passed on), after the credential
    // changes above, which clear it.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return "prctl(PR_SET_PDEATHSIG)".into();
    }
    if nix::unistd::getppid() != parent {
        return "the parent went away".into();
    }
    let e = cmd.exec();
    format!("cannot run {:?}: {e}", cmd.get_program())
}

/// Writes the child's maps: through newuidmap/newgidmap when there are
/// subordinate ids, else directly (a process may map its own id alone).
fn write_maps(pid: Pid, map: &Map) -> Result<(), UsernsError> {
    if map.has_subordinate_ids() {
        map_tool("newuidmap", "/etc/subuid", pid, &map.uids)?;
        map_tool("newgidmap", "/etc/subgid", pid, &map.gids)?;
        return Ok(());
    }
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|source| {
            UsernsError::WriteMap {
                pid: pid.as_raw(),
                source,
            }
        })
    };
    let line = |r: &IdRange| format!("{} {} {}\n", r.inside, r.outside, r.count);
    write("uid_map", line(&map.uids[0]))?;
    write("setgroups", "deny".into())?;
    write("gid_map", line(&map.gids[0]))
}

fn map_tool(
    tool: &'static str,
    file: &'static str,
    pid: Pid,
    ranges: &[IdRange],
) -> Result<(), UsernsError> {
    let mut c = Command::new(tool);
    c.arg(pid.to_string());
    for r in ranges {
        c.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let out = c.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => UsernsError::NoMapTool(tool),
        _ => UsernsError::Io {
            path: PathBuf::from(tool),
            source: e,
        },
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', " ");
        return Err(UsernsError::MapTool {
            tool,
            file,
            status: if err.is_empty() {
                out.status.to_string()
            } else {
                err
            },
        });
    }
    Ok(())
}

/// The signals passed on to the namespace's process (as `run` passes them
/// on to a container).
pub const FORWARDED: [Signal; 6] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// FORWARDED, and SIGCHLD to learn of the process's end.
fn forwarded() -> SigSet {
    let mut s = SigSet::empty();
    for sig in FORWARDED {
        s.add(sig);
    }
    s.add(Signal::SIGCHLD);
    s
}

/// Waits for `pid`, passing on the `held` signals that a process sent us;
/// those of the terminal (sent by the kernel) reach it directly, as it is
/// in our process group.
fn wait(pid: Pid, held: &SigSet) -> Result<i32, UsernsError> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    let signals = SignalFd::with_flags(held, SfdFlags::SFD_CLOEXEC).map_err(UsernsError::Fork)?;
    loop {
        match nix::sys::wait::waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(UsernsError::Fork(e)),
        }
        if let Ok(Some(info)) = signals.read_signal()
            && info.ssi_code != libc::SI_KERNEL
            && let Ok(sig) = Signal::try_from(info.ssi_signo as i32)
            && sig != Signal::SIGCHLD
        {
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }
}

/// For a command that must be root (of the host or of a user namespace):
/// `Ok(None)` to go on in this process, which is such a root already;
/// `Ok(Some(code))` when this same executable ran again, with the same
/// arguments, as root of a new namespace of the user's ids (the store root
/// kept: `LAYERFS_ROOT` is set to the user's before entering) and ended with
/// `code`. Call it first, before any thread starts.
pub fn enter_or_reexec(store_root: &Path) -> Result<Option<i32>, UsernsError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let exe = std::env::current_exe().map_err(|source| UsernsError::Io {
        path: Path::new("/proc/self/exe").into(),
        source,
    })?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    cmd.env("LAYERFS_ROOT", store_root);
    let map = Map::for_current_user();
    if !map.has_subordinate_ids() {
        log::warn!("{}", no_subordinate_ids_note());
    }
    run_in_namespace(&map, &mut cmd).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_takes_the_users_ranges_by_name_or_number() {
        let subuid = "alice:100000:65536\n# comment\nbob:200000:65536\n1000:300000:10\n";
        let subgid = "alice:100000:65536\n";
        let m = Map::from_files(1000, 1000, Some("alice"), subuid, subgid);
        assert_eq!(
            m.uids,
            vec![
                IdRange {
                    inside: 0,
                    outside: 1000,
                    count: 1
                },
                IdRange {
                    inside: 1,
                    outside: 100000,
                    count: 65536
                },
                IdRange {
                    inside: 65537,
                    outside: 300000,
                    count: 10
                },
            ]
        );
        assert_eq!(m.gids.len(), 2);
        assert!(m.has_subordinate_ids());
    }

    #[test]
    fn map_without_ranges_is_the_user_alone() {
        let m = Map::from_files(1000, 1000, Some("carol"), "alice:100000:65536\n", "");
        assert_eq!(
            m.uids,
            vec![IdRange {
                inside: 0,
                outside: 1000,
                count: 1
            }]
        );
        assert!(!m.has_subordinate_ids());
    }

    #[test]
    fn a_refused_unshare_says_which_setting_to_change() {
        let msg =
            |e: nix::errno::Errno| unshare_error(&format!("unshare: {}", e as i32)).to_string();
        assert!(msg(nix::errno::Errno::EPERM).contains("kernel.unprivileged_userns_clone=1"));
        assert!(msg(nix::errno::Errno::ENOSPC).contains("user.max_user_namespaces="));
        assert!(msg(nix::errno::Errno::EINVAL).starts_with("cannot make a user namespace"));
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let m = Map::from_files(
            5,
            5,
            Some("u"),
            "u:x:1\nu:10\nu:7:0\nu:9:2\nu:10:5\n",
            "u:9:2\n",
        );
        assert_eq!(
            m.uids[1..],
            [IdRange {
                inside: 1,
                outside: 9,
                count: 2
            }]
        );
    }
}
