//! `layerfs tag SOURCE TARGET`

use super::Ctx;
use anyhow::{Context, Result};
use layerfs::oci::Reference;

#[derive(clap::Args)]
pub struct Args {
    source: String,
    target: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let target = Reference::parse(&a.target)?;
    if target.digest().is_some() {
        anyhow::bail!("tag {}: a tag cannot name a digest", a.target);
    }
    let store = ctx.store()?;
    let entry = store
        .find_entry(&a.source)
        .with_context(|| format!("tag {}", a.source))?;
    store.tag(&target.canonical(), &entry.descriptor)?;
    Ok(())
}
