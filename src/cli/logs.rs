//! `layerfs logs CONTAINER`: what a detached container wrote.

use super::Ctx;
use anyhow::{Context, Result};
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    container: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let c = layerfs::container::load(&store, &a.container)?;
    let p = layerfs::run::state::log_path(&c);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("logs {}: {}", a.container, p.display())),
    };
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}
