//! `layerfs umount MOUNTPOINT`: unmounts, also a mount whose daemon died.

use super::Ctx;
use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    mountpoint: std::path::PathBuf,
    /// Detach now even if busy; the kernel finishes when the last user leaves
    #[arg(short, long)]
    lazy: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    layerfs::mount::unmount(&store, &a.mountpoint, a.lazy)
        .with_context(|| format!("umount {}", a.mountpoint.display()))
}
