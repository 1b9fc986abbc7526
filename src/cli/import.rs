//! `layerfs import FILE|- NAME[:TAG]`

use super::Ctx;
use anyhow::{Context, Result};
use layerfs::image::{ImportOptions, import};
use layerfs::oci::Reference;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Rootfs tarball (tar, tar.gz or tar.zst), or - for standard input
    file: PathBuf,
    /// Name for the image
    reference: Option<String>,
    /// Commit message recorded in the image's history
    #[arg(short, long)]
    message: Option<String>,
    /// Apply a Dockerfile instruction to the config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, ...)
    #[arg(short, long)]
    change: Vec<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let tag = a.reference.as_deref().map(Reference::parse).transpose()?;
    let store = ctx.store()?;
    let shown = a.file.display().to_string();
    let opts = ImportOptions {
        message: a.message,
        changes: a.change,
        source: shown.clone(),
    };
    let stored = if shown == "-" {
        import(&store, std::io::stdin(), tag.as_ref(), &opts)
    } else {
        let f = std::fs::File::open(&a.file).with_context(|| format!("cannot open {shown}"))?;
        import(
            &store,
            std::io::BufReader::with_capacity(1 << 20, f),
            tag.as_ref(),
            &opts,
        )
    }
    .with_context(|| format!("import {shown}"))?;
    println!("{}", stored.id);
    Ok(())
}
