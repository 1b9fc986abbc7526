//! `layerfs export IMAGE|CONTAINER -o FILE|-`: the whole tree as one tar.

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::export::{Source, export, export_to_path};
use std::io::{IsTerminal, Write};

#[derive(clap::Args)]
pub struct Args {
    /// An image, or a container's name
    what: String,
    /// Where to write the tar (- for standard output)
    #[arg(short, long)]
    output: String,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    let container = layerfs::container::load(&store, &a.what).ok();
    let src = match &container {
        Some(c) => Source::Container(c),
        None => Source::Image(&a.what),
    };
    if a.output == "-" {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            bail!("export: refusing to write a tar to a terminal; use -o FILE or a pipe");
        }
        let mut out = export(&store, src, std::io::BufWriter::new(stdout.lock()))
            .with_context(|| format!("export {}", a.what))?;
        out.flush()?;
        return Ok(());
    }
    export_to_path(&store, src, std::path::Path::new(&a.output))
        .with_context(|| format!("export {} to {}", a.what, a.output))
}
