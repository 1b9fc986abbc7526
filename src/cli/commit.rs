//! `layerfs commit MOUNTPOINT|CONTAINER [NAME[:TAG]] [-m MESSAGE] [--author A]
//! [--change INSTR] [--compression gzip|zstd|none]`

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::commit::{CommitOptions, commit_as};
use layerfs::container;
use layerfs::layer::Compression;
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
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"])]
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
    let name = container_of(&store, &a.target)?;
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
        created_by: None,
    };
    let made = commit_as(&store, &c, &opts, tag.as_ref())
        .with_context(|| format!("commit {}", a.target))?;
    println!("{}", made.image.id);
    Ok(())
}

/// The container a command names: a writable mount's mountpoint or its name.
pub fn container_of(store: &layerfs::store::Store, target: &str) -> Result<String> {
    let path = std::path::Path::new(target);
    if path.is_dir() || target.contains('/') {
        let canon = path
            .canonicalize()
            .with_context(|| format!("{target} is not a mountpoint or a container"))?;
        return match layerfs::mount::records::find(store, &canon)? {
            Some(r) => r
                .container
                .with_context(|| format!("{target} is a read-only mount, not a container")),
            None => bail!("{target} is not a layerfs mount"),
        };
    }
    Ok(target.to_string())
}
