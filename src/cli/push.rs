//! `layerfs push [-q] [--estargz] [--no-index] IMAGE [REF]`: pushes a stored
//! image to REF (or to the registry its own name gives), with its layers'
//! indexes as an artifact of it; `--estargz` pushes an eStargz copy of it.

use super::Ctx;
use super::transfer::{Display, TransportArgs, Verb};
use anyhow::{Context, Result};
use layerfs::image::to_estargz;
use layerfs::oci::Reference;
use layerfs::registry::{PushOptions, push};

#[derive(clap::Args)]
pub struct Args {
    /// Image in the store: name, name@digest or ID
    image: String,
    /// Where to push it: [REGISTRY/]NAME[:TAG]; IMAGE's own name by default
    reference: Option<String>,
    /// Print only the digest line
    #[arg(short, long)]
    quiet: bool,
    /// Push the layers as eStargz (gzip that lazy readers open from the end)
    #[arg(long)]
    estargz: bool,
    /// Do not publish the layers' indexes (an artifact of the image)
    #[arg(long)]
    no_index: bool,
    #[command(flatten)]
    transport: TransportArgs,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let target_text = a.reference.as_deref().unwrap_or(&a.image);
    let target = Reference::parse(target_text)?;
    let store = ctx.store()?;
    let mut opts = PushOptions::new(a.transport.client_options());
    opts.indexes = !a.no_index;
    let image = if a.estargz {
        let converted = to_estargz(&store, &a.image)
            .with_context(|| format!("push {target_text}: eStargz of {}", a.image))?;
        converted.manifest.digest.hex()
    } else {
        a.image.clone()
    };
    let display = Display::new(Verb::Push, a.quiet);
    let result = push(&store, &image, &target, &opts, &display);
    display.finish();
    let report = result.with_context(|| format!("push {target_text}"))?;
    println!(
        "{}: digest: {} size: {}",
        report.tag, report.digest, report.size
    );
    Ok(())
}
