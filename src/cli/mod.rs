//! Command-line parsing and dispatch: one file per subcommand, each a few
//! lines over the library. Exit codes as Docker's: 0 ok, 1 failed, 2 usage.

mod build;
mod commit;
mod completion;
mod df;
mod diff;
mod exec;
mod export;
mod format;
mod fsck;
mod gc;
mod history;
mod images;
mod import;
mod index;
mod info;
mod inspect;
mod lazy;
mod load;
mod login;
mod logout;
mod logs;
mod man;
mod mount;
mod mount_helper;
mod mounts;
mod prune;
mod ps;
mod pull;
mod push;
mod rm;
mod rmi;
mod run;
mod save;
mod stop;
mod system;
mod tag;
mod template;
mod transfer;
mod umount;
mod unshare;

use anyhow::Result;
use clap::{Parser, Subcommand};
use layerfs::store::Store;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "layerfs",
    version,
    about = "Container images as lazy FUSE filesystems over shared OCI layers"
)]
struct Cli {
    /// Store root (default /var/lib/layerfs for root, $XDG_DATA_HOME/layerfs otherwise)
    #[arg(long, global = true, env = "LAYERFS_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import a rootfs tarball (plain, gzip or zstd; - for stdin) as a one-layer image
    Import(import::Args),
    /// List images
    Images(images::Args),
    /// Show an image's manifest, config and layers as JSON
    Inspect(inspect::Args),
    /// Show the history of an image, newest first
    History(history::Args),
    /// Give an image another name
    Tag(tag::Args),
    /// Remove images
    Rmi(rmi::Args),
    /// Show disk usage per image, with shared layers counted once
    Df(df::Args),
    /// Remove blobs that no image, mount or container uses
    Gc(gc::Args),
    /// Verify every blob, image and layer index
    Fsck(fsck::Args),
    /// Mount an image as a read-only filesystem
    Mount(mount::Args),
    /// Unmount a layerfs mount (also one whose daemon died)
    Umount(umount::Args),
    /// List layerfs mounts
    Mounts(mounts::Args),
    /// Make a new image from a container's changes
    Commit(commit::Args),
    /// List containers
    Ps(ps::Args),
    /// Write an image's or container's whole tree as one tar
    Export(export::Args),
    /// Remove containers
    Rm(rm::Args),
    /// Load images from a docker-archive, an oci-archive or an OCI layout (- for stdin)
    Load(load::Args),
    /// Save images to a docker-archive or an oci-archive
    Save(save::Args),
    /// Pull an image from a registry
    Pull(pull::Args),
    /// Push an image to a registry
    Push(push::Args),
    /// Publish layer indexes of an image in a registry, for lazy mounts
    Index(index::Args),
    /// Log in to a registry
    Login(login::Args),
    /// Log out from a registry
    Logout(logout::Args),
    /// Run a command in a new container of an image
    Run(Box<run::Args>),
    /// Build an image from a Dockerfile
    Build(build::Args),
    /// Show the output of a detached container
    Logs(logs::Args),
    /// Run a command in a running container
    Exec(exec::Args),
    /// Stop a running container: SIGTERM, then SIGKILL after -t seconds
    Stop(stop::Args),
    /// Send a signal to a running container
    Kill(stop::KillArgs),
    /// List a container's changes: A added, C changed, D deleted
    Diff(diff::Args),
    /// Manage images (image prune)
    Image(prune::ImageArgs),
    /// Manage containers (container prune)
    Container(prune::ContainerArgs),
    /// Disk usage, pruning and facts of the store (system df|prune|info)
    System(system::Args),
    /// Show the store, its images and containers, and the driver's facts
    Info(info::Args),
    /// Show the version of layerfs and of what it uses
    Version(info::Args),
    /// Run a command as root of a user namespace of your ids (podman unshare)
    Unshare(unshare::Args),
    #[command(hide = true)]
    ContainerMonitor(run::MonitorArgs),
    /// Print a shell completion script (bash, zsh or fish)
    Completion(completion::Args),
    #[command(hide = true)]
    ManPages(man::Args),
}

/// A mistake in how a command was called (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Ends the command with this exit code, its message already printed (a
/// container's command exits non-zero, as `docker run` passes it on).
#[derive(Debug)]
pub struct ExitCode(pub i32);

impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}

impl std::error::Error for ExitCode {}

