//! `layerfs fsck`: verifies every blob, image and layer index; exit 1 when
//! something is damaged.

use super::Ctx;
use anyhow::{Result, bail};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<()> {
    let store = ctx.store()?;
    let r = layerfs::image::fsck(&store)?;
    for line in &r.repaired {
        println!("repaired: {line}");
    }
    for line in &r.damaged {
        println!("damaged: {line}");
    }
    println!(
        "checked {} blobs and {} images",
        r.blobs_checked, r.images_checked
    );
    if !r.damaged.is_empty() {
        bail!("{} problems found", r.damaged.len());
    }
    Ok(())
}
