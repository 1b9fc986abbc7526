//! `layerfs mount [--writable [--name NAME]] IMAGE MOUNTPOINT` and
//! `layerfs mount --container NAME MOUNTPOINT`: returns once the mount serves,
//! with the daemon in the background (`-f` keeps it in the foreground).

use super::{Ctx, UsageError};
use anyhow::{Context, Result};
use layerfs::mount::{self, MountOptions, records};

#[derive(clap::Args)]
pub struct Args {
    /// IMAGE MOUNTPOINT, or MOUNTPOINT with --container
    #[arg(required = true, num_args = 1..=2, value_names = ["IMAGE", "MOUNTPOINT"])]
    targets: Vec<String>,
    /// Mount writable: a new container keeps the changes (see ps, commit, rm)
    #[arg(short, long)]
    writable: bool,
    /// Name of the new container (with --writable)
    #[arg(long, requires = "writable")]
    name: Option<String>,
    /// Mount an existing container again
    #[arg(long, conflicts_with_all = ["writable", "name"])]
    container: Option<String>,
    /// Stay in the foreground, serving until unmounted or interrupted
    #[arg(short, long)]
    foreground: bool,
    /// Log every filesystem request (to the terminal with -f, else to the mount's log)
    #[arg(long)]
    debug: bool,
    /// Mount options, comma separated (allow_other, ro, ...)
    #[arg(short = 'o', value_delimiter = ',')]
    options: Vec<String>,
    /// Honour setuid/setgid bits (for chroot use)
    #[arg(long)]
    suid: bool,
    /// Honour device nodes (for chroot use)
    #[arg(long)]
    dev: bool,
    /// MiB of decoded layer data kept in memory (the daemon's memory is this plus ~12 MiB)
    #[arg(long, default_value_t = 32)]
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
    let (image, mountpoint) = match (&a.container, a.targets.as_slice()) {
        (Some(_), [m]) => (String::new(), m.clone()),
        (None, [i, m]) => (i.clone(), m.clone()),
        (Some(_), _) => {
            return Err(UsageError("with --container, give only the MOUNTPOINT".into()).into());
        }
        (None, _) => return Err(UsageError("give an IMAGE and a MOUNTPOINT".into()).into()),
    };
    let what = a
        .container
        .clone()
        .map_or_else(|| image.clone(), |c| format!("container {c}"));
    let store = ctx.store()?;
    if !a.foreground {
        return background(ctx, &store, &a, &image, &mountpoint)
            .with_context(|| format!("mount {what}"));
    }
    if a.debug {
        log::set_max_level(log::LevelFilter::Debug);
    }
    let opts = MountOptions {
        image,
        writable: a.writable,
        name: a.name.clone(),
        container: a.container.clone(),
        mountpoint: mountpoint.into(),
        suid: a.suid,
        dev: a.dev,
        options: a.options.clone(),
        cache_bytes: a.cache_size << 20,
        threads: a.threads,
        in_process: false,
    };
    // Set when `mount` started this process as its background daemon.
    let mut ready = mount::take_ready_pipe();
    mount::serve(&store, &opts, |r| {
        // Closing the pipe is what lets the waiting `mount` return.
        if let Some(pipe) = ready.take() {
            mount::report_ready(pipe, r);
        }
    })
    .with_context(|| format!("mount {what}"))?;
    Ok(())
}

/// Starts this same command with `-f` as a daemon and waits until it serves.
fn background(
    ctx: &Ctx,
    store: &layerfs::store::Store,
    a: &Args,
    image: &str,
    mountpoint: &str,
) -> Result<()> {
    let exe = std::env::current_exe().context("cannot find the layerfs executable")?;
    let mp = std::path::Path::new(mountpoint);
    let canon = mp.canonicalize().unwrap_or_else(|_| mp.to_path_buf());
    let log = records::dir(store)?.join(format!("{}.log", records::mount_id(&canon)));
    let mut args = vec![
        "--root".to_string(),
        ctx.root.display().to_string(),
        "mount".into(),
        "-f".into(),
    ];
    for (on, flag) in [
        (a.debug, "--debug"),
        (a.suid, "--suid"),
        (a.dev, "--dev"),
        (a.writable, "--writable"),
    ] {
        if on {
            args.push(flag.into());
        }
    }
    if let Some(n) = &a.name {
        args.extend(["--name".into(), n.clone()]);
    }
    if let Some(c) = &a.container {
        args.extend(["--container".into(), c.clone()]);
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
    ]);
    if !image.is_empty() {
        args.push(image.to_string());
    }
    args.push(mountpoint.to_string());
    mount::spawn_daemon(&exe, &args, &log)?;
    Ok(())
}