/// Ends with `code`, the exit code of a command that said why itself.
pub fn exit_with(code: i32) -> Result<()> {
    match code {
        0 => Ok(()),
        c => Err(ExitCode(c).into()),
    }
}

/// What every command gets: the store, opened on first use.
pub struct Ctx {
    pub root: PathBuf,
}

impl Ctx {
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.root)
            .map_err(|e| anyhow::anyhow!("cannot open the store at {}: {e}", self.root.display()))
    }
}

pub fn main() -> i32 {
    // `layerfs images | head` must end quietly, as other tools do, not panic
    // on a closed pipe; the long-lived commands (mount, run) ignore SIGPIPE
    // again for their own sockets and pipes.
    // SAFETY: done first, with one thread; SIG_DFL is the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Some(code) = mount_helper::called_as_helper() {
        return code;
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            let argv: Vec<String> = std::env::args_os()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            return run::parse_error_code(&e, &argv);
        }
    };
    init_logging();
    lazy::install_fetcher();
    let ctx = Ctx {
        root: cli.root.clone().unwrap_or_else(Store::default_root),
    };
    let result = match cli.command {
        Command::Import(a) => import::run(&ctx, a),
        Command::Images(a) => images::run(&ctx, a),
        Command::Inspect(a) => inspect::run(&ctx, a),
        Command::History(a) => history::run(&ctx, a),
        Command::Tag(a) => tag::run(&ctx, a),
        Command::Rmi(a) => rmi::run(&ctx, a),
        Command::Df(a) => df::run(&ctx, a),
        Command::Gc(a) => gc::run(&ctx, a),
        Command::Fsck(a) => fsck::run(&ctx, a),
        Command::Mount(a) => mount::run(&ctx, a),
        Command::Umount(a) => umount::run(&ctx, a),
        Command::Mounts(a) => mounts::run(&ctx, a),
        Command::Commit(a) => commit::run(&ctx, a),
        Command::Ps(a) => ps::run(&ctx, a),
        Command::Export(a) => export::run(&ctx, a),
        Command::Rm(a) => rm::run(&ctx, a),
        Command::Load(a) => load::run(&ctx, a),
        Command::Save(a) => save::run(&ctx, a),
        Command::Pull(a) => pull::run(&ctx, a),
        Command::Push(a) => push::run(&ctx, a),
        Command::Index(a) => index::run(a),
        Command::Login(a) => login::run(&ctx, a),
        Command::Logout(a) => logout::run(&ctx, a),
        Command::Run(a) => run::run(&ctx, *a),
        Command::Build(a) => build::run(&ctx, a),
        Command::Logs(a) => logs::run(&ctx, a),
        Command::Exec(a) => exec::run(&ctx, a),
        Command::Stop(a) => stop::run(&ctx, a),
        Command::Kill(a) => stop::kill(&ctx, a),
        Command::Diff(a) => diff::run(&ctx, a),
        Command::Image(a) => prune::image(&ctx, a),
        Command::Container(a) => prune::container(&ctx, a),
        Command::System(a) => system::run(&ctx, a),
        Command::Info(a) => info::info(&ctx, a),
        Command::Version(a) => info::version(a),
        Command::Unshare(a) => unshare::run(&ctx, a),
        Command::ContainerMonitor(a) => run::monitor(&ctx, a),
        Command::Completion(a) => completion::run(a),
        Command::ManPages(a) => man::run(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<ExitCode>().is_some() => {
            e.downcast_ref::<ExitCode>().map_or(1, |c| c.0)
        }
        Err(e) => {
            eprintln!("layerfs: {}", one_line(&e));
            // Usage mistakes exit 2, as clap's own do.
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already quotes.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out.replace('\n', " ")
}

/// Log lines go to stderr; LAYERFS_LOG=debug|info|warn sets the level.
fn init_logging() {
    struct Stderr;
    impl log::Log for Stderr {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::max_level()
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) && r.target().starts_with("layerfs") {
                eprintln!(
                    "layerfs: {}: {}",
                    r.level().as_str().to_lowercase(),
                    r.args()
                );
            }
        }
        fn flush(&self) {}
    }
    static LOGGER: Stderr = Stderr;
    let level = match std::env::var("LAYERFS_LOG").as_deref() {
        Ok("debug") => log::LevelFilter::Debug,
        Ok("trace") => log::LevelFilter::Trace,
        Ok("info") => log::LevelFilter::Info,
        Ok("error") => log::LevelFilter::Error,
        _ => log::LevelFilter::Warn,
    };
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(level);
    }
}
