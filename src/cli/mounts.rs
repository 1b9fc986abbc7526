//! `layerfs mounts`: live mounts, and dead ones still to be unmounted.

use super::Ctx;
use super::format::{OutputFormat, print_table};
use anyhow::Result;

#[derive(clap::Args)]
pub struct Args {
    /// table, json, or a Go template ({{.Mountpoint}}, {{.Image}}, {{json .}})
    #[arg(long)]
    format: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = OutputFormat::parse(a.format.as_deref())?;
    let store = ctx.store()?;
    let list = layerfs::mount::records::list(&store)?;
    // One spelling of keys across images, ps, mounts and df.
    let rows: Vec<_> = list
        .iter()
        .map(|(r, alive)| {
            serde_json::json!({
                "Mountpoint": r.mountpoint,
                "Image": r.image,
                "Digest": r.manifest,
                "Container": r.container,
                "Writable": r.writable,
                "Pid": r.pid,
                "Alive": alive,
                // Layer bytes served and inflated for them (cold-read cost).
                "ReadStats": layerfs::mount::stats::read(&store, &r.id),
                "CacheMiB": r.cache_mib,
                "FileCacheMiB": r.file_cache_mib,
            })
        })
        .collect();
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputFormat::Template(t) => {
            super::format::print_template(&t, &rows, super::format::header_for(&[]))?
        }
        OutputFormat::Table => {
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|(r, alive)| {
                    vec![
                        r.mountpoint.display().to_string(),
                        r.image.clone(),
                        if r.writable { "rw".into() } else { "ro".into() },
                        r.pid.to_string(),
                        caches(r),
                        if *alive {
                            "serving".into()
                        } else {
                            "dead (run layerfs umount)".into()
                        },
                    ]
                })
                .collect();
            print_table(
                &["MOUNTPOINT", "IMAGE", "MODE", "PID", "CACHES", "STATUS"],
                &rows,
            );
        }
    }
    Ok(())
}

/// The mount's cache bounds: decoded spans in memory, decoded files on disk.
fn caches(r: &layerfs::mount::MountRecord) -> String {
    let mib = |m: Option<u64>| match m {
        None => "?".to_string(),
        Some(0) => "off".to_string(),
        Some(m) => format!("{m}M"),
    };
    format!("mem {} disk {}", mib(r.cache_mib), mib(r.file_cache_mib))
}
