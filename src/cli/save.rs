//! `layerfs save IMAGE... [-o FILE] [--format docker-archive|oci-archive]`

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::archive::{SaveFormat, save, save_to_path};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// What `docker save` writes: manifest.json and uncompressed layers
    DockerArchive,
    /// A tar of an OCI image layout, blobs as stored
    OciArchive,
}

#[derive(clap::Args)]
pub struct Args {
    /// Images to save, by name or ID
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
    /// File to write, or - for standard output (the default when it is not a terminal)
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Archive format
    #[arg(long, value_enum, default_value = "docker-archive")]
    format: Format,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let format = match a.format {
        Format::DockerArchive => SaveFormat::DockerArchive,
        Format::OciArchive => SaveFormat::OciArchive,
    };
    let store = ctx.store()?;
    match a.output {
        Some(path) if path.as_os_str() != "-" => {
            save_to_path(&store, &a.images, format, &path)
                .with_context(|| format!("save to {}", path.display()))?;
        }
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("save: refusing to write an archive to a terminal; use -o FILE or a pipe");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            save(&store, &a.images, format, &mut out).context("save to standard output")?;
            out.flush().context("save to standard output")?;
        }
    }
    Ok(())
}
