//! `layerfs rmi [-f] IMAGE...`: untags, and removes an image when its last
//! name goes; its blobs are freed unless another image shares them.

use super::{Ctx, ExitCode};
use anyhow::Result;
use layerfs::image::remove_image;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove even if the image has several names or a mount or container uses it
    #[arg(short, long)]
    force: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let mut failed = false;
    for what in &a.images {
        match remove_image(&store, what, a.force) {
            Ok(r) => {
                for t in &r.untagged {
                    println!("Untagged: {t}");
                }
                if let Some(id) = r.deleted {
                    println!("Deleted: {id}");
                }
            }
            // One line per image that stays, as `docker rmi` prints them.
            Err(e) => {
                eprintln!("layerfs: rmi {what}: {}", super::one_line(&e.into()));
                failed = true;
            }
        }
    }
    let held = store.held_manifests()?;
    let report = store.gc(&held)?;
    log::info!("freed {} bytes", report.freed);
    if failed {
        return Err(ExitCode(1).into());
    }
    Ok(())
}
