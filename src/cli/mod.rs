//! Command-line parsing and dispatch: one file per subcommand, each a few
//! lines over the library. Exit codes as Docker's: 0 ok, 1 failed, 2 usage.

mod df;
mod format;
mod fsck;
mod gc;
mod history;
mod images;
mod import;
mod inspect;
mod login;
mod logout;
mod pull;
mod push;
mod rmi;
mod tag;
mod transfer;

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
    /// Pull an image from a registry
    Pull(pull::Args),
    /// Push an image to a registry
    Push(push::Args),
    /// Log in to a registry
    Login(login::Args),
    /// Log out from a registry
    Logout(logout::Args),
}

/// What every command gets: the store, opened on first use.
pub struct Ctx {
    root: PathBuf,
}

impl Ctx {
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.root)
            .map_err(|e| anyhow::anyhow!("cannot open the store at {}: {e}", self.root.display()))
    }
}

pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    init_logging();
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
        Command::Pull(a) => pull::run(&ctx, a),
        Command::Push(a) => push::run(&ctx, a),
        Command::Login(a) => login::run(&ctx, a),
        Command::Logout(a) => logout::run(&ctx, a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("layerfs: {}", one_line(&e));
            1
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message above it already quotes.
fn one_line(e: &anyhow::Error) -> String {
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
