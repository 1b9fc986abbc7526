//! Running a command in a container, as `docker run` does, through an OCI
//! runtime (runc or crun): the container's writable mount, served by this
//! process, is the root filesystem of a runtime bundle whose `config.json`
//! is built from the image config and the flags with Docker's defaults
//! (capabilities, seccomp, masked /proc paths, /dev, namespaces, cgroup
//! limits); the host's resolv.conf and hosts, a hostname file and `-v`
//! volumes are bound in. This process is the container's monitor: it
//! creates the container, gives it a network, starts it, forwards signals
//! to it and returns its exit code; a static init (tini) is the container's
//! pid 1, reaps orphans, forwards signals to the command and dies with the
//! monitor, so a killed `run` leaves nothing running or mounted. What the
//! run had to create in the container for its mounts is removed again, so a
//! commit of the container shows only the command's own changes. An
//! ordinary user's runs are the same, as root of a user namespace; what
//! differs for them is in rootless.rs.
//!
//! ```text
//! ROOT/layerfs/run/<container>-<pid>/     the bundle
//!   config.json
//!   rootfs/        where the container is mounted (in our namespace only)
//!   resolv.conf    copies of the host's files, bound into the container
//!   hosts, hostname
//! ROOT/layerfs/runtime/                   the runtime's state (its --root)
//! ```

pub mod console;
pub mod control;
pub mod inroot;
pub mod network;
mod process;
pub mod rootfs;
pub mod rootless;
pub mod rules;
pub mod runtime;
pub mod seccomp;
mod session;
pub mod spec;
pub mod state;

pub use rules::{Volume, check_env, parse_volume};
pub use session::{Session, create_container};
pub use spec::Network;

