//! `layerfs rm [-f] CONTAINER...`: deletes containers and their changes.

use super::Ctx;
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Unmount a mounted container first
    #[arg(short, long)]
    force: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut failed = false;
    for name in &a.containers {
        if let Err(e) = remove(&store, name, a.force) {
            eprintln!("layerfs: rm {name}: {e:#}");
            failed = true;
        } else {
            println!("{name}");
        }
    }
    if failed {
        bail!("some containers were not removed");
    }
    Ok(())
}

fn remove(store: &layerfs::store::Store, name: &str, force: bool) -> Result<()> {
    let c = layerfs::container::load(store, name)?;
    if let Some((r, _)) = layerfs::mount::records::find_container(store, name)? {
        if !force {
            bail!(
                "it is mounted at {}; unmount it or use --force",
                r.mountpoint.display()
            );
        }
        layerfs::mount::unmount(store, &r.mountpoint, false)?;
    }
    layerfs::container::remove(store, &c)?;
    Ok(())
}
