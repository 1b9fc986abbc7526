//! `layerfs commit MOUNTPOINT|CONTAINER [NAME[:TAG]] [-m MESSAGE] [--author A]
//! [--change INSTR] [--compression gzip|zstd|none|estargz]`

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::commit::{CommitOptions, commit_as};
use layerfs::container;
use layerfs::layer::Compression;
use layerfs::mount::records::container_named;
use layerfs::oci::Reference;

#[derive(clap::Args)]
pub struct Args {
    /// A writable mount's mountpoint, or a container's name
    target: String,
    /// Name for the new image
    reference: Option<String>,
    /// Commit message (recorded in the image's history)
    #[arg(short, long)]
    message: Option<String>,
    /// Author (e.g. "Jane <jane@example.com>")
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, ...)
    #[arg(short, long)]
    change: Vec<String>,
    /// Compression of the new layer
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none", "estargz"])]
    compression: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let tag = a.reference.as_deref().map(Reference::parse).transpose()?;
    if tag.as_ref().is_some_and(|t| t.digest().is_some()) {
        bail!(
            "commit: {} names a digest; give NAME[:TAG]",
            a.reference.unwrap_or_default()
        );
    }
    let store = ctx.store()?;
    let name = container_named(&store, &a.target)?;
    let c = container::load(&store, &name)?;
    let compression = match a.compression.as_str() {
        "zstd" => Compression::Zstd,
        "none" => Compression::None,
        _ => Compression::Gzip,
    };
    let opts = CommitOptions {
        message: a.message,
        author: a.author,
        changes: a.change,
        compression,
        estargz: a.compression == "estargz",
        created_by: None,
    };
    let made = commit_as(&store, &c, &opts, tag.as_ref())
        .with_context(|| format!("commit {}", a.target))?;
    println!("{}", made.image.id);
    Ok(())
}