use crate::container::{Container, ContainerError};
use crate::oci::ContainerConfig;
use crate::store::{Store, StoreError};
use crate::union::UpperDir;
use inroot::{HostTree, Node, resolve};
use rootfs::Created;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "running containers needs root, of the host or of a user namespace (`layerfs run` \
         enters one for an ordinary user)"
    )]
    NotRoot,
    #[error("{what}: needs root ({why})")]
    NeedsRoot { what: String, why: &'static str },
    #[error("no command: the image has no Cmd or Entrypoint and none was given")]
    NoCommand,
    #[error("{0}")]
    User(String),
    #[error("-v {0}: {1}")]
    BadVolume(String, &'static str),
    #[error("-v {0}: the host path does not exist")]
    NoVolumeSource(String),
    #[error("-e {0:?}: {1}")]
    BadEnv(String, &'static str),
    #[error("the working directory {0:?} must be an absolute path")]
    BadWorkdir(String),
    #[error("{path} in the container: {why}")]
    Path { path: String, why: String },
    #[error("preparing the container: {0}")]
    Setup(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("cannot run the command: {why}")]
    Exec { why: String, code: i32 },
    #[error("{what}: {}", errno.desc())]
    Sys {
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Mount(#[from] crate::mount::MountError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Layer(#[from] crate::layer::LayerError),
    #[error(transparent)]
    Union(#[from] crate::union::UnionError),
}

impl RunError {
    /// The exit code Docker gives when a command cannot run: 126 (cannot be
    /// invoked), 127 (not found), 125 (the run itself failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Exec { code, .. } => *code,
            RunError::Usage(_) => 2,
            _ => 125,
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Command {
    /// `docker run IMAGE [ARGS]`: the image's Entrypoint, then ARGS or its Cmd.
    Image(Vec<String>),
    /// Exactly this argv (a build's RUN step).
    Exact(Vec<String>),
}

impl Default for Command {
    fn default() -> Command {
        Command::Image(Vec::new())
    }
}

/// `--security-opt seccomp=...`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Seccomp {
    /// containers-common's profile with Docker's capability rules.
    #[default]
    Default,
    Unconfined,
    Profile(PathBuf),
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub command: Command,
    /// `--entrypoint`: replaces the image's Entrypoint (and drops its Cmd).
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` or `-e KEY` (from our environment).
    pub env: Vec<String>,
    /// `-w`: overrides the image's WorkingDir.
    pub workdir: Option<String>,
    /// `-u`: overrides the image's User.
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    /// Give the command /dev/null as stdin instead of ours (no `-i`).
    pub stdin_null: bool,
    /// `-t`: a terminal, through the runtime's console socket.
    pub tty: bool,
    pub hostname: Option<String>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
    pub seccomp: Seccomp,
    pub read_only: bool,
    pub privileged: bool,
    /// `--memory`, bytes.
    pub memory: Option<i64>,
    pub cpus: Option<f64>,
    pub pids_limit: Option<i64>,
    pub network: Network,
    /// `--runtime NAME|PATH`.
    pub runtime: Option<String>,
    /// Say which runtime runs the container, on stderr.
    pub debug: bool,
}

/// The static init bound into each container as its pid 1 (Debian's tini).
const INIT: &str = "/usr/bin/tini-static";
/// Where the container sees it (on its /dev tmpfs, so nothing lands in
/// the container's changes).
const INIT_IN_CONTAINER: &str = "/dev/layerfs-init";

/// Prepares this process for runs, while it has one thread: its own mount
/// namespace, so what it mounts is gone when it exits, however it exits
/// (unmounts on the host still reach it). Signals stay as they are: `run`
/// holds the ones it forwards only while a command runs, so an interrupt
/// between steps of a build still stops it.
pub fn init_process() -> Result<(), RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).map_err(|e| RunError::Sys {
        what: "unshare(CLONE_NEWNS)".into(),
        errno: e,
    })?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .map_err(|e| RunError::Sys {
        what: "making our mounts private".into(),
        errno: e,
    })?;
    process::become_subreaper()
}

/// The runtime of this store (`--runtime` or the one that works here).
pub fn runtime_for(store: &Store, choice: Option<&str>) -> Result<runtime::Runtime, RunError> {
    runtime::find(choice, store.own_dir_for("runtime")?)
}

/// Runs `spec` in container `c` (which must not be mounted), with `config`
/// the runtime part of its image's config; returns the command's exit code.
/// Call `init_process` first, once. The forwarded signals are held in this
/// thread (and the mount's threads, started here) while the command runs; a
/// process with other threads should hold them there too, or those threads
/// may take them.
pub fn run(
    store: &Store,
    c: &Container,
    config: &ContainerConfig,
    spec: &RunSpec,
) -> Result<i32, RunError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(RunError::NotRoot);
    }
    if rootless::current().is_some() {
        rootless::check(spec)?;
    }
    let rt = runtime_for(store, spec.runtime.as_deref())?;
    if spec.debug {
        eprintln!("layerfs: runtime {} ({})", rt.path.display(), rt.version());
    }
    let upper = UpperDir::open_existing(&c.upper(), &c.work()).map_err(|e| io(&c.upper(), e))?;
    let dir = run_dir(store, &c.name)?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|e| io(&rootfs, e))?;
    let old_mask = process::block_forwarded()?;
    let result = (|| {
        let session = Session::start(store, &c.name, &rootfs)?;
        let mut created = Vec::new();
        let result = prepare(c, &upper, spec, config, &dir, &rootfs, &mut created)
            .and_then(|()| monitor(&rt, c, spec, &dir));
        // Both clean-ups run whatever happened; the command's own result
        // comes first.
        let finished = session.finish();
        let removed = rootfs::remove_created(&upper, &created);
        result.and_then(|code| finished.and(removed).map(|()| code))
    })();
    let _ = old_mask.thread_set_mask();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Creates the container from the bundle `dir`, gives it its network,
/// starts it and waits for it, recording what it does in its state.
fn monitor(
    rt: &runtime::Runtime,
    c: &Container,
    spec: &RunSpec,
    dir: &Path,
) -> Result<i32, RunError> {
    let id = &c.name;
    // What a monitor killed before it could clean up left behind.
    let _ = rt.delete(id);
    let pid_file = dir.join("init.pid");
    let stdin = if spec.stdin_null {
        Stdio::null()
    } else {
        Stdio::inherit()
    };
    let mut st = state::State {
        status: state::Status::Created,
        monitor: std::process::id(),
        runtime: rt.path.clone(),
        runtime_root: rt.root.clone(),
        bundle: dir.to_path_buf(),
        started: crate::oci::time::now_rfc3339(),
        ..Default::default()
    };
    // Recorded before the runtime has it, so a killed monitor's leftovers
    // can be found (`control::forget`).
    state::save(c, &st)?;
    let console = match spec.tty {
        true => Some(console::Socket::listen(dir)?),
        false => None,
    };
    let stdio = match spec.tty {
        true => [Stdio::null(), Stdio::null(), Stdio::inherit()],
        false => [stdin, Stdio::inherit(), Stdio::inherit()],
    };
    let ended = |st: &mut state::State| {
        st.status = state::Status::Exited;
        st.finished = Some(crate::oci::time::now_rfc3339());
        let _ = state::save(c, st);
    };
    if let Err(e) = rt.create(
        id,
        dir,
        &pid_file,
        console.as_ref().map(|c| c.path.as_path()),
        stdio,
    ) {
        ended(&mut st);
        return Err(e);
    }
    // From here the runtime holds a container (and our mount): every way
    // out deletes it, or the run would wait forever for the mount to go.
    let attached = match console {
        Some(sock) => (|| {
            let master = sock.master()?;
            console::copy_size(&master);
            let size = master.try_clone().map_err(|e| io(dir, e))?;
            Ok((
                Some(console::Raw::enter()),
                Some(console::attach(master, !spec.stdin_null)?),
                Some(size),
            ))
        })(),
        None => Ok((None, None, None)),
    };
    let (_raw, output, size) = match attached {
        Ok(a) => a,
        Err(e) => {
            let _ = rt.delete(id);
            ended(&mut st);
            return Err(e);
        }
    };
    let result = (|| {
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| RunError::Runtime(format!("{} create {id}: no pid file", rt.name())))?;
        let _net = match spec.network {
            Network::Default => network::start(pid)?,
            _ => None,
        };
        rt.start(id)?;
        st.status = state::Status::Running;
        st.pid = pid as u32;
        state::save(c, &st)?;
        let resized = || {
            if let Some(m) = &size {
                console::copy_size(m);
            }
        };
        process::wait_forwarding(nix::unistd::Pid::from_raw(pid), &resized)
    })();
    if let Some(t) = output {
        let _ = t.join();
    }
    let _ = rt.delete(id);
    st.exit_code = result.as_ref().ok().copied();
    ended(&mut st);
    result
}

fn io(path: &Path, source: std::io::Error) -> RunError {
    RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A fresh directory for one run, private to root; leftovers of runs whose
/// process died are removed on the way.
fn run_dir(store: &Store, name: &str) -> Result<PathBuf, RunError> {
    let base = store.own_dir_for("run")?;
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io(&base, e))?;
    if let Ok(rd) = std::fs::read_dir(&base) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            let pid = n.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            if pid.is_some_and(|p| !crate::store::process_alive(p))
                && !crate::mount::is_mounted(&e.path().join("rootfs"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).map_err(|e| io(&dir, e))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io(&dir, e))?;
    Ok(dir)
}

/// Reads a file of the mounted image (resolved inside it), if it is there.
pub(super) fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, RunError> {
    let mut tree = HostTree::new(root);
    let r = resolve(&mut tree, path.as_bytes(), true).map_err(|e| RunError::Path {
        path: path.to_string(),
        why: e.to_string(),
    })?;
    if r.node != Some(Node::Other) {
        return Ok(None);
    }
    let p = tree.host_path(&r.path);
    let bytes = std::fs::read(&p).map_err(|e| io(&p, e))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// A file to bind into the container (never the host's own).
fn bundle_file(dir: &Path, name: &str, content: &[u8]) -> Result<PathBuf, RunError> {
    let dest = dir.join(name);
    std::fs::write(&dest, content).map_err(|e| io(&dest, e))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(&dest, e))?;
    Ok(dest)
}

/// The host's resolv.conf for the container; behind user-mode networking a
/// nameserver on the host's loopback is unreachable, so the gateway's
/// forwarder (slirp4netns's 10.0.2.3) stands in for it.
fn resolv_conf(host: &str, network: Network) -> String {
    if network != Network::Default {
        return host.to_string();
    }
    let mut out = String::new();
    let mut replaced = false;
    for l in host.lines() {
        let loopback = l
            .strip_prefix("nameserver")
            .map(str::trim)
            .is_some_and(|a| a.starts_with("127.") || a == "::1");
        if loopback {
            if !replaced {
                out.push_str(&format!("nameserver {}\n", network::DNS));
                replaced = true;
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

fn hostname(name: &str) -> String {
    name.chars().take(63).collect()
}

/// Checks that the command can be found and run in the container, for the
/// errors (and exit codes) Docker gives before anything starts.
fn check_command(root: &Path, arg0: &str, env: &[String], workdir: &str) -> Result<(), RunError> {
    use std::os::unix::fs::MetadataExt;
    let runnable = |path: &str| -> Result<Option<bool>, RunError> {
        let mut tree = HostTree::new(root);
        let Ok(r) = resolve(&mut tree, path.as_bytes(), true) else {
            return Ok(None);
        };
        match r.node {
            Some(Node::Other) => {
                let md = std::fs::metadata(tree.host_path(&r.path));
                Ok(Some(md.is_ok_and(|m| m.mode() & 0o111 != 0)))
            }
            Some(Node::Dir) => Ok(Some(false)),
            _ => Ok(None),
        }
    };
    let exec = |code, why: String| RunError::Exec { why, code };
    if arg0.contains('/') {
        let full = if arg0.starts_with('/') {
            arg0.to_string()
        } else {
            format!("{}/{arg0}", workdir.trim_end_matches('/'))
        };
        return match runnable(&full)? {
            Some(true) => Ok(()),
            Some(false) => Err(exec(126, format!("{arg0:?}: permission denied"))),
            None => Err(exec(127, format!("{arg0:?}: no such file or directory"))),
        };
    }
    let mut denied = false;
    for d in rules::search_path(env) {
        match runnable(&format!("{d}/{arg0}"))? {
            Some(true) => return Ok(()),
            Some(false) => denied = true,
            None => {}
        }
    }
    if denied {
        return Err(exec(126, format!("{arg0:?}: permission denied")));
    }
    Err(exec(
        127,
        format!("{arg0:?}: executable file not found in $PATH"),
    ))
}

/// Works out the container's config and writes it into the bundle `dir`,
/// creating in the container what its mounts need (recorded in `created`).
fn prepare(
    c: &Container,
    upper: &UpperDir,
    spec: &RunSpec,
    config: &ContainerConfig,
    dir: &Path,
    root: &Path,
    created: &mut Vec<Created>,
) -> Result<(), RunError> {
    let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_root(root, "/etc/group")?.unwrap_or_default();
    let user = spec
        .user
        .as_deref()
        .or(config.user.as_deref())
        .unwrap_or_default();
    let mut ids = rules::user_ids(user, &passwd, &group)?;
    let userns = rootless::current();
    if let Some(ns) = &userns {
        ids.groups = rootless::mapped_ids(ns, ids.uid, ids.gid, &ids.groups)?;
    }
    let argv = match &spec.command {
        Command::Image(args) => match &spec.entrypoint {
            // As Docker: --entrypoint replaces the image's and drops its Cmd.
            Some(ep) if ep.is_empty() => rules::argv(None, None, args)?,
            Some(ep) => rules::argv(Some(std::slice::from_ref(ep)), None, args)?,
            None => rules::argv(config.entrypoint.as_deref(), config.cmd.as_deref(), args)?,
        },
        Command::Exact(argv) if argv.is_empty() => return Err(RunError::NoCommand),
        Command::Exact(argv) => argv.clone(),
    };
    let name = hostname(spec.hostname.as_deref().unwrap_or(&c.name));
    // With a terminal, TERM=xterm as Docker sets it: under the image's Env.
    let mut image_env = config.env.clone().unwrap_or_default();
    if spec.tty {
        image_env.insert(0, "TERM=xterm".into());
    }
    let env = rules::environment(&image_env, &spec.env, &name, &ids.home, |k| {
        std::env::var(k).ok()
    });
    let workdir = rules::workdir(spec.workdir.as_deref(), config.working_dir.as_deref())?;
    // Docker creates a missing working directory; it stays in the container.
    let workdir_rel = rootfs::ensure(root, upper, &workdir, true, &mut Vec::new())?;
    check_command(root, &argv[0], &env, &inroot::lossy(&workdir_rel))?;

    // The mountpoints the runtime needs, made here so they can be removed again.
    for d in ["/proc", "/dev", "/sys"] {
        rootfs::ensure(root, upper, d, true, created)?;
    }
    let mut binds = Vec::new();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_else(|_| {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into()
    });
    for (file, content) in [
        ("/etc/resolv.conf", resolv_conf(&host_resolv, spec.network)),
        ("/etc/hosts", host_hosts),
        ("/etc/hostname", format!("{name}\n")),
    ] {
        let base = file.rsplit('/').next().unwrap_or(file);
        let src = bundle_file(dir, base, content.as_bytes())?;
        let rel = rootfs::ensure(root, upper, file, false, created)?;
        binds.push(spec::Bind {
            source: src.display().to_string(),
            destination: inroot::lossy(&rel),
            read_only: false,
        });
    }
    for v in &spec.volumes {
        let md = std::fs::metadata(&v.host)
            .map_err(|_| RunError::NoVolumeSource(v.host.display().to_string()))?;
        let rel = rootfs::ensure(root, upper, &v.container, md.is_dir(), created)?;
        binds.push(spec::Bind {
            source: v.host.display().to_string(),
            destination: inroot::lossy(&rel),
            read_only: v.read_only,
        });
    }
    let mut args = argv;
    if Path::new(INIT).is_file() {
        binds.push(spec::Bind {
            source: INIT.into(),
            destination: INIT_IN_CONTAINER.into(),
            read_only: true,
        });
        // -p: it dies with its parent, the monitor, and the container with it.
        let mut with_init: Vec<String> = [INIT_IN_CONTAINER, "-p", "SIGKILL", "--"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        with_init.append(&mut args);
        args = with_init;
    } else {
        log::warn!("{INIT} is missing (Debian package tini): the command runs as pid 1");
    }

    let caps = spec::capabilities(&spec.cap_add, &spec.cap_drop, spec.privileged)
        .map_err(RunError::Usage)?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = match status.lines().find_map(|l| l.strip_prefix("CapBnd:")) {
        Some(bnd) => spec::within_bounding(caps, bnd),
        None => caps,
    };
    let seccomp = match (&spec.seccomp, spec.privileged) {
        (_, true) | (Seccomp::Unconfined, _) => None,
        (Seccomp::Default, _) => {
            let text = std::fs::read(seccomp::DEFAULT_PROFILE).map_err(|e| {
                RunError::Runtime(format!(
                    "the default seccomp profile {}: {e} (Debian package \
                     golang-github-containers-common; or --security-opt seccomp=unconfined)",
                    seccomp::DEFAULT_PROFILE
                ))
            })?;
            Some(seccomp::filter(
                &text,
                seccomp::DEFAULT_PROFILE,
                &caps,
                true,
            )?)
        }
        (Seccomp::Profile(p), _) => {
            let text = std::fs::read(p).map_err(|e| io(p, e))?;
            Some(seccomp::filter(
                &text,
                &p.display().to_string(),
                &caps,
                false,
            )?)
        }
    };
    let input = spec::Input {
        args,
        env,
        cwd: inroot::lossy(&workdir_rel),
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups,
        terminal: spec.tty,
        hostname: name,
        caps,
        no_new_privileges: spec.no_new_privileges,
        seccomp,
        read_only: spec.read_only,
        privileged: spec.privileged,
        memory: spec.memory,
        memory_swap: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists(),
        cpus: spec.cpus,
        pids_limit: spec.pids_limit,
        network: spec.network,
        // Unique on the host: stores are not, nor are container names across them.
        cgroups_path: format!("/layerfs/{}-{}", c.name, std::process::id()),
        binds,
    };
    let mut config = spec::config(&input);
    if let Some(ns) = &userns {
        rootless::adjust(&mut config, ns, spec.network);
    }
    let json = serde_json::to_vec_pretty(&config).unwrap_or_default();
    let p = dir.join("config.json");
    std::fs::write(&p, json).map_err(|e| io(&p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_behind_slirp_replaces_loopback_nameservers() {
        let host = "search lan\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\n";
        assert_eq!(
            resolv_conf(host, Network::Default),
            "search lan\nnameserver 10.0.2.3\noptions edns0\n"
        );
        assert_eq!(resolv_conf(host, Network::Host), host);
        let outside = "nameserver 192.0.2.1\n";
        assert_eq!(resolv_conf(outside, Network::Default), outside);
    }
}
