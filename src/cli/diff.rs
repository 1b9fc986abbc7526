//! `layerfs diff CONTAINER`: its changes as `docker diff` prints them, one
//! `A|C|D /path` line each, read from its upper directory (no mount).

use super::Ctx;
use anyhow::{Context, Result};
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// A container's name or ID
    container: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let c = layerfs::container::load(&store, &a.container)?;
    let changes =
        layerfs::container::diff(&store, &c).with_context(|| format!("diff {}", a.container))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (kind, path) in changes {
        // Paths are bytes; a name that is not UTF-8 goes out as it is.
        out.write_all(&[kind.letter() as u8, b' '])?;
        out.write_all(&path)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
