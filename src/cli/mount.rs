//! `layerfs mount [--writable [--name NAME]] IMAGE MOUNTPOINT` and
//! `layerfs mount --container NAME MOUNTPOINT`: returns once the mount serves,
//! with the daemon in the background (`-f` keeps it in the foreground).

use super::{Ctx, UsageError};
use anyhow::{Context, Result};
use layerfs::mount::{self, MountOptions};

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
    /// MiB of disk (under the store's layerfs/cache) for decoded files that
    /// are executed, mapped or read again, served at kernel speed by FUSE
    /// passthrough; least recently used go first; 0 = off (it costs each
    /// open of a read-only mount a round trip)
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    file_cache: u64,
    /// Lazy images: fetch the rest of each layer behind the reads (all) or only what is read (none)
    #[arg(long, value_enum, default_value = "all")]
    prefetch: super::lazy::Prefetch,
    #[command(flatten)]
    transport: super::transfer::TransportArgs,
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
}

/// The mount `a` asks for, and how to name it in messages.
fn options(a: &Args) -> Result<(MountOptions, String)> {
    let (image, mountpoint) = match (&a.container, a.targets.as_slice()) {
        (Some(_), [m]) => (String::new(), m.clone()),
        (None, [i, m]) => (i.clone(), m.clone()),
        (Some(_), _) => {
            return Err(UsageError("with --container, give only the MOUNTPOINT".into()).into());
        }
        (None, _) => return Err(UsageError("give an IMAGE and a MOUNTPOINT".into()).into()),
    };
    if a.file_cache > 0 && (a.writable || a.container.is_some()) {
        // Its files may be written while a cache file of theirs is passed
        // through, and the kernel allows one backing file per inode.
        return Err(UsageError("--file-cache serves read-only mounts only".into()).into());
    }
    let what = a
        .container
        .clone()
        .map_or_else(|| image.clone(), |c| format!("container {c}"));
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
        file_cache: a.file_cache << 20,
        threads: a.threads,
        in_process: false,
        debug: a.debug,
        no_prefetch: a.prefetch == super::lazy::Prefetch::None,
        insecure: a.transport.insecure,
        ca_cert: a.transport.ca_cert.clone(),
    };
    Ok((opts, what))
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let (mut opts, what) = options(&a)?;
    // The daemon fetches a lazy image's data as the pull was told to.
    super::lazy::install_fetcher_with(a.transport.client_options());
    let store = ctx.store()?;
    // The daemon and the mount records know containers by name; users may give an ID.
    if let Some(c) = &opts.container {
        let c = layerfs::container::load(&store, c).with_context(|| format!("mount {what}"))?;
        opts.container = Some(c.name);
    }
    if a.container.is_none() {
        opts.image = super::lazy::pull_if_missing(&store, &opts.image, &a.transport)
            .with_context(|| format!("mount {what}"))?;
    }
    if !a.foreground {
        mount::mount_background(&store, &opts).with_context(|| format!("mount {what}"))?;
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::super::{Cli, Command};
    use super::*;
    use clap::Parser;

    fn parsed(argv: &[String]) -> Args {
        let cli =
            Cli::try_parse_from(std::iter::once("layerfs".to_string()).chain(argv.iter().cloned()))
                .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        match cli.command {
            Command::Mount(a) => a,
            _ => panic!("{argv:?} is not a mount"),
        }
    }

    #[test]
    fn the_background_daemon_is_started_with_the_same_mount() {
        for user in [
            vec![
                "mount",
                "-w",
                "--name",
                "c1",
                "--suid",
                "--dev",
                "-o",
                "allow_other,ro",
                "--cache-size",
                "7",
                "--threads",
                "3",
                "--debug",
                "--prefetch",
                "none",
                "img:1",
                "/mnt/x",
            ],
            vec![
                "mount",
                "--insecure",
                "--ca-cert",
                "/etc/ca.pem",
                "r:5000/i:1",
                "m",
            ],
            vec!["mount", "--container", "c1", "rel/dir"],
            vec!["mount", "--", "-odd-image", "/mnt/y"],
        ] {
            let argv: Vec<String> = user.iter().map(|s| s.to_string()).collect();
            let a = parsed(&argv);
            assert!(!a.foreground);
            let (want, _) = options(&a).unwrap();
            let daemon = parsed(&mount::daemon_args(std::path::Path::new("/store"), &want));
            assert!(daemon.foreground, "{user:?}");
            let (got, _) = options(&daemon).unwrap();
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{user:?}");
        }
    }
}
