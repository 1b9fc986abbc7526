//! `layerfs rm [-f] CONTAINER...`: deletes containers (by name or ID) and
//! their changes.

use super::Ctx;
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
    /// Unmount a mounted container first; kill a running one
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

pub(super) fn remove(store: &layerfs::store::Store, what: &str, force: bool) -> Result<()> {
    let mut c = layerfs::container::load(store, what)?;
    let name = c.name.clone();
    let name = name.as_str();
    if layerfs::run::state::load(&c).is_some_and(|st| st.running()) {
        if !force {
            bail!("it is running; stop it or use --force");
        }
        layerfs::run::control::kill(&c, "KILL")?;
        layerfs::run::control::wait_monitor(&c, None);
        // A run --rm container is gone with its monitor.
        match layerfs::container::load(store, name) {
            Ok(again) => c = again,
            Err(layerfs::container::ContainerError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    layerfs::run::control::forget(&c);
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
