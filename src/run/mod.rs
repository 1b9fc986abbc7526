//! Running a command in a container, as `docker run` does: the container's
//! writable mount is served by this process, made a root filesystem (/proc,
//! /dev, read-only /sys, the host's resolv.conf and hosts, volumes) in
//! private mount, PID, UTS and IPC namespaces, and the image config applied
//! (Env, WorkingDir, User from the image's /etc/passwd, Entrypoint and Cmd).
//! The command is attached to our stdio; signals sent to us reach it; its
//! exit code is returned. Every mount a run makes lives in namespaces that
//! die with it, and what it had to create in the container for them is
//! removed again, so a commit of the container shows only the command's
//! own changes.
//!
//! ```text
//! ROOT/layerfs/run/<container>-<pid>/
//!   rootfs/        where the container is mounted (in our namespace only)
//!   resolv.conf    copies of the host's files, bound into the container
//!   hosts
//! ```

pub mod inroot;
mod process;
pub mod rootfs;
pub mod rules;
mod session;

pub use rules::{Volume, check_env, parse_volume};
pub use session::{Session, create_container};

use crate::container::{Container, ContainerError};
use crate::oci::ContainerConfig;
use crate::store::{Store, StoreError};
use crate::union::UpperDir;
use inroot::{HostTree, Node, resolve};
use rootfs::Created;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("running containers needs root (mount and PID namespaces, FUSE)")]
    NotRoot,
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
            _ => 125,
        }
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `docker run IMAGE [ARGS]`: the image's Entrypoint, then ARGS or its Cmd.
    Image(Vec<String>),
    /// Exactly this argv (a build's RUN step).
    Exact(Vec<String>),
}

#[derive(Clone, Debug)]
pub struct RunSpec {
    pub command: Command,
    /// `-e KEY=VALUE` or `-e KEY` (from our environment).
    pub env: Vec<String>,
    /// `-w`: overrides the image's WorkingDir.
    pub workdir: Option<String>,
    /// `-u`: overrides the image's User.
    pub user: Option<String>,
    pub volumes: Vec<Volume>,
    /// Give the command /dev/null as stdin instead of ours.
    pub stdin_null: bool,
}

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
    Ok(())
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
    let upper = UpperDir::open_existing(&c.upper(), &c.work()).map_err(|e| io(&c.upper(), e))?;
    let dir = run_dir(store, &c.name)?;
    let rootfs = dir.join("rootfs");
    std::fs::create_dir(&rootfs).map_err(|e| io(&rootfs, e))?;
    let old_mask = process::block_forwarded()?;
    let result = (|| {
        let session = Session::start(store, &c.name, &rootfs)?;
        let mut created = Vec::new();
        let result = prepare(c, &upper, spec, config, &dir, &rootfs, &mut created)
            .and_then(|plan| process::spawn_and_wait(&plan));
        session.finish()?;
        rootfs::remove_created(&upper, &created)?;
        result
    })();
    let _ = old_mask.thread_set_mask();
    let _ = std::fs::remove_dir_all(&dir);
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
fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, RunError> {
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

/// A copy of a host file, to bind into the container (never the host's own).
fn host_copy(dir: &Path, host: &str, fallback: &str) -> Result<PathBuf, RunError> {
    let name = Path::new(host).file_name().unwrap_or_default();
    let dest = dir.join(name);
    let content = std::fs::read(host).unwrap_or_else(|_| fallback.as_bytes().to_vec());
    std::fs::write(&dest, content).map_err(|e| io(&dest, e))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| io(&dest, e))?;
    Ok(dest)
}

fn cstring(what: &str, s: &[u8]) -> Result<CString, RunError> {
    CString::new(s).map_err(|_| RunError::Path {
        path: what.to_string(),
        why: "contains a NUL byte".into(),
    })
}

fn hostname(name: &str) -> String {
    name.chars().take(63).collect()
}

/// Works out the process and the mounts of the run, creating in the
/// container what the mounts need (recorded in `created`).
fn prepare(
    c: &Container,
    upper: &UpperDir,
    spec: &RunSpec,
    config: &ContainerConfig,
    dir: &Path,
    root: &Path,
    created: &mut Vec<Created>,
) -> Result<process::Plan, RunError> {
    let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
    let group = read_in_root(root, "/etc/group")?.unwrap_or_default();
    let user = spec
        .user
        .as_deref()
        .or(config.user.as_deref())
        .unwrap_or_default();
    let ids = rules::user_ids(user, &passwd, &group)?;
    let argv = match &spec.command {
        Command::Image(args) => {
            rules::argv(config.entrypoint.as_deref(), config.cmd.as_deref(), args)?
        }
        Command::Exact(argv) if argv.is_empty() => return Err(RunError::NoCommand),
        Command::Exact(argv) => argv.clone(),
    };
    let name = hostname(&c.name);
    let env = rules::environment(
        config.env.as_deref().unwrap_or_default(),
        &spec.env,
        &name,
        &ids.home,
        |k| std::env::var(k).ok(),
    );
    let workdir = rules::workdir(spec.workdir.as_deref(), config.working_dir.as_deref())?;
    // Docker creates a missing working directory; it stays in the container.
    let workdir_rel = rootfs::ensure(root, upper, &workdir, true, &mut Vec::new())?;

    let mut targets = rootfs::Targets {
        proc: rootfs::ensure(root, upper, "/proc", true, created)?,
        dev: rootfs::ensure(root, upper, "/dev", true, created)?,
        sys: rootfs::ensure(root, upper, "/sys", true, created)?,
        ..Default::default()
    };
    for (file, fallback) in [
        ("/etc/resolv.conf", ""),
        (
            "/etc/hosts",
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        ),
    ] {
        let src = host_copy(dir, file, fallback)?;
        targets
            .files
            .push((rootfs::ensure(root, upper, file, false, created)?, src));
    }
    for v in &spec.volumes {
        let md = std::fs::metadata(&v.host)
            .map_err(|_| RunError::NoVolumeSource(v.host.display().to_string()))?;
        let rel = rootfs::ensure(root, upper, &v.container, md.is_dir(), created)?;
        targets.volumes.push((rel, v.host.clone(), v.read_only));
    }
    let ops = rootfs::plan(root, &targets)?;

    let search = rules::search_path(&env)
        .iter()
        .map(|d| cstring("PATH", d.as_bytes()))
        .collect::<Result<_, _>>()?;
    Ok(process::Plan {
        root: cstring("the root", root.as_os_str().as_bytes())?,
        ops,
        hostname: name,
        uid: ids.uid,
        gid: ids.gid,
        groups: ids.groups,
        workdir: cstring(
            &workdir,
            format!("/{}", String::from_utf8_lossy(&workdir_rel)).as_bytes(),
        )?,
        argv: argv
            .iter()
            .map(|a| cstring("the command", a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring("the environment", e.as_bytes()))
            .collect::<Result<_, _>>()?,
        search,
        stdin_null: spec.stdin_null,
    })
}
