//! `mount -t fuse.layerfs IMAGE DIR -o OPTIONS`, /etc/fstab lines and
//! systemd mount units. mount(8) runs `/sbin/mount.fuse.layerfs IMAGE DIR
//! -o OPTS` when that link to layerfs exists (scripts/install.sh makes it),
//! else `mount.fuse3`, which runs `layerfs IMAGE DIR -o OPTS` from PATH.
//! Either way this file turns the options into a `layerfs mount`:
//!
//! ```text
//! ro (and rw, which mount(8) adds by itself)  read-only mount of IMAGE
//! writable                        a writable mount: a new container, or the
//! name=NAME                       container NAME, made on first mount and
//!                                 mounted again afterwards (implies writable)
//! container=NAME                  mount the existing container NAME
//! store=PATH                      the store (default as `layerfs --root`)
//! suid, dev, allow_other, debug, cache_size=MIB, threads=N   as `layerfs mount`'s flags
//! file_cache=MIB                                            as `layerfs mount --file-cache`
//! exec noexec atime noatime sync async dirsync      mount flags, as given
//! defaults auto noauto user users nouser owner group _netdev nofail
//! x-* comment=* fsname=* subtype=* nosuid nodev relatime strictatime
//! nodiratime                                  accepted and left to mount(8)
//! ```

use super::{UsageError, one_line};
use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use layerfs::mount::{self, MountOptions};
use layerfs::store::Store;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The name mount(8) looks for, in /sbin, for `-t fuse.layerfs`.
pub const HELPER_NAME: &str = "mount.fuse.layerfs";

/// `layerfs mount`'s `--cache-size` default, in MiB.
const DEFAULT_CACHE_MIB: usize = 32;

/// Runs the mount helper when this process was started as one: under the
/// helper's name, or by mount.fuse3 as `layerfs SOURCE DIR -o OPTS` (a first
/// argument that is no command). Returns the exit code then.
pub fn called_as_helper() -> Option<i32> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let name = argv
        .first()
        .map(|a| Path::new(a).file_name().unwrap_or(a.as_os_str()).to_owned())?;
    let by_name = name == HELPER_NAME || name == "mount.layerfs";
    let by_mount_fuse = argv.len() >= 4
        && argv[1].to_str().is_some_and(|a| {
            !a.starts_with('-') && super::Cli::command().find_subcommand(a).is_none()
        })
        && argv[3..]
            .iter()
            .any(|a| a.to_str().is_some_and(|a| a.starts_with("-o")));
    if !by_name && !by_mount_fuse {
        return None;
    }
    super::init_logging();
    let args: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Some(match run(&args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("layerfs: {}", one_line(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            }
        }
    })
}

/// What mount(8) asked for.
#[derive(Debug, Default)]
struct Request {
    source: String,
    target: PathBuf,
    store: Option<PathBuf>,
    /// `mount -f`: pretend, mount nothing.
    fake: bool,
    opts: MountOptions,
}

fn run(args: &[String]) -> Result<()> {
    let req = parse(args)?;
    if req.fake {
        return Ok(());
    }
    let root = req.store.clone().unwrap_or_else(Store::default_root);
    let store = Store::open(&root)
        .with_context(|| format!("cannot open the store at {}", root.display()))?;
    let mut opts = req.opts;
    // name=NAME: the container of that name, made on its first mount, so
    // an fstab line brings back the same container at every boot.
    if let Some(name) = opts.name.clone()
        && layerfs::container::load_named(&store, &name).is_ok()
    {
        opts.writable = false;
        opts.name = None;
        opts.image.clear();
        opts.container = Some(name);
    }
    let what = match &opts.container {
        Some(c) => format!("container {c}"),
        None => opts.image.clone(),
    };
    mount::mount_background(&store, &opts).with_context(|| format!("mount {what}"))?;
    Ok(())
}

