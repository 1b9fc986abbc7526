//! `layerfs export IMAGE|CONTAINER -o FILE|-`: the whole tree as one tar.

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::export::{Source, export};
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
    // Written beside the target and renamed: a failed export leaves no file.
    let target = std::path::Path::new(&a.output);
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".layerfs-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let file = tmp.reopen()?;
    let out = export(
        &store,
        src,
        std::io::BufWriter::with_capacity(1 << 20, file),
    )
    .with_context(|| format!("export {}", a.what))?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("writing {}", a.output))?;
    file.sync_all()
        .with_context(|| format!("writing {}", a.output))?;
    tmp.persist(target)
        .with_context(|| format!("writing {}", a.output))?;
    Ok(())
}
