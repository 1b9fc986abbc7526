//! `layerfs export IMAGE|CONTAINER [-o FILE|-]`: the whole tree as one tar,
//! to standard output when `-o` is not given and it is not a terminal.

use super::Ctx;
use anyhow::{Context, Result, bail};
use layerfs::export::{Source, export, export_to_path};
use std::io::{IsTerminal, Write};

#[derive(clap::Args)]
pub struct Args {
    /// An image, or a container's name or ID
    what: String,
    /// Where to write the tar (- for standard output, the default when it is not a terminal)
    #[arg(short, long, value_name = "FILE")]
    output: Option<String>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let store = ctx.store()?;
    // A name or ID no container has is an image; any other failure (an
    // ambiguous ID prefix, a damaged record) is said as it is.
    let container = match layerfs::container::load(&store, &a.what) {
        Ok(c) => Some(c),
        Err(layerfs::container::ContainerError::NotFound(_)) => None,
        Err(e) => return Err(e).with_context(|| format!("export {}", a.what)),
    };
    let src = match &container {
        Some(c) => Source::Container(c),
        None => Source::Image(&a.what),
    };
    match a.output.as_deref() {
        Some(path) if path != "-" => export_to_path(&store, src, std::path::Path::new(path))
            .with_context(|| format!("export {} to {path}", a.what)),
        _ => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("export: refusing to write a tar to a terminal; use -o FILE or a pipe");
            }
            let mut out = export(
                &store,
                src,
                std::io::BufWriter::with_capacity(1 << 20, stdout.lock()),
            )
            .with_context(|| format!("export {}", a.what))?;
            out.flush().with_context(|| format!("export {}", a.what))?;
            Ok(())
        }
    }
}
