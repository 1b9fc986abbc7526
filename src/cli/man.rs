//! `layerfs man-pages DIR` (hidden, run by `scripts/install.sh`): writes
//! `layerfs.1` and one page per command (`layerfs-mount.1`, ...) from the
//! clap definition, so `man layerfs-mount` says what `--help` says.

use anyhow::{Context, Result};
use clap::CommandFactory;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Where to write the pages (created if missing)
    dir: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &a.dir)
        .with_context(|| format!("writing man pages into {}", a.dir.display()))
}
