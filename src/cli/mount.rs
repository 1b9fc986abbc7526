//! `layerfs mount IMAGE MOUNTPOINT`: returns once the mount serves, with the
//! daemon in the background (`-f` keeps it in the foreground).

use super::Ctx;
use anyhow::{Context, Result};
use layerfs::mount::{self, MountOptions, records};

#[derive(clap::Args)]
pub struct Args {
    image: String,
    mountpoint: std::path::PathBuf,
    /// Stay in the foreground, serving until unmounted or interrupted
    #[arg(short, long)]
    foreground: bool,
    /// Log every filesystem request (to the terminal with -f, else to the mount's log)
    #[arg(long)]
    debug: bool,
    /// Mount options, comma separated (allow_other, ...)
    #[arg(short = 'o', value_delimiter = ',')]
    options: Vec<String>,
    /// Honour setuid/setgid bits (for chroot use)
    #[arg(long)]
    suid: bool,
    /// Honour device nodes (for chroot use)
    #[arg(long)]
    dev: bool,
    /// MiB of decoded layer data kept in memory
    #[arg(long, default_value_t = 64)]
    cache_size: usize,
    /// FUSE worker threads
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    if !a.foreground {
        return background(ctx, &store, &a);
    }
    if a.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let opts = MountOptions {
        image: a.image.clone(),
        mountpoint: a.mountpoint.clone(),
        suid: a.suid,
        dev: a.dev,
        options: a.options.clone(),
        cache_bytes: a.cache_size << 20,
        threads: a.threads,
    };
    // Set when `mount` started this process as its background daemon.
    let ready_fd: Option<i32> = std::env::var(mount::READY_FD_ENV)
        .ok()
        .and_then(|v| v.parse().ok());
    mount::serve(&store, &opts, |r| {
        if let Some(fd) = ready_fd {
            mount::report_ready(fd, r);
        }
    })
    .with_context(|| format!("mount {}", a.image))?;
    Ok(())
}

fn background(ctx: &Ctx, store: &layerfs::store::Store, a: &Args) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the layerfs executable")?;
    let canon = a
        .mountpoint
        .canonicalize()
        .unwrap_or_else(|_| a.mountpoint.clone());
    let log = records::dir(store)?.join(format!("{}.log", records::mount_id(&canon)));
    let mut args = vec![
        "--root".to_string(),
        ctx.root.display().to_string(),
        "mount".into(),
        "-f".into(),
    ];
    if a.debug {
        args.push("--debug".into());
    }
    if a.suid {
        args.push("--suid".into());
    }
    if a.dev {
        args.push("--dev".into());
    }
    for o in &a.options {
        args.extend(["-o".into(), o.clone()]);
    }
    args.extend([
        "--cache-size".into(),
        a.cache_size.to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--".into(),
        a.image.clone(),
        a.mountpoint.display().to_string(),
    ]);
    mount::spawn_daemon(&exe, &args, &log).with_context(|| format!("mount {}", a.image))?;
    Ok(())
}