/// `SOURCE DIR [-o OPTS]... [-n] [-v] [-s] [-f] [-t TYPE]`, as mount(8)
/// calls helpers.
fn parse(args: &[String]) -> Result<Request> {
    let usage = |m: String| -> anyhow::Error { UsageError(m).into() };
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let mut sloppy = false;
    let mut fake = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => options.push(
                it.next()
                    .ok_or_else(|| usage("-o needs a list of options".into()))?
                    .clone(),
            ),
            s if s.starts_with("-o") => options.push(s[2..].to_string()),
            "-t" => {
                it.next();
            }
            "-n" | "-v" => {}
            "-s" => sloppy = true,
            "-f" => fake = true,
            "-N" => bail!(usage(
                "-N (another mount namespace) is not supported".into()
            )),
            s if s.starts_with('-') && s.len() > 1 => {
                bail!(usage(format!("mount helper: unknown flag {s}")))
            }
            s => positional.push(s.to_string()),
        }
    }
    let [source, target] = positional.as_slice() else {
        bail!(usage(
            "mount helper: expected IMAGE DIR [-o OPTIONS], as mount(8) passes them".into()
        ));
    };
    // `fuse` type with `layerfs#IMAGE` reaches us with the prefix gone, but
    // an fstab written for either spelling should work.
    let source = source
        .strip_prefix("layerfs#")
        .unwrap_or(source)
        .to_string();
    let mut req = Request {
        target: PathBuf::from(target),
        fake,
        opts: MountOptions {
            cache_bytes: DEFAULT_CACHE_MIB << 20,
            threads: std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut read_only = false;
    let number = |k: &str, v: &str| -> Result<usize> {
        v.parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| usage(format!("-o {k}={v}: expected a positive number")))
    };
    for o in options.iter().flat_map(|l| l.split(',')) {
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        match (k, v) {
            ("", None) | ("rw", None) => {}
            ("ro", None) => read_only = true,
            ("writable", None) => req.opts.writable = true,
            ("name", Some(n)) if !n.is_empty() => {
                req.opts.writable = true;
                req.opts.name = Some(n.to_string());
            }
            ("container", Some(n)) if !n.is_empty() => req.opts.container = Some(n.to_string()),
            ("store", Some(p)) if !p.is_empty() => req.store = Some(PathBuf::from(p)),
            ("suid", None) => req.opts.suid = true,
            ("dev", None) => req.opts.dev = true,
            ("debug", None) => req.opts.debug = true,
            (
                "allow_other" | "exec" | "noexec" | "atime" | "noatime" | "sync" | "async"
                | "dirsync",
                None,
            ) => req.opts.options.push(k.to_string()),
            // Permissions are always checked by the kernel; root may always enter.
            ("allow_root" | "default_permissions", None) => {}
            ("cache_size", Some(v)) => req.opts.cache_bytes = number(k, v)? << 20,
            ("threads", Some(v)) => req.opts.threads = number(k, v)?,
            ("file_cache", Some(v)) => {
                req.opts.file_cache = v
                    .parse::<u64>()
                    .map_err(|_| usage(format!("-o {k}={v}: expected a number of MiB")))?
                    << 20
            }
            (
                "defaults" | "auto" | "noauto" | "user" | "users" | "nouser" | "owner" | "group"
                | "_netdev" | "nofail" | "nosuid" | "nodev" | "relatime" | "strictatime"
                | "nodiratime",
                None,
            ) => {}
            ("comment" | "fsname" | "subtype", Some(_)) => {}
            (k, _) if k.starts_with("x-") => {}
            _ if sloppy => {}
            _ => bail!(usage(format!("mount -t fuse.layerfs: unknown option {o}"))),
        }
    }
    if req.opts.container.is_some() {
        if req.opts.writable {
            bail!(usage(
                "-o container=NAME mounts an existing container: not with writable or name=".into()
            ));
        }
        req.opts.image = String::new();
    } else {
        req.opts.image = source.clone();
    }
    if read_only {
        if req.opts.writable {
            bail!(usage("-o ro with writable or name=: choose one".into()));
        }
        req.opts.options.push("ro".into());
    }
    req.source = source;
    req.opts.mountpoint = req.target.clone();
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Request> {
        parse(&line.split(' ').map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn mount_options_become_a_layerfs_mount() {
        // What mount.fuse3 passes for `mount -t fuse.layerfs debian:12 /mnt/d`.
        let r = parsed("debian:12 /mnt/d -o rw,store=/s,dev,suid").unwrap();
        assert_eq!(r.source, "debian:12");
        assert_eq!(r.opts.image, "debian:12");
        assert_eq!(r.opts.mountpoint, PathBuf::from("/mnt/d"));
        assert_eq!(r.store, Some(PathBuf::from("/s")));
        assert!(!r.opts.writable && r.opts.suid && r.opts.dev);
        assert_eq!(r.opts.cache_bytes, 32 << 20);

        let r = parsed(
            "img /m -o ro,noauto,nofail,_netdev,x-systemd.automount,defaults,user,allow_other,noexec -n",
        )
        .unwrap();
        assert!(!r.opts.writable && !r.opts.suid);
        assert_eq!(r.opts.options, ["allow_other", "noexec", "ro"]);

        let r = parsed("img /m -o rw,name=web,cache_size=8,threads=3,debug").unwrap();
        assert!(r.opts.writable && r.opts.debug);
        assert_eq!(r.opts.name.as_deref(), Some("web"));
        assert_eq!((r.opts.cache_bytes, r.opts.threads), (8 << 20, 3));

        let r = parsed("layerfs#img /m -o writable").unwrap();
        assert!(r.opts.writable && r.opts.name.is_none());
        assert_eq!(r.opts.image, "img");

        let r = parsed("anything /m -ocontainer=c1").unwrap();
        assert_eq!(r.opts.container.as_deref(), Some("c1"));
        assert_eq!(r.opts.image, "");

        assert!(parsed("img /m -f -o ro").unwrap().fake);
        // -s (sloppy): unknown options are let through.
        assert!(parsed("img /m -s -o frobnicate").is_ok());
    }

    #[test]
    fn contradictions_and_unknown_options_are_usage_errors() {
        for line in [
            "img /m -o frobnicate",
            "img /m -o ro,writable",
            "img /m -o ro,name=x",
            "img /m -o container=c,writable",
            "img /m -o threads=0",
            "img /m -o cache_size=lots",
            "img -o ro",
            "img /m extra -o ro",
            "img /m -o",
            "img /m -N 1234",
        ] {
            let e = parsed(line).unwrap_err();
            assert!(e.downcast_ref::<UsageError>().is_some(), "{line}: {e}");
        }
    }
}
