//! `layerfs load [-i PATH] [--name REPO] [--platform OS/ARCH[/VARIANT]] [-q]`

use super::Ctx;
use anyhow::{Result, bail};
use layerfs::archive::{LoadOptions, load, load_reader};
use layerfs::oci::{Platform, Reference};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Archive to read: a docker-archive or oci-archive tar (plain, gzip or
    /// zstd), an OCI layout directory, or - for standard input
    #[arg(short, long, value_name = "PATH", default_value = "-")]
    input: PathBuf,
    /// Repository for images an OCI layout names only by a tag: TAG is loaded as REPO:TAG
    #[arg(long, value_name = "REPO", value_parser = parse_repository)]
    name: Option<Reference>,
    /// Platform to load from multi-platform images (default: this machine's)
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_parser = parse_platform)]
    platform: Option<Platform>,
    /// Print only the loaded images, no notes
    #[arg(short, long)]
    quiet: bool,
}

fn parse_repository(s: &str) -> Result<Reference, String> {
    let r = Reference::parse(s).map_err(|e| e.to_string())?;
    if r.tag().is_some() || r.digest().is_some() {
        return Err("give a repository without tag or digest, e.g. example.com/app".into());
    }
    Ok(r)
}

fn parse_platform(s: &str) -> Result<Platform, String> {
    Platform::parse(s).ok_or_else(|| "expected OS/ARCH[/VARIANT], e.g. linux/arm64".into())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let opts = LoadOptions {
        repository: a.name,
        platform: a.platform,
    };
    let store = ctx.store()?;
    let report = if a.input.as_os_str() == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            bail!(
                "load: standard input is a terminal; give an archive with -i PATH or pipe one in"
            );
        }
        load_reader(&store, stdin.lock(), "stdin", &opts)?
    } else {
        load(&store, &a.input, &opts)?
    };
    if !a.quiet {
        for note in &report.notes {
            eprintln!("layerfs: note: {note}");
        }
    }
    for image in &report.images {
        if image.names.is_empty() {
            println!("Loaded image ID: {}", image.id);
        }
        for name in &image.names {
            println!("Loaded image: {name}");
        }
    }
    Ok(())
}
